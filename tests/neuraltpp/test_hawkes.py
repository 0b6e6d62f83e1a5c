"""Classical Hawkes baseline: likelihood, gradient, fit recovery, predictions."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.integrate import quad

from neuraltpp import hawkes
from neuraltpp.data import EventDataset, EventSequence, future_split
from neuraltpp.simulate import HawkesParams, simulate_dataset

TRUE = HawkesParams(mu=[0.5, 0.3], alpha=[[0.5, 0.2], [0.3, 0.4]], beta=1.5)


@pytest.fixture(scope="module")
def sim() -> EventDataset:
    return simulate_dataset(TRUE, 12, 150.0, seed=11)


def test_log_likelihood_equals_simulator(sim: EventDataset) -> None:
    ll = hawkes.log_likelihood(TRUE, sim)
    truth = [sim.metadata["true_log_likelihood"][s.seq_id] for s in sim.sequences]
    np.testing.assert_allclose(ll.total, truth, rtol=1e-10)
    assert ll.n_events.tolist() == [len(s) for s in sim.sequences]


def test_condition_mode_drops_first_event_and_its_interval(sim: EventDataset) -> None:
    full = hawkes.log_likelihood(TRUE, sim, first_event="start-state")
    cond = hawkes.log_likelihood(TRUE, sim, first_event="condition")
    first_t = np.array([s.times[0] for s in sim.sequences])
    first_k = np.array([s.types[0] for s in sim.sequences])
    expected = full.total - (np.log(TRUE.mu[first_k]) - TRUE.mu.sum() * first_t)
    np.testing.assert_allclose(cond.total, expected, rtol=1e-10)
    assert cond.n_events.tolist() == [len(s) - 1 for s in sim.sequences]


def test_gradient_matches_finite_differences(sim: EventDataset) -> None:
    data = hawkes._pad(sim)
    params = HawkesParams([0.4, 0.35], [[0.3, 0.1], [0.2, 0.5]], 1.2)

    def total(p: HawkesParams) -> float:
        ll, _ = hawkes._ll_and_grad(
            p, data, first_event="condition", include_tail=True, with_grad=False
        )
        return float(ll.total.sum())

    _, grad = hawkes._ll_and_grad(
        params, data, first_event="condition", include_tail=True, with_grad=True
    )
    assert grad is not None
    g_mu, g_alpha, g_beta = grad
    eps = 1e-6
    bump = HawkesParams(params.mu, params.alpha, params.beta + eps)
    dip = HawkesParams(params.mu, params.alpha, params.beta - eps)
    assert g_beta == pytest.approx((total(bump) - total(dip)) / (2 * eps), rel=1e-6)
    for k in range(2):
        mu = params.mu.copy()
        mu[k] += eps
        assert g_mu[k] == pytest.approx(
            (total(HawkesParams(mu, params.alpha, params.beta)) - total(params)) / eps, rel=1e-4
        )
        for m in range(2):
            alpha = params.alpha.copy()
            alpha[k, m] += eps
            numeric = (total(HawkesParams(params.mu, alpha, params.beta)) - total(params)) / eps
            assert g_alpha[k, m] == pytest.approx(numeric, rel=1e-4)


@pytest.mark.parametrize("beta", [None, 1.5])
def test_fit_recovers_parameters(beta: float | None) -> None:
    ds = simulate_dataset(TRUE, 16, 120.0, seed=3)
    assert 4000 < ds.n_events < 6500
    start = time.perf_counter()
    fitted = hawkes.fit(ds, beta=beta)
    assert time.perf_counter() - start < 20
    np.testing.assert_allclose(fitted.mu, TRUE.mu, rtol=0.25)
    np.testing.assert_allclose(fitted.alpha, TRUE.alpha, rtol=0.25)
    assert fitted.beta == pytest.approx(TRUE.beta, rel=0.25)
    fit_ll = hawkes.log_likelihood(fitted, ds).total.sum()
    assert fit_ll >= hawkes.log_likelihood(TRUE, ds).total.sum()  # the MLE beats the truth


def test_predictions_are_distributions_with_exact_expected_gap(sim: EventDataset) -> None:
    small = EventDataset(sim.sequences[:2], 2, "sim")
    pred = hawkes.predict(TRUE, small)
    assert pred.type_probs.shape == (sum(len(s) - 1 for s in small.sequences), 2)
    np.testing.assert_allclose(pred.type_probs.sum(axis=1), 1.0)
    seq = small.sequences[0]
    j = 4
    excite = np.zeros(2)
    for t, k in zip(seq.times[: j + 1], seq.types[: j + 1], strict=True):
        excite[k] += TRUE.beta * np.exp(-TRUE.beta * (seq.times[j] - t))
    c = TRUE.alpha @ excite
    m = TRUE.mu.sum()

    def survival(s: float) -> float:
        return np.exp(-m * s - c.sum() * (1 - np.exp(-TRUE.beta * s)) / TRUE.beta)

    gap, _ = quad(survival, 0, np.inf, epsabs=1e-12)
    assert pred.expected_gap[j] == pytest.approx(gap, rel=1e-6)
    probs = [
        quad(lambda s, k=k: (TRUE.mu[k] + c[k] * np.exp(-TRUE.beta * s)) * survival(s), 0, np.inf)[
            0
        ]
        for k in range(2)
    ]
    np.testing.assert_allclose(pred.type_probs[j], probs, rtol=1e-6)
    assert pred.true_gap[j] == pytest.approx(seq.times[j + 1] - seq.times[j])


def test_evaluate_reports_counts(sim: EventDataset) -> None:
    metrics = hawkes.evaluate(TRUE, sim)
    n = sim.n_events - len(sim)
    assert metrics.n_ll_events == n and metrics.n_predictions == n
    assert metrics.first_event == "condition" and 0.4 < metrics.type_accuracy <= 1
    assert np.isfinite(metrics.ll_per_event) and metrics.rmse_gap > 0
    # the same numbers as the public functions it combines
    ll = hawkes.log_likelihood(TRUE, sim, first_event="condition")
    pred = hawkes.predict(TRUE, sim)
    assert metrics.ll_per_event == ll.per_event
    assert metrics.type_accuracy == float((pred.type_probs.argmax(1) == pred.true_type).mean())


def test_future_split_chain_rule(sim: EventDataset) -> None:
    """LL(full) - LL(prefix) is the suffix LL conditioned on the prefix (brute force check)."""
    fs = future_split(sim, 0.7)
    suffix = (
        hawkes.log_likelihood(TRUE, fs.full).total - hawkes.log_likelihood(TRUE, fs.prefix).total
    )
    seq, cut, n = fs.full.sequences[0], fs.split_times[0], fs.n_prefix[0]
    direct = 0.0
    for i in range(n, len(seq)):
        past = np.arange(i)
        lam = TRUE.mu[seq.types[i]] + np.sum(
            TRUE.alpha[seq.types[i], seq.types[past]]
            * TRUE.beta
            * np.exp(-TRUE.beta * (seq.times[i] - seq.times[past]))
        )
        direct += np.log(lam)
    end = seq.window_end
    direct -= TRUE.mu.sum() * (end - cut)
    weights = TRUE.alpha[:, seq.types].sum(axis=0)
    start = np.maximum(seq.times, cut)
    direct -= np.sum(
        weights
        * (np.exp(-TRUE.beta * (start - seq.times)) - np.exp(-TRUE.beta * (end - seq.times)))
    )
    assert suffix[0] == pytest.approx(direct, rel=1e-10)


def test_type_mismatch_is_an_error() -> None:
    ds = EventDataset([EventSequence([0.0, 1.0], [0, 2], "x")], 3, "three-types")
    with pytest.raises(ValueError, match="three-types"):
        hawkes.log_likelihood(TRUE, ds)
