"""Protocol transforms (time shift, timestamp noise) and the future log-likelihood given the
past, checked against the true Hawkes likelihood."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from neuraltpp import hawkes
from neuraltpp.data import DataError, EventDataset, future_split
from neuraltpp.likelihood import LikelihoodOptions
from neuraltpp.protocols import future_log_likelihood, jitter_times, shift_times
from neuraltpp.simulate import HawkesParams, simulate_dataset

TRUE = HawkesParams(mu=[0.5, 0.3], alpha=[[0.5, 0.2], [0.3, 0.4]], beta=1.5)


@pytest.fixture(scope="module")
def sim() -> EventDataset:
    return simulate_dataset(TRUE, 8, 40.0, seed=3)


def _score(ds: EventDataset) -> tuple[float, int]:
    ll = hawkes.log_likelihood(TRUE, ds, LikelihoodOptions())
    return float(ll.total.sum()), int(ll.n_events.sum())


@pytest.mark.parametrize("sigma", [0.2, 1e3, 1e6])
def test_a_shift_moves_times_and_windows_and_leaves_the_hawkes_likelihood(
    sim: EventDataset, sigma: float
) -> None:
    moved = shift_times(sim, sigma)
    for a, b in zip(sim.sequences, moved.sequences, strict=True):
        np.testing.assert_allclose(np.diff(b.times), np.diff(a.times), atol=1e-9 * sigma)
        assert (b.window_start, b.window_end) == (a.window_start + sigma, a.window_end + sigma)
        assert (b.types == a.types).all()
    assert _score(moved)[0] == pytest.approx(_score(sim)[0], rel=1e-6)


def test_jitter_keeps_types_with_times_inside_the_window_and_sorted(sim: EventDataset) -> None:
    noisy = jitter_times(sim, 0.01, seed=0)
    assert noisy.n_events == sim.n_events
    for a, b in zip(sim.sequences, noisy.sequences, strict=True):
        assert (np.diff(b.times) >= 0).all()
        assert a.window_start <= b.times[0] and b.times[-1] <= a.window_end
        assert np.abs(np.sort(b.times) - np.sort(a.times)).max() < 0.1  # 10 sigma
        assert sorted(b.types.tolist()) == sorted(a.types.tolist())
    assert not np.array_equal(noisy.sequences[0].times, sim.sequences[0].times)
    again = jitter_times(sim, 0.01, seed=0)
    assert all(np.array_equal(a.times, b.times) for a, b in zip(noisy.sequences, again.sequences,
                                                                 strict=True))
    unchanged = jitter_times(sim, 0.0, seed=0)
    assert all(np.array_equal(a.times, b.times) for a, b in zip(sim.sequences,
                                                                 unchanged.sequences, strict=True))


def test_future_ll_is_the_whole_minus_the_prefix_over_the_events_after_the_cut(
    sim: EventDataset,
) -> None:
    # one sequence whose first event comes after the cut: no history, left out by name
    late = dataclasses.replace(sim.sequences[0], times=sim.sequences[0].times[-3:],
                               types=sim.sequences[0].types[-3:], seq_id="late")
    ds = dataclasses.replace(sim, sequences=[*sim.sequences, late])
    future = future_log_likelihood(_score, ds, 0.7)
    assert future.excluded == ["late"]
    split = future_split(ds, 0.7)
    after = sum(int((s.times > cut).sum()) for s, cut in zip(split.full.sequences,
                                                             split.split_times, strict=True))
    assert future.n_events == after
    whole, prefix = _score(split.full), _score(split.prefix)
    assert future.total == pytest.approx(whole[0] - prefix[0], rel=1e-12)
    assert future.ll_per_event == pytest.approx(future.total / after)


def test_a_sequence_without_a_window_is_named(sim: EventDataset) -> None:
    bare = dataclasses.replace(sim, sequences=[dataclasses.replace(sim.sequences[2],
                                                                   window_end=None)])
    with pytest.raises(DataError, match=f"sequence {sim.sequences[2].seq_id!r} has no"):
        shift_times(bare, 1.0)
