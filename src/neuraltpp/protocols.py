"""The robustness protocols of the RoTHP and MHP papers as dataset transforms, and the
log-likelihood of a sequence's future given its past.

- `shift_times`: every time and window moved by σ (a shift-invariant model scores it the same).
- `jitter_times`: Gaussian noise on the times, re-sorted within each sequence (types move with
  their times) and clipped into the observation window.
- `future_log_likelihood`: log p(events after the cut, and no other event before the window
  end | events up to the cut), by the chain rule of `neuraltpp.data.future_split` (whose
  prefixes are also the train-short sets).

The two transforms need each sequence's window (`window_start`, `window_end`) and say so
otherwise, naming the sequence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from neuraltpp.data.containers import DataError, EventDataset, EventSequence
from neuraltpp.data.splits import future_split


def _window(seq: EventSequence, source: str) -> tuple[float, float]:
    if seq.window_start is None or seq.window_end is None:
        raise DataError(f"{source}: sequence {seq.seq_id!r} has no observation window")
    return seq.window_start, seq.window_end


def _with(ds: EventDataset, sequences: list[EventSequence], what: str) -> EventDataset:
    return dataclasses.replace(ds, sequences=sequences, source=f"{ds.source} ({what})")


def shift_times(ds: EventDataset, sigma: float) -> EventDataset:
    """Every time and window of ``ds`` plus ``sigma``."""
    out = []
    for s in ds.sequences:
        start, end = _window(s, ds.source)
        out.append(dataclasses.replace(s, times=s.times + sigma, window_start=start + sigma,
                                       window_end=end + sigma))
    return _with(ds, out, f"shifted by {sigma:g}")


def jitter_times(ds: EventDataset, eps: float, seed: int) -> EventDataset:
    """Times plus N(0, eps²) noise (one generator seeded with ``seed``), clipped into each
    sequence's window and re-sorted, each type staying with its time."""
    rng = np.random.default_rng(seed)
    out = []
    for s in ds.sequences:
        start, end = _window(s, ds.source)
        noisy = np.clip(s.times + rng.normal(0.0, eps, len(s)), start, end)
        order = np.argsort(noisy, kind="stable")
        out.append(dataclasses.replace(s, times=noisy[order], types=s.types[order]))
    return _with(ds, out, f"times jittered by N(0, {eps:g}²)")


@dataclass(frozen=True)
class FutureLL:
    """Log-likelihood (nats) of the events after the cut given the history, and their count."""

    total: float
    n_events: int
    excluded: list[str]  # sequences with no event before the cut (not scored)

    @property
    def ll_per_event(self) -> float:
        """Nats per event after the cut."""
        return self.total / max(self.n_events, 1)


def future_log_likelihood(
    score: Callable[[EventDataset], tuple[float, int]], ds: EventDataset, share: float
) -> FutureLL:
    """LL of each sequence's events after ``share`` of its window given those before, summed:
    LL(whole) − LL(prefix), both with the tail compensator (each state sees only the past).

    ``score`` maps a dataset to (summed LL, scored events) under one model and likelihood (a
    neural model's `dataset_log_likelihood`, or the Hawkes likelihood). Sequences with no
    event before the cut have no history and are left out (`future_split`); ``excluded``
    names them."""
    split = future_split(ds, share)
    whole_total, whole_n = score(split.full)
    prefix_total, prefix_n = score(split.prefix)
    return FutureLL(whole_total - prefix_total, whole_n - prefix_n, split.excluded)
