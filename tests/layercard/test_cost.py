import itertools
import time

import pytest
import torch
from peft.tuners.lora import LoraLayer

from layercard.config import CostSettings, LoraSettings
from layercard.cost import lora_param_counts, measure_cost, step_clock
from layercard.costmodel import (
    CostFit,
    check_layer_sets,
    depth_layer_sets,
    fit_cost,
    relative_errors,
)
from layercard.training import lora_adapter, lora_config

FAST = CostSettings(depths=4, warmup_steps=1, timed_steps=1, serving_tokens=2)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("targets", ["all-linear", "subset"])
def test_param_counts_match_peft(tiny_lm, arch, targets):
    model = tiny_lm(arch, 3)
    subset = ("self_attn.v_proj", "mlp.up_proj") if arch == "llama" else ("attn.c_attn",)
    settings = LoraSettings(rank=3, target_modules=subset if targets == "subset" else targets)
    counts = lora_param_counts(model, settings)
    assert sorted(counts) == [0, 1, 2]
    for layers in ([0], [2], [0, 1, 2]):
        with lora_adapter(model, lora_config(model, layers, settings)) as peft_model:
            trainable, _ = peft_model.get_nb_trainable_parameters()
        assert trainable == sum(counts[i] for i in layers)
    d = 32
    expected = {
        ("llama", "all-linear"): 3 * (2 * (d + d) + 2 * (d + 16) + 3 * (d + 64)),
        ("llama", "subset"): 3 * ((d + 16) + (d + 64)),
        ("gpt2", "all-linear"): 3 * ((d + 3 * d) + (d + d) + (d + 4 * d) + (4 * d + d)),
        ("gpt2", "subset"): 3 * (d + 3 * d),
    }
    assert counts[1] == expected[arch, targets]


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


@pytest.mark.parametrize("n_layers", [1, 2, 3, 4, 7, 12, 30, 36])
@pytest.mark.parametrize("depths", [1, 2, 5, 8])
def test_depth_sets_are_single_layers_spread_evenly_from_bottom_to_top(n_layers, depths):
    sets = depth_layer_sets(n_layers, depths)
    assert all(len(s) == 1 for s in sets)
    layers = [layer for (layer,) in sets]
    assert layers == sorted(set(layers))  # distinct, in order
    assert len(layers) == min(depths, n_layers)
    assert layers[0] == 0
    if len(layers) > 1:
        assert layers[-1] == n_layers - 1
        gaps = [b - a for a, b in itertools.pairwise(layers)]
        assert max(gaps) - min(gaps) <= 1  # as even as integer layers allow


@pytest.mark.parametrize("n_layers", [2, 3, 4, 7, 12, 30, 36])
def test_check_sets_are_distinct_multi_layer_sets_the_fit_has_not_seen(n_layers):
    sets = check_layer_sets(n_layers)
    fit_sets = [*depth_layer_sets(n_layers, 5), tuple(range(n_layers))]
    assert len(set(sets)) == len(sets)
    for s in sets:
        assert 1 < len(s) < n_layers and list(s) == sorted(set(s))
        assert s[0] >= 0 and s[-1] < n_layers
        assert s not in fit_sets
    if n_layers >= 3:
        assert (0, n_layers - 1) in sets  # bottom and top together: depth and count disagree
        # the sets vary the lowest layer, so they check the depth term of the fit
        assert len({s[0] for s in sets}) >= 2


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_measure_cost_memory_is_deterministic_linear_and_grows_with_depth(
    tiny_lm, random_batches, arch
):
    model = tiny_lm(arch, 4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    cost = measure_cost(model, random_batches(2), LoraSettings(rank=4), cost_settings=FAST)

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
    if arch == "llama":
        again = measure_cost(model, random_batches(2), LoraSettings(rank=4), cost_settings=FAST)
        assert again.memory == cost.memory
        assert again.params_per_layer == cost.params_per_layer


def test_the_cpu_step_clock_counts_work_not_waiting() -> None:
    # Waiting (another process holding the core) advances the wall clock, not the CPU clock.
    clock = step_clock(torch.device("cpu"))
    start = clock()
    time.sleep(0.3)
    assert clock() - start < 0.05
    assert step_clock(torch.device("cuda")) is time.perf_counter
