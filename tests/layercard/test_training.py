import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer

from layercard.config import LoraSettings
from layercard.training import (
    LoraSettingsError,
    dev_loss,
    lora_adapter,
    lora_config,
    train_lora,
)


def lora_module_names(model) -> set[str]:
    return {name for name, module in model.named_modules() if isinstance(module, LoraLayer)}


@pytest.mark.parametrize(
    ("arch", "prefix", "pattern", "modules"),
    [
        ("llama", "model.layers", "layers", ["self_attn.q_proj", "mlp.down_proj"]),
        ("gpt2", "transformer.h", "h", ["attn.c_attn", "mlp.c_proj"]),
    ],
)
@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")  # peft vs transformers 5
def test_lora_config_adapts_exactly_requested_sites(
    tmp_path, tiny_lm, arch, prefix, pattern, modules
):
    model = tiny_lm(arch, 4, init_range=0.2)
    settings = LoraSettings(rank=4, target_modules=tuple(modules))
    config = lora_config(model, [3, 1], settings)
    assert config.layers_pattern == pattern
    assert config.layers_to_transform == [1, 3]
    assert config.fan_in_fan_out == (arch == "gpt2")
    config.save_pretrained(tmp_path)  # round trip: loads in peft as is
    peft_model = get_peft_model(model, LoraConfig.from_pretrained(tmp_path))
    expected = {f"base_model.model.{prefix}.{i}.{m}" for i in (1, 3) for m in modules}
    assert lora_module_names(peft_model) == expected
    peft_model.unload()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_lora_config_default_targets_every_linear_module(tiny_lm, arch):
    model = tiny_lm(arch, 2, init_range=0.2)
    config = lora_config(model, [0], LoraSettings())
    with lora_adapter(model, config) as peft_model:
        wrapped = {n.split(".0.", 1)[1] for n in lora_module_names(peft_model)}
    llama = {f"self_attn.{p}_proj" for p in "qkvo"} | {
        f"mlp.{p}_proj" for p in ("gate", "up", "down")
    }
    gpt2 = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}
    expected = gpt2 if arch == "gpt2" else llama
    assert wrapped == expected


def test_lora_config_rejects_unknown_module_and_layer(tiny_lm):
    model = tiny_lm("llama", 2, init_range=0.2)
    with pytest.raises(LoraSettingsError, match="q_prj"):
        lora_config(model, [0], LoraSettings(target_modules=("self_attn.q_prj",)))
    with pytest.raises(LoraSettingsError, match=r"\[0, 1\]"):
        lora_config(model, [2], LoraSettings())


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_train_lora_memorises_and_leaves_base_model_unchanged(tiny_lm, random_batches, arch):
    model = tiny_lm(arch, 3, init_range=0.2)
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


def test_train_lora_first_loss_is_transformers_loss_and_runs_are_deterministic(
    tiny_lm, random_batches
):
    model = tiny_lm("llama", 2, init_range=0.2)
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


def test_dev_loss_is_mean_over_all_completion_tokens(tiny_lm, random_batches):
    model = tiny_lm("llama", 2, init_range=0.2)
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
