"""The measuring hooks on tiny random Llama and GPT-2 models (float64, exact comparisons)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaForCausalLM
from transformers.pytorch_utils import Conv1D

from layercard.measure import collect_statistics, example_gains, measure, split_layers
from layercard.models import adaptable_sites, site_module
from layercard.sites import Site
from layercard.statistics import best_correction, site_diagnostics

VOCAB = 40
Example = tuple[list[int], list[int]]  # prompt ids, completion ids


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request: pytest.FixtureRequest, tiny_lm) -> nn.Module:
    """The tiny model in float64 (exact comparisons): 3 Llama blocks or 2 GPT-2 blocks."""
    n_layers = 3 if request.param == "llama" else 2
    return tiny_lm(request.param, n_layers, vocab=VOCAB, intermediate=48).double()


def _examples(count: int, seed: int = 1) -> list[Example]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        prompt, completion = (int(v) for v in torch.randint(2, 8, (2,), generator=gen))
        ids = torch.randint(1, VOCAB, (prompt + completion,), generator=gen).tolist()
        out.append((ids[:prompt], ids[prompt:]))
    return out


def _batch(examples: list[Example], extra_pad: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded batch; labels = -100 on prompt and padding, as in fine-tuning."""
    length = max(len(p) + len(c) for p, c in examples) + extra_pad
    ids = torch.zeros(len(examples), length, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for row, (prompt, completion) in enumerate(examples):
        seq = prompt + completion
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        labels[row, len(prompt) : len(seq)] = torch.tensor(completion)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _batches(examples: list[Example], size: int) -> list[dict[str, torch.Tensor]]:
    return [_batch(examples[i : i + size]) for i in range(0, len(examples), size)]


def _weight_grad(module: nn.Module) -> torch.Tensor:
    """Gradient of the module's weight as (d_out, d_in), whatever its storage layout."""
    assert module.weight.grad is not None
    return module.weight.grad.T if isinstance(module, Conv1D) else module.weight.grad


def test_gradient_statistics_equal_autograd_weight_gradients(model: nn.Module) -> None:
    batches = _batches(_examples(7), size=3)
    probe = collect_statistics(model, batches, dtype=torch.float64, progress=False)

    sites = adaptable_sites(model)
    n_loss = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    try:
        for site in sites:
            site_module(model, site).weight.requires_grad_(True)
        total = 0.0
        for batch in batches:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            loss = (
                F.cross_entropy(
                    logits.logits[:, :-1].reshape(-1, VOCAB),
                    batch["labels"][:, 1:].reshape(-1),
                    reduction="sum",
                )
                / n_loss
            )
            loss.backward()
            total += float(loss.detach())
        for site in sites:
            expected = _weight_grad(site_module(model, site))
            got = probe.stats[site].gx * probe.n_tokens
            assert torch.linalg.norm(got - expected) <= 1e-5 * torch.linalg.norm(expected), site
    finally:
        for site in sites:
            weight = site_module(model, site).weight
            weight.requires_grad_(False)
            weight.grad = None
    assert probe.n_loss_tokens == n_loss
    assert probe.n_tokens == sum(int(b["attention_mask"].sum()) for b in batches)
    assert probe.n_examples == 7
    assert probe.loss == pytest.approx(total, rel=1e-12)


def test_base_loss_is_the_transformers_causal_lm_loss(model: nn.Module) -> None:
    batch = _batch(_examples(4, seed=2), extra_pad=2)
    probe = collect_statistics(model, [batch], dtype=torch.float64, progress=False)
    reference = model(**batch).loss
    assert probe.loss == pytest.approx(float(reference), rel=1e-6)  # transformers: float32


def test_padding_does_not_change_statistics(model: nn.Module) -> None:
    examples = _examples(5, seed=3)
    padded = collect_statistics(
        model, [_batch(examples, extra_pad=3)], dtype=torch.float64, progress=False
    )
    unpadded = collect_statistics(model, _batches(examples, 1), dtype=torch.float64, progress=False)
    assert padded.n_tokens == unpadded.n_tokens
    assert padded.loss == pytest.approx(unpadded.loss, rel=1e-12)
    for site in padded.sites:
        a, b = padded.stats[site], unpadded.stats[site]
        assert a.n == b.n
        assert torch.allclose(a.sigma, b.sigma, rtol=1e-10, atol=1e-12)
        assert torch.allclose(a.gx, b.gx, rtol=1e-8, atol=1e-14)
        assert a.g_energy == pytest.approx(b.g_energy, rel=1e-9)


def test_coupling_is_a_correlation_built_from_exact_per_example_gains(model: nn.Module) -> None:
    examples = _examples(6, seed=4)
    batches = _batches(examples, size=4)
    result = measure(
        SimpleNamespace(model=model),
        batches,
        rank=2,
        coupling_examples=100,
        dtype=torch.float64,
        progress=False,
    )
    n_layers = len({site.layer for site in result.sites})
    assert result.coupling.shape == (n_layers, n_layers)
    assert result.n_coupling_examples == 6
    rho = result.coupling
    assert torch.equal(rho, rho.T)
    assert torch.equal(torch.diagonal(rho), torch.ones(rho.shape[0], dtype=rho.dtype))
    assert rho.abs().max() <= 1.0
    assert "6 probe examples" in result.coupling_method
    # summed over all examples, a site's gain <G(i), dW*> is n·<G, dW*> = n·resnorm²
    res2 = torch.tensor([result.stats[s].resnorm2 for s in result.sites], dtype=torch.float64)
    assert torch.allclose(result.example_gains.sum(0), result.n_probe_tokens * res2, rtol=1e-8)
    # each example's gain is its own: batching does not mix examples
    probe = collect_statistics(model, batches, dtype=torch.float64, progress=False)
    corrections = {s: best_correction(st, ridge_eps=1e-3) for s, st in probe.stats.items()}
    alone = example_gains(
        model,
        _batches(examples, 1),
        corrections,
        n_examples=3,
        scale=1.0 / probe.n_loss_tokens,
        progress=False,
    )
    assert torch.allclose(alone, result.example_gains[:3], rtol=1e-8, atol=1e-18)


def test_hooks_removed_output_unchanged_and_deterministic(model: nn.Module) -> None:
    batch = _batch(_examples(4, seed=5), extra_pad=1)
    before = model(**batch).logits
    first = measure(model, [batch], rank=2, coupling_examples=2, progress=False)
    second = measure(model, [batch], rank=2, coupling_examples=2, progress=False)
    for module in model.modules():
        assert not module._forward_hooks
        assert not module._forward_pre_hooks
        assert not module._backward_hooks
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())
    assert torch.equal(model(**batch).logits, before)
    assert first.stats == second.stats
    assert torch.equal(first.coupling, second.coupling)
    assert first.base_loss == second.base_loss
    broken = {key: value for key, value in batch.items() if key != "attention_mask"}
    with pytest.raises(KeyError):
        measure(model, [batch, broken], rank=2, progress=False)
    assert not any(module._forward_hooks for module in model.modules())


