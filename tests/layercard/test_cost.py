import pytest
import torch
from peft.tuners.lora import LoraLayer
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from layercard.config import CostSettings, LoraSettings
from layercard.cost import lora_param_counts, measure_cost
from layercard.costmodel import (
    CostFit,
    check_layer_sets,
    depth_layer_sets,
    fit_cost,
    relative_errors,
)
from layercard.training import lora_adapter, lora_config

FAST = CostSettings(depths=4, warmup_steps=1, timed_steps=1, serving_tokens=2)


def tiny_llama(n_layers: int = 4) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval().requires_grad_(False)


def tiny_gpt2(n_layers: int = 4) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=64, n_embd=32, n_layer=n_layers, n_head=4, n_positions=64,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return GPT2LMHeadModel(config).eval().requires_grad_(False)


def random_batches(n: int = 2) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ids = torch.randint(1, 64, (4, 12), generator=g)
        labels = ids.clone()
        labels[:, :4] = -100
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2])
@pytest.mark.parametrize("targets", ["all-linear", "subset"])
def test_param_counts_match_peft(build, targets):
    model = build(3)
    subset = ("self_attn.v_proj", "mlp.up_proj") if build is tiny_llama else ("attn.c_attn",)
    settings = LoraSettings(rank=3, target_modules=subset if targets == "subset" else targets)
    counts = lora_param_counts(model, settings)
    assert sorted(counts) == [0, 1, 2]
    for layers in ([0], [2], [0, 1, 2]):
        with lora_adapter(model, lora_config(model, layers, settings)) as peft_model:
            trainable, _ = peft_model.get_nb_trainable_parameters()
        assert trainable == sum(counts[i] for i in layers)
    d = 32
    expected = {
        (tiny_llama, "all-linear"): 3 * (2 * (d + d) + 2 * (d + 16) + 3 * (d + 64)),
        (tiny_llama, "subset"): 3 * ((d + 16) + (d + 64)),
        (tiny_gpt2, "all-linear"): 3 * ((d + 3 * d) + (d + d) + (d + 4 * d) + (4 * d + d)),
        (tiny_gpt2, "subset"): 3 * (d + 3 * d),
    }
    assert counts[1] == expected[build, targets]


def test_fit_cost_reproduces_synthetic_linear_cost():
    n_layers = 30
    truth = CostFit(intercept=0.2, per_depth=0.03, per_adapter=0.01)
    fit_sets = [*depth_layer_sets(n_layers, 5), tuple(range(n_layers))]
    fitted = fit_cost(fit_sets, [truth.predict(s, n_layers) for s in fit_sets], n_layers)
    assert fitted.intercept == pytest.approx(0.2, abs=1e-12)
    assert fitted.per_depth == pytest.approx(0.03, abs=1e-12)
    assert fitted.per_adapter == pytest.approx(0.01, abs=1e-12)
    check = check_layer_sets(n_layers)
    errors = relative_errors(fitted, check, [truth.predict(s, n_layers) for s in check], n_layers)
    assert errors == pytest.approx([0.0] * len(check), abs=1e-12)
    # by hand: lowest layer 10 of 30 -> depth 20; 3 adapters
    assert truth.predict([12, 10, 20], n_layers) == pytest.approx(0.2 + 0.03 * 20 + 0.01 * 3)
    # top layer alone: predicted 0.2 + 0.03 + 0.01 = 0.24 against a measured 0.25
    assert relative_errors(truth, [(29,)], [0.25], n_layers) == pytest.approx([-0.04])


def test_layer_sets_spread_over_depth():
    assert depth_layer_sets(30, 5) == [(0,), (7,), (14,), (22,), (29,)]
    assert depth_layer_sets(3, 5) == [(0,), (1,), (2,)]
    assert check_layer_sets(30) == [(7, 14, 21), tuple(range(15, 30)), (0, 29)]
    assert check_layer_sets(4) == [(1, 2, 3), (2, 3), (0, 3)]
    assert check_layer_sets(2) == []


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2])
def test_measure_cost_memory_is_deterministic_linear_and_grows_with_depth(build):
    model = build(4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    cost = measure_cost(model, random_batches(), LoraSettings(rank=4), cost_settings=FAST)

    assert cost.fit_sets == [(0,), (1,), (2,), (3,), (0, 1, 2, 3)]
    single = cost.memory.fit_bytes[:4]
    assert single == sorted(single, reverse=True) and len(set(single)) == 4
    assert cost.memory.method == "saved-tensors"
    assert cost.memory.all_layers_bytes == max(cost.memory.fit_bytes)
    assert cost.memory.check_errors == pytest.approx([0.0] * 3, abs=1e-9)
    assert cost.predict(range(4))[1] == cost.memory.all_layers_bytes
    assert cost.params([0, 1, 1]) == 2 * cost.params_per_layer[0]
    timing = cost.timing
    assert len(timing.fit_seconds) == 5 and len(timing.check_seconds) == 3
    assert timing.serving_layers == [0, 2, 4] and len(timing.serving_seconds_per_token) == 3
    assert all(s > 0 for s in timing.fit_seconds + timing.check_seconds)
    # base model untouched
    assert not any(isinstance(m, LoraLayer) for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    if build is tiny_llama:
        again = measure_cost(model, random_batches(), LoraSettings(rank=4), cost_settings=FAST)
        assert again.memory == cost.memory
        assert again.params_per_layer == cost.params_per_layer
