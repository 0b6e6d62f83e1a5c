import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from layercard.training import (
    LoraSettings,
    LoraSettingsError,
    dev_loss,
    lora_adapter,
    lora_config,
    train_lora,
)


def tiny_llama(n_layers: int = 3) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        initializer_range=0.2,  # large enough that middle layers can move the logits
    )
    return LlamaForCausalLM(config).eval().requires_grad_(False)


def tiny_gpt2(n_layers: int = 3) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=64, n_embd=32, n_layer=n_layers, n_head=4, n_positions=64,
        initializer_range=0.2, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return GPT2LMHeadModel(config).eval().requires_grad_(False)


def random_batches(n: int, *, batch_size: int = 4, length: int = 12, seed: int = 0) -> list[dict]:
    """Batches like layercard.data.batches: prompt of 4 tokens, right padding on some rows."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(1, 64, (batch_size, length), generator=g)
        mask = torch.ones_like(ids)
        lengths = torch.randint(6, length + 1, (batch_size,), generator=g)
        for row, used in enumerate(lengths.tolist()):
            mask[row, used:] = 0
            ids[row, used:] = 0
        labels = ids.masked_fill(mask == 0, -100)
        labels[:, :4] = -100
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


def lora_module_names(model) -> set[str]:
    return {name for name, module in model.named_modules() if isinstance(module, LoraLayer)}


@pytest.mark.parametrize(
    ("build", "prefix", "pattern", "modules"),
    [
        (tiny_llama, "model.layers", "layers", ["self_attn.q_proj", "mlp.down_proj"]),
        (tiny_gpt2, "transformer.h", "h", ["attn.c_attn", "mlp.c_proj"]),
    ],
)
@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")  # peft vs transformers 5
def test_lora_config_adapts_exactly_requested_sites(tmp_path, build, prefix, pattern, modules):
    model = build(4)
    settings = LoraSettings(rank=4, target_modules=tuple(modules))
    config = lora_config(model, [3, 1], settings)
    assert config.layers_pattern == pattern
    assert config.layers_to_transform == [1, 3]
    assert config.fan_in_fan_out == (build is tiny_gpt2)
    config.save_pretrained(tmp_path)  # round trip: loads in peft as is
    peft_model = get_peft_model(model, LoraConfig.from_pretrained(tmp_path))
    expected = {f"base_model.model.{prefix}.{i}.{m}" for i in (1, 3) for m in modules}
    assert lora_module_names(peft_model) == expected
    peft_model.unload()


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2])
def test_lora_config_default_targets_every_linear_module(build):
    model = build(2)
    config = lora_config(model, [0], LoraSettings())
    with lora_adapter(model, config) as peft_model:
        wrapped = {n.split(".0.", 1)[1] for n in lora_module_names(peft_model)}
    llama = {f"self_attn.{p}_proj" for p in "qkvo"} | {
        f"mlp.{p}_proj" for p in ("gate", "up", "down")
    }
    gpt2 = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}
    expected = gpt2 if build is tiny_gpt2 else llama
    assert wrapped == expected


def test_lora_config_rejects_unknown_module_and_layer():
    model = tiny_llama(2)
    with pytest.raises(LoraSettingsError, match="q_prj"):
        lora_config(model, [0], LoraSettings(target_modules=("self_attn.q_prj",)))
    with pytest.raises(LoraSettingsError, match=r"\[0, 1\]"):
        lora_config(model, [2], LoraSettings())


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2])
def test_train_lora_memorises_and_leaves_base_model_unchanged(build):
    model = build(3)
    batches = random_batches(1, seed=1)
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        logits_before = model(**random_batches(1, seed=2)[0]).logits
    rng_before = torch.random.get_rng_state()
    config = lora_config(model, [1, 2], LoraSettings(rank=4))
    result = train_lora(model, batches, config, steps=40, lr=1e-2, seed=0)

    assert result.losses[-1] < 0.5 * result.losses[0]
    assert result.trainable_params == sum(v.numel() for v in result.adapter_state.values())
    # base model: same weights, outputs, flags and mode; no adapter left; global RNG untouched
    assert lora_module_names(model) == set()
    assert not hasattr(model, "peft_config")
    assert model.state_dict().keys() == state_before.keys()
    assert all(torch.equal(v, state_before[k]) for k, v in model.state_dict().items())
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.training
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    with torch.no_grad():
        assert torch.equal(model(**random_batches(1, seed=2)[0]).logits, logits_before)
    # the returned adapter reproduces the trained model; removing it restores the base
    with lora_adapter(model, config, result.adapter_state) as adapted:
        assert dev_loss(adapted, batches) < 0.5 * result.losses[0]
    assert dev_loss(model, batches) == pytest.approx(result.losses[0], rel=0.1)
    other_layer = lora_config(model, [0], LoraSettings(rank=4))
    with (
        pytest.raises(ValueError, match="does not fit"),
        lora_adapter(model, other_layer, result.adapter_state),
    ):
        pass
    assert lora_module_names(model) == set()


def test_train_lora_first_loss_is_transformers_loss_and_runs_are_deterministic():
    model = tiny_llama(2)
    batches = random_batches(3)
    config = lora_config(model, [0], LoraSettings())
    first = train_lora(model, batches, config, steps=3, lr=1e-3, seed=5)
    second = train_lora(model, batches, config, steps=3, lr=1e-3, seed=5)
    other = train_lora(model, batches, config, steps=3, lr=1e-3, seed=6)
    with torch.no_grad():
        base = model(**batches[0]).loss.item()
    assert first.losses[0] == pytest.approx(base, rel=1e-6)  # LoRA B starts at zero
    assert first.losses == second.losses
    assert all(torch.equal(v, second.adapter_state[k]) for k, v in first.adapter_state.items())
    assert not torch.equal(
        first.adapter_state[next(iter(first.adapter_state))],
        other.adapter_state[next(iter(other.adapter_state))],
    )


def test_dev_loss_is_mean_over_all_completion_tokens():
    model = tiny_llama(2)
    batches = random_batches(3, batch_size=3)
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            logits = model(**batch).logits[:, :-1]
            targets = batch["labels"][:, 1:]
            keep = targets != -100
            total += F.cross_entropy(logits[keep], targets[keep], reduction="sum").item()
            count += int(keep.sum())
    assert dev_loss(model, batches) == pytest.approx(total / count, rel=1e-5)
    batch_means = sum(model(**b).loss.item() for b in batches) / len(batches)
    assert dev_loss(model, batches) != pytest.approx(batch_means, rel=1e-7)
