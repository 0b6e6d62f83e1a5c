"""Ogata-thinning Hawkes simulator: event counts and the exact log-likelihood."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import expm

from neuraltpp.data import EventSequence
from neuraltpp.simulate import (
    HawkesParamError,
    HawkesParams,
    check_stationary,
    simulate,
    simulate_dataset,
)

PARAMS = HawkesParams(mu=[0.4, 0.2], alpha=[[0.3, 0.2], [0.25, 0.35]], beta=2.0)


def brute_force_ll(params: HawkesParams, seq: EventSequence, end: float) -> float:
    """O(n^2) log-likelihood on [0, end] straight from the intensity's definition."""
    ll = 0.0
    for i, (t, k) in enumerate(zip(seq.times, seq.types, strict=True)):
        lam = params.mu[k]
        for j in range(i):
            lam += (
                params.alpha[k, seq.types[j]]
                * params.beta
                * np.exp(-params.beta * (t - seq.times[j]))
            )
        ll += np.log(lam)
    comp = params.mu.sum() * end
    for t, k in zip(seq.times, seq.types, strict=True):
        comp += params.alpha[:, k].sum() * (1 - np.exp(-params.beta * (end - t)))
    return ll - comp


def expected_counts(params: HawkesParams, T: float) -> np.ndarray:
    """E[N(T)] per type from an empty history: stationary rate times T minus the transient."""
    rate = params.stationary_rates()
    generator = params.beta * (np.eye(params.num_types) - params.alpha)
    transient = np.linalg.solve(generator, (np.eye(params.num_types) - expm(-generator * T)) @ rate)
    return params.mu * T + params.alpha @ (T * rate - transient)


def test_counts_match_stationary_rate() -> None:
    T, n = 200.0, 12
    ds = simulate_dataset(PARAMS, n, T, seed=7)
    counts = np.bincount(np.concatenate([s.types for s in ds.sequences]), minlength=2)
    expected = n * expected_counts(PARAMS, T)
    stationary = n * T * PARAMS.stationary_rates()
    assert np.all(np.abs(expected - stationary) < 0.02 * stationary)  # transient is small
    inv = np.linalg.inv(np.eye(2) - PARAMS.alpha)
    variance = n * T * np.diag(inv @ np.diag(PARAMS.stationary_rates()) @ inv.T)
    assert np.all(np.abs(counts - expected) < 4 * np.sqrt(variance)), (counts, expected)


def test_log_likelihood_matches_brute_force() -> None:
    ds = simulate_dataset(PARAMS, 3, 30.0, seed=1)
    assert ds.metadata["true_log_likelihood"].keys() == {s.seq_id for s in ds.sequences}
    for seq in ds.sequences:
        ll = ds.metadata["true_log_likelihood"][seq.seq_id]
        assert seq.window_start == 0.0 and seq.window_end == 30.0
        assert ll == pytest.approx(brute_force_ll(PARAMS, seq, 30.0), rel=1e-10, abs=1e-9)


def test_max_events_stops_and_window_ends_at_last_event() -> None:
    sim = simulate(PARAMS, np.random.default_rng(0), max_events=25)
    seq = sim.sequence
    assert len(seq) == 25 and seq.window_end == seq.times[-1]
    assert sim.log_likelihood == pytest.approx(brute_force_ll(PARAMS, seq, seq.times[-1]))
    capped = simulate(PARAMS, np.random.default_rng(0), T=1e6, max_events=10)
    assert len(capped.sequence) == 10


def test_seeded_and_order_independent() -> None:
    a = simulate_dataset(PARAMS, 4, 20.0, seed=5)
    b = simulate_dataset(PARAMS, 2, 20.0, seed=5)
    for x, y in zip(a.sequences[:2], b.sequences, strict=True):
        np.testing.assert_array_equal(x.times, y.times)
        np.testing.assert_array_equal(x.types, y.types)


def test_parameter_checks() -> None:
    assert PARAMS.spectral_radius == pytest.approx(0.55)
    explosive = HawkesParams(mu=[0.1], alpha=[[1.2]], beta=1.0)
    with pytest.raises(HawkesParamError, match="spectral radius"):
        check_stationary(explosive)
    with pytest.raises(HawkesParamError, match="spectral radius"):
        simulate(explosive, np.random.default_rng(0), max_events=10)
    with pytest.raises(HawkesParamError, match="alpha must be"):
        HawkesParams(mu=[0.1, 0.2], alpha=[[0.1]], beta=1.0)
    with pytest.raises(HawkesParamError, match="mu must be"):
        HawkesParams(mu=[-0.1], alpha=[[0.1]], beta=1.0)
    with pytest.raises(HawkesParamError, match="T and/or max_events"):
        simulate(PARAMS, np.random.default_rng(0))
