"""Next-event prediction against closed forms and a scipy reference."""

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy import integrate, special

from neuraltpp.data import Batch, EventDataset, EventSequence
from neuraltpp.evaluation import evaluate
from neuraltpp.models import TPPModel
from neuraltpp.prediction import predict_next


def _batch(k: int = 3) -> Batch:
    g = torch.Generator().manual_seed(0)
    times = torch.cumsum(torch.rand(2, 9, generator=g, dtype=torch.float64), dim=1)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    times[1, 6:] = times[1, 5]
    types = torch.randint(0, k, (2, 9), generator=g) * mask
    return Batch(times, types, mask, times[:, 0], times.max(1).values)


@pytest.mark.parametrize("c", [1e-3, 0.7, 1e3])  # bound grows, fits, and shrinks
def test_constant_intensity_mean_gap(
    c: float, make_model: Callable[..., TPPModel], set_heads: Callable[..., None]
) -> None:
    """lambda_k = c: the gap is exponential with rate K c, the type uniform."""
    k = 3
    model = make_model(k=k, n_layers=1, double=True, frozen=True)
    set_heads(model, [0.0] * k, [c + math.log(-math.expm1(-c))] * k)
    batch = _batch(k)
    pred = predict_next(model, batch)
    valid = batch.mask[:, 1:]
    assert torch.equal(pred.mask, valid) and pred.expected_gap.shape == valid.shape
    gaps = pred.expected_gap[valid]
    torch.testing.assert_close(gaps, torch.full_like(gaps, 1 / (k * c)), rtol=1e-6, atol=0)
    torch.testing.assert_close(pred.expected_time[valid], batch.times[:, :-1][valid] + gaps)
    probs = pred.type_probs[valid]
    torch.testing.assert_close(probs, torch.full_like(probs, 1 / k), rtol=1e-6, atol=0)
    assert (pred.expected_gap[~valid] == 0).all()


def test_time_varying_intensity_against_quad(
    make_model: Callable[..., TPPModel], set_heads: Callable[..., None]
) -> None:
    """Increasing and decreasing softplus intensities: E[gap] and P(k) against scipy quad with
    the closed-form compensator; the type at the expected time is the argmax of lambda there."""
    alpha, bias = [0.8, -0.5], [-1.0, 0.6]

    def lam(s: float) -> np.ndarray:
        return np.logaddexp(0, np.multiply(alpha, s) + bias)

    def big_lambda(s: float) -> float:  # sum_k int_0^s softplus(a u + b) du (dilogarithm)
        return sum(
            (special.spence(1 + math.exp(b)) - special.spence(1 + math.exp(a * s + b))) / a
            for a, b in zip(alpha, bias, strict=True)
        )

    def survival(s: float) -> float:
        return math.exp(-big_lambda(s))

    mean = integrate.quad(survival, 0, 50, epsabs=1e-12, epsrel=1e-12)[0]  # S(50) < 1e-300
    probs = [
        integrate.quad(lambda s, i=i: lam(s)[i] * survival(s), 0, 50, epsrel=1e-12)[0]
        for i in range(2)
    ]
    model = make_model(k=2, n_layers=1, double=True, frozen=True)
    set_heads(model, alpha, bias)
    pred = predict_next(model, _batch(2))
    valid = pred.mask
    n = int(valid.sum())
    want_gap = torch.full((n,), mean, dtype=torch.float64)
    torch.testing.assert_close(pred.expected_gap[valid], want_gap, rtol=1e-6, atol=0)
    want_probs = torch.tensor(probs, dtype=torch.float64).expand(n, 2)
    torch.testing.assert_close(pred.type_probs[valid], want_probs, rtol=1e-6, atol=0)
    assert (pred.type_at_time[valid] == int(np.argmax(lam(mean)))).all()
    assert (pred.type_integrated[valid] == int(np.argmax(probs))).all()


@pytest.mark.parametrize("name", ["thp", "mhp"])
def test_head_predictions_and_alignment(name: str, make_model: Callable[..., TPPModel]) -> None:
    model = make_model(name, n_layers=1, seed=1, frozen=True)
    batch = _batch()
    pred = predict_next(model, batch)
    h = model.hidden(batch)
    valid = pred.mask
    torch.testing.assert_close(
        pred.head_type[valid], model.type_logits(h[:, :-1]).argmax(-1)[valid]
    )
    torch.testing.assert_close(pred.head_gap[valid], model.gap(h[:, :-1])[valid])
    torch.testing.assert_close(
        pred.type_probs[valid].sum(-1), torch.ones(int(valid.sum()), dtype=torch.float64)
    )
    assert (pred.expected_gap[valid] > 0).all() and (pred.upper_bound[valid] > 0).all()
    # prediction j uses h_j only: changing the last event leaves earlier predictions unchanged
    types = batch.types.clone()
    types[0, -1] = (types[0, -1] + 1) % 3
    other = predict_next(model, batch._replace(types=types))
    torch.testing.assert_close(other.expected_gap, pred.expected_gap)


def test_a_dying_intensity_gives_infinite_gaps_that_are_counted(
    make_model: Callable[..., TPPModel], set_heads: Callable[..., None]
) -> None:
    """lambda_k(s) = softplus(-50 s) dies out, so the next time is defective and its mean
    infinite: not a huge finite number whose square overflows the RMSE with n_infinite_gap 0."""
    model = make_model(k=2, n_layers=1, double=True, frozen=True)
    set_heads(model, [-50.0, -50.0], [0.0, 0.0])
    pred = predict_next(model, _batch(2))
    valid = pred.mask
    assert torch.isinf(pred.expected_gap[valid]).all()
    assert torch.isfinite(pred.type_probs[valid]).all()
    ds = EventDataset([EventSequence([0.0, 0.5, 1.25], [0, 1, 0], "0")], 2, "mem")
    metric = evaluate(model, ds).model_prediction
    assert metric is not None
    assert (metric.n_events, metric.n_infinite_gap, metric.gap_rmse) == (2, 2, math.inf)
