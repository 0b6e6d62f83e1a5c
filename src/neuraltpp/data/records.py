"""Raw per-sequence lists (from any reader) to validated sequences, with the opt-in repairs.

Shared by every reader: times and window bounds must be real numbers and types integers (an
error names the position of the first value that is not); ``time_since_last_event`` must agree
with ``time_since_start`` from the second event on (relative tolerance ``gap_tol``). Two opt-in
repairs exist: ``repair=("sort",)`` stably sorts a sequence whose times decrease (the gap check
is then skipped); ``repair=("dedupe",)`` drops events identical in time and type to the
previous one. Every change is recorded in ``EventDataset.repairs`` and announced with a
warning. Nothing is dropped silently.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from neuraltpp.data.containers import DataError, EventDataset, EventSequence, where

REPAIRS = frozenset({"sort", "dedupe"})
INT64 = np.iinfo(np.int64)
WINDOW_FIELDS = ("window_start", "window_end")  # an EventSequence's observation window


@dataclass(frozen=True)
class RawSequence:
    """One sequence as a reader found it, before any check: the per-event lists, the declared
    length and the window bounds (None where the file has none)."""

    index: int
    seq_id: str
    time_since_start: Any
    time_since_last_event: Any
    type_event: Any
    seq_len: Any = None
    window_start: Any = None
    window_end: Any = None


def has_windows(ds: EventDataset) -> bool:
    """Whether some sequence of ``ds`` knows a bound of its observation window."""
    return any(s.window_start is not None or s.window_end is not None for s in ds.sequences)


def check_repair(repair: Iterable[str]) -> frozenset[str]:
    """The chosen repairs as a set; DataError on an unknown one."""
    chosen = frozenset(repair)
    unknown = chosen - REPAIRS
    if unknown:
        raise DataError(f"unknown repair {sorted(unknown)}; choose from {sorted(REPAIRS)}")
    return chosen


def _values(values: Any, what: str, where: str) -> Sequence[Any]:
    """``values`` if it is a list of values (list, tuple or 1-d array); DataError otherwise."""
    if isinstance(values, list | tuple) or (isinstance(values, np.ndarray) and values.ndim == 1):
        return values
    raise DataError(f"{where}: {what} must be a list, got {type(values).__name__}")


def _shown(value: Any) -> str:
    """``value`` as an error message shows it (a NumPy scalar as the plain number)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _real(value: Any) -> float | None:
    """``value`` as a float if it is a real number (not a boolean) in the float range."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool | np.bool_):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer beyond the float range
        return None


def numbers_of(values: Any, what: str, where: str) -> np.ndarray:
    """``values`` as float64; DataError naming the first position that holds something other
    than a real number (a string, null, a boolean, a list)."""
    values = _values(values, what, where)
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        return values.astype(np.float64)
    for j, value in enumerate(values):
        if _real(value) is None:
            raise DataError(
                f"{where}, position {j}: {what} {_shown(value)} is not a number", position=j
            )
    return np.asarray(values, dtype=np.float64)


def integers_of(values: Any, where: str, *, unit: str = "position") -> np.ndarray:
    """Event types as int64; DataError naming the first ``unit`` that is not an integer."""
    values = _values(values, "types", where)
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        return values.astype(np.int64)
    for j, value in enumerate(values):
        number = _real(value)
        integral = number is not None and math.isfinite(number) and number.is_integer()
        if not (integral and INT64.min <= int(number) <= INT64.max):
            raise DataError(
                f"{where}, {unit} {j}: type {_shown(value)} is not an integer", position=j
            )
    return np.asarray(values).astype(np.int64)


def bound_of(value: Any, what: str, where: str) -> float | None:
    """An optional window bound: None when absent, else a real number."""
    if value is None:
        return None
    number = _real(value)
    if number is None:
        raise DataError(f"{where}: {what} {_shown(value)} is not a number")
    return number


def time_scale_of(value: Any, source: str) -> float:
    """A stored ``time_scale``: 1 when absent, else a positive finite number."""
    if value is None:
        return 1.0
    number = _real(value)
    if number is None or not (math.isfinite(number) and number > 0):
        raise DataError(f"{source}: time_scale {_shown(value)} is not a positive finite number")
    return number


def type_names_of(value: Any, source: str) -> list[str] | None:
    """Stored ``type_names``: None when absent, else a list of distinct strings."""
    if value is None:
        return None
    names = list(_values(value, "type_names", source))
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise DataError(f"{source}: type_names must be distinct strings, got {names!r:.200}")
    return names


def build_sequence(
    times: Sequence[float] | np.ndarray,
    types: Sequence[Any] | np.ndarray,
    seq_id: str,
    *,
    where: str,
    repair: frozenset[str],
    log: list[str],
) -> EventSequence:
    """Make a sequence from raw lists, checking numbers and integrality; opt-in repairs."""
    t = numbers_of(times, "time", where)
    k = integers_of(types, where)
    if t.shape != k.shape:
        raise DataError(f"{where}: {k.size} types but {t.size} times")
    if "sort" in repair and t.size and np.any(np.diff(t) < 0):
        order = np.argsort(t, kind="stable")
        t, k = t[order], k[order]
        log.append(f"{where}: sorted {int(np.sum(order != np.arange(order.size)))} events by time")
    if "dedupe" in repair and t.size > 1:
        dup = np.concatenate([[False], (np.diff(t) == 0) & (np.diff(k) == 0)])
        if dup.any():
            log.append(
                f"{where}: dropped {int(dup.sum())} exact duplicate events at positions "
                f"{np.flatnonzero(dup).tolist()[:10]}"
            )
            t, k = t[~dup], k[~dup]
    return EventSequence(times=t, types=k, seq_id=seq_id)


def check_gaps(t: np.ndarray, tsle: Any, *, where: str, gap_tol: float) -> None:
    """Check time_since_last_event[j] == time_since_start[j] - time_since_start[j-1], j >= 1."""
    g = numbers_of(tsle, "time_since_last_event", where)
    if g.shape != t.shape:
        raise DataError(
            f"{where}: time_since_last_event has {g.size} values, time_since_start {t.size}"
        )
    if t.size < 2:
        return
    expected = np.diff(t)
    with np.errstate(invalid="ignore", over="ignore"):  # validation names non-finite times
        bad = np.flatnonzero(np.abs(g[1:] - expected) > gap_tol * np.maximum(1.0, np.abs(t[1:])))
    if bad.size:
        j = int(bad[0]) + 1
        raise DataError(
            f"{where}, position {j}: time_since_last_event {_shown(g[j])} differs from "
            f"time_since_start difference {_shown(expected[j - 1])}",
            position=j,
        )


def finish(
    sequences: list[EventSequence],
    num_types: int,
    source: str,
    log: list[str],
    *,
    type_names: list[str] | None = None,
    time_scale: float = 1.0,
) -> EventDataset:
    """The dataset of the built sequences; warns once listing the repairs made, if any."""
    if log:
        warnings.warn(f"{source}: repaired data: " + "; ".join(log), stacklevel=3)
    return EventDataset(
        sequences=sequences,
        num_types=num_types,
        source=source,
        time_scale=time_scale,
        type_names=type_names,
        repairs=log,
    )


def _sequence(
    raw: RawSequence, source: str, repair: frozenset[str], gap_tol: float, log: list[str]
) -> EventSequence:
    """One raw sequence checked (declared length, gaps, window bounds) and built."""
    at = where(source, raw.index, raw.seq_id)
    times = numbers_of(raw.time_since_start, "time_since_start", at)
    types = _values(raw.type_event, "type_event", at)
    if raw.seq_len is not None and raw.seq_len != len(types):
        raise DataError(f"{at}: seq_len {raw.seq_len!r} but {len(types)} events")
    if "sort" not in repair:
        check_gaps(times, raw.time_since_last_event, where=at, gap_tol=gap_tol)
    seq = build_sequence(times, types, raw.seq_id, where=at, repair=repair, log=log)
    seq.window_start = bound_of(raw.window_start, "window_start", at)
    seq.window_end = bound_of(raw.window_end, "window_end", at)
    return seq


def from_records(
    rows: Iterable[RawSequence],
    num_types: int | None,
    source: str,
    *,
    repair: frozenset[str],
    gap_tol: float,
    time_scale: float = 1.0,
    type_names: list[str] | None = None,
) -> EventDataset:
    """Build a dataset from raw sequences; ``num_types`` None means one more than the largest
    type (or the number of ``type_names``)."""
    log: list[str] = []
    sequences = [_sequence(raw, source, repair, gap_tol, log) for raw in rows]
    if num_types is None:
        largest = max((int(s.types.max()) for s in sequences if len(s)), default=0)
        num_types = len(type_names) if type_names is not None else 1 + largest
    return finish(sequences, num_types, source, log, type_names=type_names, time_scale=time_scale)


def num_types_of(value: Any, source: str) -> int:
    """``dim_process`` as a positive int; DataError naming the source otherwise."""
    try:
        k = int(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DataError(f"{source}: dim_process {value!r} is not an integer") from exc
    if k <= 0:
        raise DataError(f"{source}: dim_process must be positive, got {k}")
    return k
