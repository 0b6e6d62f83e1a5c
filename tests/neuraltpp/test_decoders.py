"""Intensity decoders: ``decay`` contains the exponential Hawkes process exactly (its likelihood
and predictions from the true excitation state are the true process's), stays positive, has an
exact compensator and works with every encoder; the default ``thp`` decoder is unchanged."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from neuraltpp import hawkes
from neuraltpp.cli import main
from neuraltpp.data import Batch, write_easytpp_json
from neuraltpp.data.batching import pad_sequences
from neuraltpp.data.containers import EventDataset
from neuraltpp.evaluation import evaluate
from neuraltpp.likelihood import FIRST_EVENT, LikelihoodOptions, log_likelihood
from neuraltpp.metrics import load_metrics
from neuraltpp.models import HEADS, MODEL_NAMES, TPPModel, build_model
from neuraltpp.models.config import DECODERS, ModelConfig
from neuraltpp.models.heads import DecayHeads, THPHeads
from neuraltpp.prediction import predict_next
from neuraltpp.simulate import HawkesParams, simulate_dataset

THP_HEAD_PARAMETERS = {  # the THP heads' parameters, as in every checkpoint written so far
    "intensity_proj.weight",
    "intensity_proj.bias",
    "alpha",
    "log_beta",
    "type_proj.weight",
    "type_proj.bias",
    "gap_proj.weight",
    "gap_proj.bias",
}
PARAMS = HawkesParams(
    mu=[0.3, 0.1, 0.5],
    alpha=[[0.4, 0.0, 0.3], [0.2, 0.5, 0.0], [0.0, 0.3, 0.2]],
    beta=4.0,  # fast decay: gaps of many 1/beta, where a fixed quadrature rule is not exact
)


def _softplus_inverse(x: np.ndarray | float) -> torch.Tensor:
    return torch.as_tensor(np.log(np.expm1(x)), dtype=torch.float64)


def _hawkes_decoder(params: HawkesParams, name: str = "mhp", d_model: int = 8) -> TPPModel:
    """A float64 model whose decay decoder maps the excitation state (first K channels of h) to
    the exact Hawkes intensity: mu constant, e = alpha @ S, one rate beta; h_start = 0."""
    k = params.num_types
    model = build_model(name, k, {"decoder": "decay", "d_model": d_model, "n_heads": 2}).double()
    heads = model.heads
    with torch.no_grad():
        for proj in (heads.level_proj, heads.start_proj, heads.rate_proj):
            proj.weight.zero_()
        heads.level_proj.bias.copy_(_softplus_inverse(params.mu))
        heads.rate_proj.bias.copy_(_softplus_inverse(np.full(k, params.beta)))
        heads.start_proj.weight[:, :k] = torch.as_tensor(params.alpha)
        heads.start_proj.bias.zero_()
        model.h_start.zero_()
    return model.eval()


def _excitation_states(params: HawkesParams, batch: Batch, d_model: int) -> torch.Tensor:
    """h [B, L, d]: S_l(t_j) = sum_{i <= j, k_i = l} beta exp(-beta (t_j - t_i)) after event j,
    by a plain loop over the events (the true process's state, events up to j included)."""
    times, types = batch.times.numpy(), batch.types.numpy()
    h = np.zeros((*times.shape, d_model))
    for b in range(times.shape[0]):
        state = np.zeros(params.num_types)
        for j in range(times.shape[1]):
            gap = times[b, j] - times[b, j - 1] if j else 0.0
            state = state * math.exp(-params.beta * gap)
            state[types[b, j]] += params.beta
            h[b, j, : params.num_types] = state
    return torch.as_tensor(h)


@pytest.fixture(scope="module")
def hawkes_data() -> EventDataset:
    return simulate_dataset(PARAMS, n_sequences=6, T=30.0, seed=5)


@pytest.mark.parametrize("first_event", FIRST_EVENT)
@pytest.mark.parametrize("include_tail", [True, False])
def test_decay_decoder_contains_the_exponential_hawkes_process(
    hawkes_data: EventDataset, first_event: str, include_tail: bool
) -> None:
    """Fed the true excitation state, with constructed parameters, the decoder's likelihood is
    the true process's (neuraltpp.hawkes; the simulator's for the full LL) to 1e-6 per
    sequence."""
    d_model = 8
    model = _hawkes_decoder(PARAMS, d_model=d_model)
    batch = pad_sequences(hawkes_data.sequences)
    assert int(batch.mask.sum()) > 300 and float(batch.times.diff(dim=1).max()) > 2.0
    h = _excitation_states(PARAMS, batch, d_model)
    options = LikelihoodOptions(first_event=first_event, include_tail=include_tail)
    with torch.no_grad():
        ll = log_likelihood(model, batch, options, h=h)
    true = hawkes.log_likelihood(PARAMS, hawkes_data, options)
    assert ll.integration == "closed-form"
    np.testing.assert_allclose(ll.per_sequence.numpy(), true.total, rtol=0, atol=1e-6)
    assert ll.n_events == int(true.n_events.sum())
    if first_event == "start-state" and include_tail:
        sim = hawkes_data.metadata["true_log_likelihood"]
        simulated = [sim[s.seq_id] for s in hawkes_data.sequences]
        np.testing.assert_allclose(ll.per_sequence.numpy(), simulated, rtol=0, atol=1e-6)


def test_decay_predictions_from_the_true_state_match_hawkes(hawkes_data: EventDataset) -> None:
    """The intensity-based prediction (expected gap, P(type)) works for the decay decoder: from
    the true state it gives the classical Hawkes prediction."""
    d_model = 8
    model = _hawkes_decoder(PARAMS, d_model=d_model)
    batch = pad_sequences(hawkes_data.sequences)
    pred = predict_next(model, batch, h=_excitation_states(PARAMS, batch, d_model))
    true = hawkes.predict(PARAMS, hawkes_data)
    np.testing.assert_allclose(pred.expected_gap[pred.mask].numpy(), true.expected_gap, rtol=1e-5)
    np.testing.assert_allclose(pred.type_probs[pred.mask].numpy(), true.type_probs, atol=1e-5)


def test_decay_intensity_is_positive_and_its_compensator_exact() -> None:
    """For random (large) weights and states, lambda > 0 at every time including the event
    itself, it moves monotonically from c to mu, and the closed-form compensator equals
    numerical integration."""
    torch.manual_seed(0)
    heads = DecayHeads(6, 4).double()
    with torch.no_grad():
        for p in heads.parameters():
            p.mul_(20.0)  # start levels far above and below the targets (inhibition too)
    h = torch.randn(50, 6, dtype=torch.float64)
    dt = torch.cat([torch.zeros(1), torch.logspace(-6, 3, 40)]).double().expand(50, -1)
    lam = heads.intensity(h, dt)
    assert lam.shape == (50, 41, 4) and bool((lam > 0).all()) and bool(lam.isfinite().all())
    mu, start, beta = heads.levels(h)
    assert bool((start < 1e-6 * mu).any()) and bool((start > 10 * mu).any())  # both directions
    torch.testing.assert_close(lam[:, 0], start, rtol=1e-15, atol=0)  # c at t_j itself
    fast = beta * dt[0, -1] > 50  # decayed to the target level by dt = 1e3
    torch.testing.assert_close(lam[:, -1][fast], mu[fast])
    direction = (start - mu).sign().unsqueeze(1)  # decreasing from c > mu, rising from c < mu
    assert bool((lam.diff(dim=1) * direction <= 1e-12).all())
    torch.testing.assert_close(heads.compensator(h, dt[:, 0]), torch.zeros(50, 4, dtype=h.dtype))
    x, w = np.polynomial.legendre.leggauss(16)  # composite: 64 panels of 16 nodes on [0, 0.7]
    edges = np.linspace(0.0, 0.7, 65)
    width = np.diff(edges)[:, None]
    points = torch.as_tensor((edges[:-1, None] + width * (x + 1) / 2).ravel())
    weights = torch.as_tensor((width * w / 2).ravel())
    numeric = (heads.intensity(h, points.expand(50, -1)) * weights[:, None]).sum(-2)
    exact = heads.compensator(h, torch.full((50,), 0.7, dtype=torch.float64))
    torch.testing.assert_close(exact, numeric, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_decay_decoder_with_every_encoder(
    name: str, make_model: Callable[..., TPPModel], make_batch: Callable[..., Batch]
) -> None:
    """Forward, likelihood (both modes), backward and prediction for each encoder."""
    model = make_model(name, size="tiny", decoder="decay")
    assert isinstance(model.heads, DecayHeads) and model.exact_compensator
    batch = make_batch()
    ll = log_likelihood(model, batch, LikelihoodOptions(first_event="start-state"))
    assert ll.integration == "closed-form" and math.isfinite(float(ll.total.detach()))
    (-ll.total).backward()
    assert model.heads.start_proj.weight.grad is not None
    assert model.heads.rate_proj.weight.grad is not None
    legacy = log_likelihood(model, batch, LikelihoodOptions(mode="legacy"))
    assert legacy.integration == "closed-form" and math.isfinite(float(legacy.total.detach()))
    pred = predict_next(model, batch)
    gaps = pred.expected_gap[pred.mask]
    assert bool((gaps > 0).all()) and bool(gaps.isfinite().all())
    torch.testing.assert_close(
        pred.type_probs[pred.mask].sum(-1),
        torch.ones(len(gaps), dtype=torch.float64),
        rtol=0,
        atol=1e-4,
    )


def test_evaluate_reports_the_closed_form(
    hawkes_data: EventDataset, make_model: Callable[..., TPPModel]
) -> None:
    metrics = evaluate(make_model("rothp", size="tiny", decoder="decay"), hawkes_data)
    assert metrics.likelihood.integration == "closed-form"
    thp = evaluate(make_model("rothp", size="tiny"), hawkes_data, predictions=False)
    assert thp.likelihood.integration == "gauss-legendre"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_default_decoder_is_the_unchanged_thp_heads(name: str) -> None:
    """Without ``decoder`` every model gets the THP heads with the same parameters, created in
    the same order (after the encoder), so the same seed gives the same model as before."""
    assert ModelConfig().decoder == "thp" and tuple(HEADS) == DECODERS
    torch.manual_seed(3)
    default = build_model(name, 3, {"d_model": 16, "n_heads": 2})
    torch.manual_seed(3)
    explicit = build_model(name, 3, {"d_model": 16, "n_heads": 2, "decoder": "thp"})
    assert type(default.heads) is THPHeads and not default.exact_compensator
    assert set(default.heads.state_dict()) == THP_HEAD_PARAMETERS
    for (key, a), b in zip(
        default.state_dict().items(), explicit.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), key
    torch.manual_seed(3)
    encoder_only = build_model(name, 3, {"d_model": 16, "n_heads": 2, "decoder": "decay"})
    for key, value in encoder_only.encoder.state_dict().items():  # heads come after the encoder
        assert torch.equal(value, default.encoder.state_dict()[key]), key


def test_unknown_decoder_is_refused() -> None:
    with pytest.raises(ValueError, match="decoder must be one of"):
        build_model("thp", 2, {"decoder": "nhp"})


def test_cli_trains_with_the_decay_decoder(
    hawkes_data: EventDataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev", "test"):
        write_easytpp_json(hawkes_data, data / f"{split}.jsonl")
    tiny = ["--d-model", "8", "--n-layers", "1", "--n-heads", "2", "--d-ff", "8", "--d-state", "4"]
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--model", "mhp", "--decoder", "decay", "--out", str(out)]
    assert main([*argv, "--epochs", "1", "--batch-size", "4", "--quiet", *tiny]) == 0
    assert load_metrics(out / "test_metrics.json").likelihood.integration == "closed-form"
    with pytest.raises(SystemExit):
        main(["train", "--data", str(data), "--out", str(tmp_path / "x"), "--decoder", "nhp"])
    assert "invalid choice" in capsys.readouterr().err
