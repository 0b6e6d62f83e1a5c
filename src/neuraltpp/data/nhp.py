"""NHP/THP pickles: ``<split>.pkl`` holding ``dim_process`` and a split key of event-dict lists.

Each sequence is a list of dicts with ``time_since_start``, ``time_since_last_event`` and
``type_event``; pickles written by Python 2 are read with the latin-1 fallback. neuraltpp
adds, only where the data has them, a ``neuraltpp`` dict with the lists ``window_start`` and
``window_end`` (one per sequence, None where unknown), ``time_scale`` and ``type_names``;
other readers of the format ignore it.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from commonio.atomic import write_bytes
from neuraltpp.data.containers import DataError, EventDataset, where
from neuraltpp.data.easytpp import EVENT_FIELDS, dataset_fields, easytpp_records
from neuraltpp.data.records import (
    WINDOW_FIELDS,
    RawSequence,
    check_repair,
    from_records,
    has_windows,
    num_types_of,
    time_scale_of,
    type_names_of,
)
from neuraltpp.data.splits import SPLIT_ALIASES, SPLITS, split_name

EXTRAS_KEY = "neuraltpp"


def _unpickle(data: bytes) -> Any:
    try:
        return pickle.loads(data)
    except UnicodeDecodeError:
        return pickle.loads(data, encoding="latin1")


def _load(path: Path) -> dict[str, Any]:
    """The pickled dict; DataError naming the file when it is not a readable pickle of one."""
    try:
        obj = _unpickle(path.read_bytes())
    except Exception as exc:  # a damaged pickle raises any of a dozen unrelated types
        raise DataError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict) or "dim_process" not in obj:
        raise DataError(f"{path}: expected a dict with 'dim_process' and a split key")
    return obj


def _split_key(obj: dict[str, Any], path: Path) -> str:
    """The one key holding the sequences (a split name preferred)."""
    keys = [k for k, v in obj.items() if isinstance(k, str) and isinstance(v, list)]
    preferred = [k for k in keys if k in (*SPLITS, *SPLIT_ALIASES)]
    if len(preferred) != 1 and len(keys) != 1:
        raise DataError(f"{path}: expected exactly one split key holding sequences, got {keys}")
    return preferred[0] if len(preferred) == 1 else keys[0]


def _extras(obj: dict[str, Any], n: int, source: str) -> dict[str, Any]:
    """neuraltpp's extra fields; the window lists, when present, hold one bound per sequence."""
    extras = obj.get(EXTRAS_KEY, {})
    if not isinstance(extras, dict):
        raise DataError(f"{source}: {EXTRAS_KEY!r} must be a dict, got {type(extras).__name__}")
    for name in WINDOW_FIELDS:
        bounds = extras.get(name)
        if bounds is not None and not (isinstance(bounds, list) and len(bounds) == n):
            raise DataError(f"{source}: {EXTRAS_KEY}[{name!r}] must list one bound per sequence")
    return extras


def _raw(i: int, seq: Any, extras: dict[str, Any], source: str) -> RawSequence:
    """One pickled sequence (a list of event dicts) as a raw sequence."""
    at = where(source, i, str(i))
    if not isinstance(seq, list):
        raise DataError(f"{at}: expected a list of event dicts, got {type(seq).__name__}")
    for j, event in enumerate(seq):
        if not (isinstance(event, dict) and all(k in event for k in EVENT_FIELDS)):
            raise DataError(
                f"{at}, position {j}: expected a dict with {', '.join(EVENT_FIELDS)}, got "
                f"{event!r:.80}",
                position=j,
            )
    columns = ([event[k] for event in seq] for k in EVENT_FIELDS)
    bounds = {k: None if extras.get(k) is None else extras[k][i] for k in WINDOW_FIELDS}
    return RawSequence(i, str(i), *columns, **bounds)


def read_pickle(
    path: str | Path, *, repair: Iterable[str] = (), gap_tol: float = 1e-5
) -> tuple[str, EventDataset]:
    """Read one NHP/THP pickle; returns (split key, dataset)."""
    path = Path(path)
    source = str(path)
    obj = _load(path)
    key = _split_key(obj, path)
    extras = _extras(obj, len(obj[key]), source)
    ds = from_records(
        (_raw(i, seq, extras, source) for i, seq in enumerate(obj[key])),
        num_types_of(obj["dim_process"], source),
        source,
        repair=check_repair(repair),
        gap_tol=gap_tol,
        time_scale=time_scale_of(extras.get("time_scale"), source),
        type_names=type_names_of(extras.get("type_names"), source),
    )
    return split_name(key), ds


def _payload(split: str, ds: EventDataset) -> dict[str, Any]:
    """The pickled dict of one split: dim_process, the event dicts and neuraltpp's extras."""
    events = [
        [dict(zip(EVENT_FIELDS, event, strict=True)) for event in zip(*columns, strict=True)]
        for columns in ([r[k] for k in EVENT_FIELDS] for r in easytpp_records(ds))
    ]
    extras = dataset_fields(ds)
    if has_windows(ds):
        extras |= {k: [getattr(s, k) for s in ds.sequences] for k in WINDOW_FIELDS}
    payload: dict[str, Any] = {"dim_process": ds.num_types, split: events}
    return payload | ({EXTRAS_KEY: extras} if extras else {})


def write_pickle(splits: dict[str, EventDataset], directory: str | Path) -> None:
    """Write NHP/THP pickles ``<split>.pkl`` (first event's time_since_last_event is 0)."""
    directory = Path(directory)
    for split, ds in splits.items():
        write_bytes(directory / f"{split}.pkl", pickle.dumps(_payload(split, ds), protocol=4))
