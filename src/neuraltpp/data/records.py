"""Raw per-sequence lists (from any reader) to validated sequences, with the opt-in repairs.

Shared by every reader: types must be integers; ``time_since_last_event`` must agree with
``time_since_start`` from the second event on (relative tolerance ``gap_tol``). Two opt-in
repairs exist: ``repair=("sort",)`` stably sorts a sequence whose times decrease (the gap check
is then skipped); ``repair=("dedupe",)`` drops events identical in time and type to the
previous one. Every change is recorded in ``EventDataset.repairs`` and announced with a
warning. Nothing is dropped silently.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from neuraltpp.data.containers import DataError, EventDataset, EventSequence, where

REPAIRS = frozenset({"sort", "dedupe"})


def check_repair(repair: Iterable[str]) -> frozenset[str]:
    """The chosen repairs as a set; DataError on an unknown one."""
    chosen = frozenset(repair)
    unknown = chosen - REPAIRS
    if unknown:
        raise DataError(f"unknown repair {sorted(unknown)}; choose from {sorted(REPAIRS)}")
    return chosen


def build_sequence(
    times: Sequence[float] | np.ndarray,
    types: Sequence[Any] | np.ndarray,
    seq_id: str,
    *,
    where: str,
    repair: frozenset[str],
    log: list[str],
) -> EventSequence:
    """Make a sequence from raw lists, checking integrality and applying opt-in repairs."""
    try:
        t = np.asarray(times, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: times are not numbers ({exc})") from exc
    raw_types = np.asarray(types)
    if raw_types.dtype.kind == "f":
        frac = np.flatnonzero(raw_types != np.round(raw_types))
        if frac.size:
            j = int(frac[0])
            raise DataError(f"{where}, position {j}: type {raw_types[j]!r} is not an integer")
    elif raw_types.size and raw_types.dtype.kind not in "iub":
        raise DataError(f"{where}: types must be integers, got dtype {raw_types.dtype}")
    k = raw_types.astype(np.int64)
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


def check_gaps(tss: Sequence[float], tsle: Sequence[float], *, where: str, gap_tol: float) -> None:
    """Check time_since_last_event[j] == time_since_start[j] - time_since_start[j-1], j >= 1."""
    t = np.asarray(tss, dtype=np.float64)
    g = np.asarray(tsle, dtype=np.float64)
    if g.shape != t.shape:
        raise DataError(
            f"{where}: time_since_last_event has {g.size} values, time_since_start {t.size}"
        )
    if t.size < 2:
        return
    expected = np.diff(t)
    bad = np.flatnonzero(np.abs(g[1:] - expected) > gap_tol * np.maximum(1.0, np.abs(t[1:])))
    if bad.size:
        j = int(bad[0]) + 1
        raise DataError(
            f"{where}, position {j}: time_since_last_event {g[j]!r} differs from "
            f"time_since_start difference {expected[j - 1]!r}"
        )


def finish(
    sequences: list[EventSequence],
    num_types: int,
    source: str,
    log: list[str],
    *,
    type_names: list[str] | None = None,
) -> EventDataset:
    """The dataset of the built sequences; warns once listing the repairs made, if any."""
    if log:
        warnings.warn(f"{source}: repaired data: " + "; ".join(log), stacklevel=3)
    return EventDataset(
        sequences=sequences, num_types=num_types, source=source, type_names=type_names, repairs=log
    )


def from_records(
    rows: Iterable[tuple[int, str, Sequence[float], Sequence[float], Sequence[Any]]],
    num_types: int,
    source: str,
    *,
    repair: frozenset[str],
    gap_tol: float,
) -> EventDataset:
    """Build a dataset from (index, seq_id, time_since_start, time_since_last_event, types) rows."""
    log: list[str] = []
    sequences = []
    try:
        for i, seq_id, tss, tsle, types in rows:
            at = where(source, i, seq_id)
            if len(types) != len(tss):
                raise DataError(f"{at}: {len(types)} types but {len(tss)} times")
            if "sort" not in repair:
                check_gaps(tss, tsle, where=at, gap_tol=gap_tol)
            sequences.append(build_sequence(tss, types, seq_id, where=at, repair=repair, log=log))
    except KeyError as exc:
        raise DataError(f"{source}: missing field {exc} in a sequence record") from exc
    return finish(sequences, num_types, source, log)


def num_types_of(value: Any, source: str) -> int:
    """``dim_process`` as a positive int; DataError naming the source otherwise."""
    try:
        k = int(value)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source}: dim_process {value!r} is not an integer") from exc
    if k <= 0:
        raise DataError(f"{source}: dim_process must be positive, got {k}")
    return k
