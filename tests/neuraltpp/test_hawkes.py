"""Classical Hawkes baseline: likelihood, gradient, fit recovery, predictions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad

from neuraltpp import hawkes
from neuraltpp.data import EventDataset, EventSequence, future_split
from neuraltpp.likelihood import LikelihoodOptions
from neuraltpp.metrics import Metrics
from neuraltpp.simulate import HawkesParams, simulate_dataset

TRUE = HawkesParams(mu=[0.5, 0.3], alpha=[[0.5, 0.2], [0.3, 0.4]], beta=1.5)
FULL = LikelihoodOptions(first_event="start-state")  # the full LL a simulator reports


@pytest.fixture(scope="module")
def sim() -> EventDataset:
    return simulate_dataset(TRUE, 12, 150.0, seed=11)


def test_log_likelihood_equals_simulator(sim: EventDataset) -> None:
    ll = hawkes.log_likelihood(TRUE, sim, FULL)
    truth = [sim.metadata["true_log_likelihood"][s.seq_id] for s in sim.sequences]
    np.testing.assert_allclose(ll.total, truth, rtol=1e-10)
    assert ll.n_events.tolist() == [len(s) for s in sim.sequences]


def test_condition_mode_drops_first_event_and_its_interval(sim: EventDataset) -> None:
    full = hawkes.log_likelihood(TRUE, sim, FULL)
    cond = hawkes.log_likelihood(TRUE, sim, LikelihoodOptions(first_event="condition"))
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
    fitted = hawkes.fit(ds, beta=beta)
    np.testing.assert_allclose(fitted.mu, TRUE.mu, rtol=0.25)
    np.testing.assert_allclose(fitted.alpha, TRUE.alpha, rtol=0.25)
    assert fitted.beta == pytest.approx(TRUE.beta, rel=0.25)
    fit_ll = hawkes.log_likelihood(fitted, ds, FULL).total.sum()
    assert fit_ll >= hawkes.log_likelihood(TRUE, ds, FULL).total.sum()  # the MLE beats the truth


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


def test_evaluate_reports_the_neural_models_metrics(sim: EventDataset) -> None:
    """Same `Metrics` type and default conventions as ``evaluation.evaluate``."""
    metrics = hawkes.evaluate(TRUE, sim)
    assert isinstance(metrics, Metrics)
    n = sim.n_events - len(sim)
    ll, pred = metrics.likelihood, metrics.model_prediction
    assert ll.n_events == n and pred is not None and pred.n_events == n
    defaults = LikelihoodOptions()
    assert (ll.mode, ll.first_event, ll.include_tail) == (
        defaults.mode,
        defaults.first_event,
        defaults.include_tail,
    )
    assert ll.integration == "closed-form" and metrics.head_prediction is None
    assert 0.4 < pred.type_accuracy <= 1 and pred.gap_rmse > 0 and pred.n_infinite_gap == 0
    # the same numbers as the public functions it combines, by hand
    per_sequence = hawkes.log_likelihood(TRUE, sim)
    assert per_sequence.first_event == "condition"  # the default is the neural models' default
    assert ll.ll_per_event == float(per_sequence.total.sum() / n)
    assert ll.ll_per_event_original_units == ll.ll_per_event  # time_scale 1
    p = hawkes.predict(TRUE, sim)
    assert pred.type_accuracy == pytest.approx(
        float((p.type_probs.argmax(1) == p.true_type).mean())
    )
    assert pred.gap_rmse == pytest.approx(
        float(np.sqrt(np.mean((p.expected_gap - p.true_gap) ** 2)))
    )
    assert hawkes.evaluate(TRUE, sim, predictions=False).model_prediction is None
    with pytest.raises(ValueError, match="correct mode only"):
        hawkes.evaluate(TRUE, sim, LikelihoodOptions(mode="legacy"))


def test_future_split_chain_rule(sim: EventDataset) -> None:
    """LL(full) - LL(prefix) is the suffix LL conditioned on the prefix (brute force check)."""
    fs = future_split(sim, 0.7)
    suffix = (
        hawkes.log_likelihood(TRUE, fs.full, FULL).total
        - hawkes.log_likelihood(TRUE, fs.prefix, FULL).total
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