def _separate_sigma(model: nn.Module, site: Site, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ of one site's input from a plain forward hook of its own."""
    rows: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        rows.append(args[0][batch["attention_mask"].bool()])

    handle = site_module(model, site).register_forward_hook(hook)
    try:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        handle.remove()
    x = rows[0]
    return x.T @ x / x.shape[0]


def test_shared_inputs_share_sigma_equal_to_a_separate_computation(model: nn.Module) -> None:
    batch = _batch(_examples(5, seed=6), extra_pad=2)
    probe = collect_statistics(model, [batch], dtype=torch.float64, progress=False)
    groups: dict[int, list[str]] = {}
    for site in probe.sites:
        if site.layer == 0:
            groups.setdefault(id(probe.stats[site].inputs), []).append(site.module)
    found = sorted(sorted(group) for group in groups.values())
    if isinstance(model, LlamaForCausalLM):
        assert found == [
            ["mlp.down_proj"],
            ["mlp.gate_proj", "mlp.up_proj"],
            ["self_attn.k_proj", "self_attn.q_proj", "self_attn.v_proj"],
            ["self_attn.o_proj"],
        ]
    else:
        assert found == [["attn.c_attn"], ["attn.c_proj"], ["mlp.c_fc"], ["mlp.c_proj"]]
    for site in probe.sites:
        expected = _separate_sigma(model, site, batch)
        assert torch.allclose(probe.stats[site].sigma, expected, rtol=1e-12, atol=1e-14), site
    first = next(site for site in probe.sites if site.module.endswith(("k_proj", "c_attn")))
    diag = site_diagnostics(probe.stats[first], rank=2)
    assert diag.act_energy == pytest.approx(
        float(torch.trace(_separate_sigma(model, first, batch))) / first.d_in, rel=1e-12
    )


def test_split_layers_covers_every_layer_once_top_group_first() -> None:
    assert split_layers(30, 2) == [range(15, 30), range(0, 15)]
    assert split_layers(7, 3) == [range(5, 7), range(2, 5), range(0, 2)]
    assert split_layers(3, 3) == [range(2, 3), range(1, 2), range(0, 1)]
    for bad in (0, 4):
        with pytest.raises(ValueError, match="layer groups"):
            split_layers(3, bad)


def test_layer_groups_give_the_numbers_of_one_pass(model: nn.Module) -> None:
    batches = _batches(_examples(7, seed=8), size=3)  # coupling cuts the second batch
    whole = measure(
        model, batches, rank=2, coupling_examples=5, dtype=torch.float64, progress=False
    )
    n_layers = len({site.layer for site in whole.sites})
    for groups in range(2, n_layers + 1):
        split = measure(
            model,
            batches,
            rank=2,
            coupling_examples=5,
            layer_groups=groups,
            dtype=torch.float64,
            progress=False,
        )
        assert split.sites == whole.sites
        assert split.base_loss == pytest.approx(whole.base_loss, rel=1e-12)
        assert split.n_probe_tokens == whole.n_probe_tokens
        for site in whole.sites:
            a, b = vars(split.stats[site]), vars(whole.stats[site])
            assert a == pytest.approx(b, rel=1e-8, abs=1e-14), (groups, site)
        assert torch.allclose(split.example_gains, whole.example_gains, rtol=1e-8, atol=1e-16)
        assert torch.allclose(split.coupling, whole.coupling, rtol=1e-8, atol=1e-10)
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())


def test_a_lower_group_needs_the_gradients_of_the_group_above(model: nn.Module) -> None:
    batches = _batches(_examples(4, seed=9), size=2)
    top, bottom = split_layers(len({s.layer for s in adaptable_sites(model)}), 2)
    with pytest.raises(ValueError, match="seed gradients"):
        collect_statistics(model, batches, layers=bottom, progress=False)
    upper = collect_statistics(model, batches, layers=top, dtype=torch.float64, progress=False)
    assert upper.input_grads is not None and len(upper.input_grads) == len(batches)
    with pytest.raises(ValueError, match="seed gradients"):
        collect_statistics(model, batches, layers=top, seeds=upper.input_grads, progress=False)
    lower = collect_statistics(
        model, batches, layers=bottom, seeds=upper.input_grads, dtype=torch.float64, progress=False
    )
    assert lower.input_grads is None
    assert {s.layer for s in lower.sites} == set(bottom)
    assert {s.layer for s in upper.sites} == set(top)
