"""Event-sequence containers, their validation, and the time rescale.

Validation (always on): finite times, non-decreasing times within a sequence (ties allowed),
integer types in ``[0, num_types)``, no empty sequence, finite windows that contain the events,
one type name per type (when named), a positive finite ``time_scale``. Any
violation raises :class:`DataError` naming the source, the sequence (index and id) and the
position.

Windows: an ``EventSequence`` may carry its observation window ``[window_start, window_end]``.
Unknown windows default (in batching) to the first and last event times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


class DataError(ValueError):
    """Invalid event data; the message names the file, sequence and position."""

    def __init__(self, message: str, *, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position  # offending position within the sequence, when there is one


@dataclass
class EventSequence:
    """One sequence of events: absolute times (non-decreasing) and integer types."""

    times: np.ndarray  # float64, non-decreasing absolute times
    types: np.ndarray  # int64 in [0, num_types)
    seq_id: str
    window_start: float | None = None  # observation start (<= first time), if known
    window_end: float | None = None  # observation end (>= last time), if known

    def __post_init__(self) -> None:
        self.times = np.asarray(self.times, dtype=np.float64)
        self.types = np.asarray(self.types, dtype=np.int64)
        if self.times.ndim != 1 or self.times.shape != self.types.shape:
            raise DataError(
                f"sequence {self.seq_id!r}: times and types must be 1-d arrays of equal length, "
                f"got shapes {self.times.shape} and {self.types.shape}"
            )

    def __len__(self) -> int:
        return int(self.times.shape[0])


@dataclass
class EventDataset:
    """A list of sequences sharing ``num_types``; ``time_scale`` records the division of times.

    Times were divided by ``time_scale`` on load, so a log-likelihood in the original unit is
    ``LL - n_events * log(time_scale)``.
    """

    sequences: list[EventSequence]
    num_types: int
    source: str
    time_scale: float = 1.0
    type_names: list[str] | None = None  # name of each type id, when the source had names
    repairs: list[str] = field(default_factory=list)  # what opt-in repairs changed
    metadata: dict[str, Any] = field(default_factory=dict)  # provenance (splits, units, ...)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.time_scale) and self.time_scale > 0):
            raise DataError(f"{self.source}: time_scale {self.time_scale} is not positive finite")
        if self.type_names is not None and len(self.type_names) != self.num_types:
            raise DataError(
                f"{self.source}: {len(self.type_names)} type names for {self.num_types} types"
            )
        for index, seq in enumerate(self.sequences):
            validate_sequence(seq, self.num_types, source=self.source, index=index)

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def n_events(self) -> int:
        """Total number of events over all sequences."""
        return sum(len(s) for s in self.sequences)


def where(source: str, index: int, seq_id: str) -> str:
    """How error messages name a sequence: its source, index and id."""
    return f"{source}: sequence {index} (id {seq_id!r})"


def validate_sequence(seq: EventSequence, num_types: int, *, source: str, index: int) -> None:
    """Raise :class:`DataError` (naming file, sequence, position) if ``seq`` is not valid."""
    at = where(source, index, seq.seq_id)
    if len(seq) == 0:
        raise DataError(f"{at}: empty sequence (no events)")
    bad = np.flatnonzero(~np.isfinite(seq.times))
    if bad.size:
        j = int(bad[0])
        raise DataError(f"{at}, position {j}: non-finite time {seq.times[j]}", position=j)
    dec = np.flatnonzero(np.diff(seq.times) < 0)
    if dec.size:
        j = int(dec[0]) + 1
        raise DataError(
            f"{at}, position {j}: time {float(seq.times[j])!r} is before the previous time "
            f"{float(seq.times[j - 1])!r} (times must be non-decreasing: sort the events of each "
            "sequence by time, e.g. with load_dataset(..., repair=['sort']) in Python)",
            position=j,
        )
    out = np.flatnonzero((seq.types < 0) | (seq.types >= num_types))
    if out.size:
        j = int(out[0])
        raise DataError(
            f"{at}, position {j}: type {seq.types[j]} not in [0, {num_types})", position=j
        )
    for name in ("window_start", "window_end"):
        bound = getattr(seq, name)
        if bound is not None and not math.isfinite(bound):
            raise DataError(f"{at}: {name} {bound} is not finite")
    if seq.window_start is not None and not seq.window_start <= seq.times[0]:
        raise DataError(f"{at}: window_start {seq.window_start} after first event time")
    if seq.window_end is not None and not seq.window_end >= seq.times[-1]:
        raise DataError(f"{at}: window_end {seq.window_end} before last event time")


def rescale(ds: EventDataset, scale: float) -> EventDataset:
    """Divide all times and windows by ``scale`` (> 0) and record it in ``time_scale``."""
    if not (math.isfinite(scale) and scale > 0):
        raise DataError(f"time_scale must be a positive finite number, got {scale}")
    seqs = [
        replace(
            s,
            times=s.times / scale,
            window_start=None if s.window_start is None else s.window_start / scale,
            window_end=None if s.window_end is None else s.window_end / scale,
        )
        for s in ds.sequences
    ]
    return replace(ds, sequences=seqs, time_scale=ds.time_scale * scale)
