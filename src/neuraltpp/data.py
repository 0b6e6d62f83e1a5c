"""Event-sequence datasets: containers, readers/writers, validation, batching and splits.

Formats read by :func:`load_dataset`:

* NHP/THP pickles: a directory with ``train.pkl``/``dev.pkl``/``test.pkl``; each holds a dict with
  ``dim_process`` and a split key whose value is a list of sequences, each a list of dicts with
  ``time_since_start``, ``time_since_last_event`` and ``type_event``.
* EasyTPP JSON: one record per sequence with the lists ``time_since_start``,
  ``time_since_last_event``, ``type_event`` and ``dim_process``, ``seq_len``, ``seq_idx``; as a
  ``.json`` list or ``.jsonl`` lines, or a Hugging Face ``datasets`` directory (``save_to_disk``).
* Long tables (``.csv``/``.parquet``) with columns ``seq_id``, ``time``, ``type``; string types are
  mapped to ints in sorted order (kept in ``EventDataset.type_names``).

Validation (always on): finite times, non-decreasing times within a sequence (ties allowed),
integer types in ``[0, num_types)``, no empty sequence, and ``time_since_last_event``
consistent with ``time_since_start`` (from the second event on; relative tolerance ``gap_tol``).
Any violation raises :class:`DataError` naming the file, the sequence (index and id) and the
position (and the data row for tables). Two opt-in repairs exist: ``repair=("sort",)`` stably
sorts a sequence whose times decrease (the gap check is then skipped); ``repair=("dedupe",)``
drops events identical in time and type to the previous one. Every change is recorded in
``EventDataset.repairs`` and announced with a warning. Nothing is dropped silently.

Windows: an ``EventSequence`` may carry its observation window ``[window_start, window_end]``.
Unknown windows default (in :func:`batches`) to the first and last event times.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

SPLITS = ("train", "dev", "test")
REPAIRS = frozenset({"sort", "dedupe"})
_SPLIT_ALIASES = {"valid": "dev", "validation": "dev", "val": "dev"}
_TABLE_SUFFIXES = (".csv", ".parquet")
_JSON_SUFFIXES = (".json", ".jsonl")


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
        for index, seq in enumerate(self.sequences):
            validate_sequence(seq, self.num_types, source=self.source, index=index)

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def n_events(self) -> int:
        """Total number of events over all sequences."""
        return sum(len(s) for s in self.sequences)


class Batch(NamedTuple):
    """Right-padded batch: times/window float64, types long (pad 0), mask True on real events."""

    times: Tensor  # [B, L] float64; padding repeats the sequence's last time
    types: Tensor  # [B, L] long
    mask: Tensor  # [B, L] bool
    window_start: Tensor  # [B] float64
    window_end: Tensor  # [B] float64


def _where(source: str, index: int, seq_id: str) -> str:
    return f"{source}: sequence {index} (id {seq_id!r})"


def validate_sequence(seq: EventSequence, num_types: int, *, source: str, index: int) -> None:
    """Raise :class:`DataError` (naming file, sequence, position) if ``seq`` is not valid."""
    where = _where(source, index, seq.seq_id)
    if len(seq) == 0:
        raise DataError(f"{where}: empty sequence (no events)")
    bad = np.flatnonzero(~np.isfinite(seq.times))
    if bad.size:
        j = int(bad[0])
        raise DataError(f"{where}, position {j}: non-finite time {seq.times[j]}", position=j)
    dec = np.flatnonzero(np.diff(seq.times) < 0)
    if dec.size:
        j = int(dec[0]) + 1
        raise DataError(
            f"{where}, position {j}: time {seq.times[j]!r} is before the previous "
            f"time {seq.times[j - 1]!r} (times must be non-decreasing; repair='sort' sorts)",
            position=j,
        )
    out = np.flatnonzero((seq.types < 0) | (seq.types >= num_types))
    if out.size:
        j = int(out[0])
        raise DataError(
            f"{where}, position {j}: type {seq.types[j]} not in [0, {num_types})", position=j
        )
    if seq.window_start is not None and not seq.window_start <= seq.times[0]:
        raise DataError(f"{where}: window_start {seq.window_start} after first event time")
    if seq.window_end is not None and not seq.window_end >= seq.times[-1]:
        raise DataError(f"{where}: window_end {seq.window_end} before last event time")


def _check_repair(repair: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(repair)
    unknown = chosen - REPAIRS
    if unknown:
        raise DataError(f"unknown repair {sorted(unknown)}; choose from {sorted(REPAIRS)}")
    return chosen


def _build_sequence(
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


def _check_gaps(tss: Sequence[float], tsle: Sequence[float], *, where: str, gap_tol: float) -> None:
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


def _finish(
    sequences: list[EventSequence],
    num_types: int,
    source: str,
    log: list[str],
    *,
    type_names: list[str] | None = None,
) -> EventDataset:
    if log:
        warnings.warn(f"{source}: repaired data: " + "; ".join(log), stacklevel=3)
    return EventDataset(
        sequences=sequences, num_types=num_types, source=source, type_names=type_names, repairs=log
    )


# ----------------------------------------------------------------------------- records (pkl/json)


def _from_records(
    records: Sequence[Sequence[dict[str, Any]]] | None,
    columnar: Sequence[dict[str, Any]] | None,
    num_types: int,
    source: str,
    *,
    repair: frozenset[str],
    gap_tol: float,
) -> EventDataset:
    """Build a dataset from NHP-style event dicts (``records``) or EasyTPP rows (``columnar``)."""
    log: list[str] = []
    sequences = []
    rows: Iterable[tuple[int, str, list, list, list]]
    if records is not None:
        rows = (
            (
                i,
                str(i),
                [e["time_since_start"] for e in seq],
                [e["time_since_last_event"] for e in seq],
                [e["type_event"] for e in seq],
            )
            for i, seq in enumerate(records)
        )
    else:
        assert columnar is not None
        rows = (
            (
                i,
                str(r.get("seq_idx", i)),
                r["time_since_start"],
                r["time_since_last_event"],
                r["type_event"],
            )
            for i, r in enumerate(columnar)
        )
    try:
        for i, seq_id, tss, tsle, types in rows:
            where = _where(source, i, seq_id)
            if len(types) != len(tss):
                raise DataError(f"{where}: {len(types)} types but {len(tss)} times")
            if "sort" not in repair:
                _check_gaps(tss, tsle, where=where, gap_tol=gap_tol)
            sequences.append(
                _build_sequence(tss, types, seq_id, where=where, repair=repair, log=log)
            )
    except KeyError as exc:
        raise DataError(f"{source}: missing field {exc} in a sequence record") from exc
    return _finish(sequences, num_types, source, log)


def _num_types(value: Any, source: str) -> int:
    try:
        k = int(value)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source}: dim_process {value!r} is not an integer") from exc
    if k <= 0:
        raise DataError(f"{source}: dim_process must be positive, got {k}")
    return k


def read_pickle(
    path: str | Path, *, repair: Iterable[str] = (), gap_tol: float = 1e-5
) -> tuple[str, EventDataset]:
    """Read one NHP/THP pickle; returns (split key, dataset)."""
    path = Path(path)
    with path.open("rb") as fh:
        try:
            obj = pickle.load(fh)
        except UnicodeDecodeError:
            fh.seek(0)
            obj = pickle.load(fh, encoding="latin1")
    if not isinstance(obj, dict) or "dim_process" not in obj:
        raise DataError(f"{path}: expected a dict with 'dim_process' and a split key")
    keys = [k for k in obj if k != "dim_process" and isinstance(obj[k], list)]
    preferred = [k for k in keys if k in (*SPLITS, *_SPLIT_ALIASES)]
    if len(preferred) != 1 and len(keys) != 1:
        raise DataError(f"{path}: expected exactly one split key holding sequences, got {keys}")
    key = preferred[0] if len(preferred) == 1 else keys[0]
    ds = _from_records(
        obj[key],
        None,
        _num_types(obj["dim_process"], str(path)),
        str(path),
        repair=_check_repair(repair),
        gap_tol=gap_tol,
    )
    return _SPLIT_ALIASES.get(key, key), ds


def _easytpp_rows(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON ({exc})") from exc
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of sequence records")
    return rows


def _easytpp_dataset(
    rows: Sequence[dict[str, Any]],
    source: str,
    *,
    num_types: int | None,
    repair: Iterable[str],
    gap_tol: float,
) -> EventDataset:
    dims = {r.get("dim_process") for r in rows} - {None}
    if len(dims) > 1:
        raise DataError(f"{source}: records disagree on dim_process: {sorted(dims)}")
    for i, r in enumerate(rows):
        if "seq_len" in r and r["seq_len"] != len(r.get("type_event", ())):
            raise DataError(
                f"{_where(source, i, str(r.get('seq_idx', i)))}: seq_len {r['seq_len']} but "
                f"{len(r.get('type_event', ()))} events"
            )
    if dims:
        k = _num_types(dims.pop(), source)
    elif num_types is not None:
        k = num_types
    else:
        k = 1 + max((int(max(r["type_event"], default=-1)) for r in rows), default=0)
    return _from_records(None, rows, k, source, repair=_check_repair(repair), gap_tol=gap_tol)


def read_easytpp_json(
    path: str | Path,
    *,
    num_types: int | None = None,
    repair: Iterable[str] = (),
    gap_tol: float = 1e-5,
) -> EventDataset:
    """Read EasyTPP records from a ``.json`` list or ``.jsonl`` file."""
    path = Path(path)
    return _easytpp_dataset(
        _easytpp_rows(path), str(path), num_types=num_types, repair=repair, gap_tol=gap_tol
    )


def read_hf_dataset(
    path: str | Path, *, repair: Iterable[str] = (), gap_tol: float = 1e-5
) -> dict[str, EventDataset]:
    """Read a local Hugging Face ``datasets`` directory (``save_to_disk``) of EasyTPP records."""
    import datasets

    path = Path(path)
    loaded = datasets.load_from_disk(str(path))
    parts = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [("train", loaded)]
    out = {}
    for name, part in parts:
        split = _SPLIT_ALIASES.get(name, name)
        out[split] = _easytpp_dataset(
            part.to_list(), f"{path}[{name}]", num_types=None, repair=repair, gap_tol=gap_tol
        )
    return out


# ----------------------------------------------------------------------------- long tables


def _read_frame(path: Path) -> Any:
    import pandas as pd

    if path.suffix == ".csv":
        frame = pd.read_csv(path, dtype={"seq_id": str})
    else:
        frame = pd.read_parquet(path)
    missing = {"seq_id", "time", "type"} - set(frame.columns)
    if missing:
        raise DataError(f"{path}: missing columns {sorted(missing)} (need seq_id, time, type)")
    for column in ("seq_id", "time", "type"):
        na = np.flatnonzero(frame[column].isna().to_numpy())
        if na.size:
            raise DataError(f"{path}, row {na[0]}: missing value in column {column!r}")
    return frame


def _type_codes(frames: dict[str, Any]) -> tuple[dict[str, np.ndarray], int, list[str] | None]:
    """Map type columns of all splits to ints: strings by sorted name, ints as they are."""
    columns = {name: f["type"].to_numpy() for name, f in frames.items()}
    if any(c.dtype.kind in "OUS" for c in columns.values()):
        names = sorted({str(v) for c in columns.values() for v in c})
        index = {n: i for i, n in enumerate(names)}
        codes = {
            s: np.array([index[str(v)] for v in c], dtype=np.int64) for s, c in columns.items()
        }
        return codes, len(names), names
    return columns, 1 + max(int(c.max()) for c in columns.values()), None


def _table_dataset(
    frame: Any,
    codes: np.ndarray,
    num_types: int,
    names: list[str] | None,
    source: str,
    repair: frozenset[str],
) -> EventDataset:
    """Group rows by ``seq_id`` (first-appearance order), keeping row order within a sequence."""
    log: list[str] = []
    ids = frame["seq_id"].astype(str).to_numpy()
    times = frame["time"].to_numpy()
    groups: dict[str, list[int]] = {}
    for row, sid in enumerate(ids):
        groups.setdefault(sid, []).append(row)
    sequences = []
    for i, (sid, rows) in enumerate(groups.items()):
        where = _where(source, i, sid)
        seq = _build_sequence(times[rows], codes[rows], sid, where=where, repair=repair, log=log)
        try:
            validate_sequence(seq, num_types, source=source, index=i)
        except DataError as exc:
            if exc.position is None:
                raise
            row = rows[exc.position]
            raise DataError(f"{exc} (data row {row})", position=exc.position) from None
        sequences.append(seq)
    return _finish(sequences, num_types, source, log, type_names=names)


def read_tables(paths: dict[str, Path], *, repair: Iterable[str] = ()) -> dict[str, EventDataset]:
    """Read long tables (one per split) sharing one type mapping; returns {split: dataset}."""
    chosen = _check_repair(repair)
    frames = {s: _read_frame(p) for s, p in paths.items()}
    codes, k, names = _type_codes(frames)
    return {s: _table_dataset(frames[s], codes[s], k, names, str(paths[s]), chosen) for s in paths}


# ----------------------------------------------------------------------------- dispatch


def _split_files(directory: Path) -> dict[str, Path]:
    """Find ``<split>.<ext>`` files in a directory (one format only)."""
    found: dict[str, dict[str, Path]] = {}
    for p in sorted(directory.iterdir()):
        split = _SPLIT_ALIASES.get(p.stem, p.stem)
        if split in SPLITS and p.suffix in (".pkl", *_JSON_SUFFIXES, *_TABLE_SUFFIXES):
            found.setdefault(p.suffix, {})[split] = p
    if len(found) != 1:
        raise DataError(
            f"{directory}: expected train/dev/test files of one format "
            f"(.pkl, .json, .jsonl, .csv, .parquet), found {sorted(found) or 'none'}"
        )
    return next(iter(found.values()))


def _consistent(splits: dict[str, EventDataset], origin: str) -> dict[str, EventDataset]:
    """Give all splits the same ``num_types``: equal dims required from explicit-dim formats."""
    dims = {ds.num_types for ds in splits.values()}
    if len(dims) > 1:
        detail = ", ".join(f"{s}={ds.num_types}" for s, ds in splits.items())
        raise DataError(f"{origin}: splits disagree on the number of types ({detail})")
    return splits


def load_dataset(
    path_or_name: str | Path,
    *,
    repair: Iterable[str] = (),
    time_scale: float | None = None,
    gap_tol: float = 1e-5,
    seed: int = 0,
) -> dict[str, EventDataset]:
    """Load any supported source as {split: EventDataset}; names ``ucerf3``/``ridgecrest`` too.

    A directory holds ``train``/``dev``/``test`` files of one format or is a ``datasets``
    directory; a single file yields one split named after its split key (pickle) or its stem
    (``train``/``dev``/``test``/``valid``), else ``"all"``. ``time_scale`` divides all times.
    """
    text = str(path_or_name)
    path = Path(path_or_name).expanduser()
    if not path.exists() and text in ("ucerf3", "ridgecrest"):
        from neuraltpp.earthquakes import load_earthquakes

        splits = load_earthquakes(text, seed=seed)
    elif not path.exists():
        raise DataError(f"{path}: no such file or directory (nor a known dataset name)")
    elif path.is_dir() and (
        (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists()
    ):
        splits = read_hf_dataset(path, repair=repair, gap_tol=gap_tol)
    elif path.is_dir():
        files = _split_files(path)
        splits = _read_files(files, repair=repair, gap_tol=gap_tol)
    else:
        stem = _SPLIT_ALIASES.get(path.stem, path.stem)
        split = stem if stem in SPLITS else "all"
        splits = _read_files({split: path}, repair=repair, gap_tol=gap_tol)
    splits = _consistent(splits, str(path))
    if time_scale is not None:
        splits = {s: rescale(ds, time_scale) for s, ds in splits.items()}
    return splits


def _read_files(
    files: dict[str, Path], *, repair: Iterable[str], gap_tol: float
) -> dict[str, EventDataset]:
    suffix = next(iter(files.values())).suffix
    if suffix in _TABLE_SUFFIXES:
        return read_tables(files, repair=repair)
    if suffix in _JSON_SUFFIXES:
        return {s: read_easytpp_json(p, repair=repair, gap_tol=gap_tol) for s, p in files.items()}
    if suffix == ".pkl":
        out = {}
        for split, p in files.items():
            key, ds = read_pickle(p, repair=repair, gap_tol=gap_tol)
            out[split if split != "all" else key] = ds
        return out
    raise DataError(f"{next(iter(files.values()))}: unsupported file type {suffix!r}")


# ----------------------------------------------------------------------------- writers


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write`` on a temporary file in the same directory, then ``os.replace`` it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _easytpp_records(ds: EventDataset) -> list[dict[str, Any]]:
    records = []
    for i, seq in enumerate(ds.sequences):
        gaps = np.diff(seq.times, prepend=seq.times[0])
        records.append(
            {
                "time_since_start": seq.times.tolist(),
                "time_since_last_event": gaps.tolist(),
                "type_event": seq.types.tolist(),
                "dim_process": ds.num_types,
                "seq_len": len(seq),
                "seq_idx": int(seq.seq_id) if seq.seq_id.isdigit() else i,
            }
        )
    return records


def write_pickle(splits: dict[str, EventDataset], directory: str | Path) -> None:
    """Write NHP/THP pickles ``<split>.pkl`` (first event's time_since_last_event is 0)."""
    directory = Path(directory)
    for split, ds in splits.items():
        payload = {
            "dim_process": ds.num_types,
            split: [
                [
                    {"time_since_start": t, "time_since_last_event": g, "type_event": k}
                    for t, g, k in zip(
                        r["time_since_start"],
                        r["time_since_last_event"],
                        r["type_event"],
                        strict=True,
                    )
                ]
                for r in _easytpp_records(ds)
            ],
        }
        atomic_write(
            directory / f"{split}.pkl",
            lambda p, obj=payload: p.write_bytes(pickle.dumps(obj, protocol=4)),
        )


def write_easytpp_json(ds: EventDataset, path: str | Path) -> None:
    """Write EasyTPP records: a JSON list (``.json``) or one record per line (``.jsonl``)."""
    path = Path(path)
    records = _easytpp_records(ds)
    if path.suffix == ".jsonl":
        text = "".join(json.dumps(r) + "\n" for r in records)
    else:
        text = json.dumps(records)
    atomic_write(path, lambda p: p.write_text(text))


def write_hf_dataset(splits: dict[str, EventDataset], directory: str | Path) -> None:
    """Write a Hugging Face ``DatasetDict`` of EasyTPP records (``save_to_disk``)."""
    import datasets

    dd = datasets.DatasetDict(
        {s: datasets.Dataset.from_list(_easytpp_records(ds)) for s, ds in splits.items()}
    )
    dd.save_to_disk(str(directory))


def write_table(ds: EventDataset, path: str | Path) -> None:
    """Write a long table (``.csv`` or ``.parquet``) with columns seq_id, time, type."""
    import pandas as pd

    path = Path(path)
    frame = pd.DataFrame(
        {
            "seq_id": np.concatenate([[s.seq_id] * len(s) for s in ds.sequences]),
            "time": np.concatenate([s.times for s in ds.sequences]),
            "type": np.concatenate([s.types for s in ds.sequences]),
        }
    )
    if ds.type_names is not None:
        frame["type"] = np.asarray(ds.type_names, dtype=object)[frame["type"].to_numpy()]
    if path.suffix == ".csv":
        atomic_write(path, lambda p: frame.to_csv(p, index=False, float_format="%.17g"))
    elif path.suffix == ".parquet":
        atomic_write(path, lambda p: frame.to_parquet(p, index=False))
    else:
        raise DataError(f"{path}: table suffix must be .csv or .parquet")


# ----------------------------------------------------------------------------- transforms


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


def _subset(ds: EventDataset, sequences: list[EventSequence], **metadata: Any) -> EventDataset:
    return replace(ds, sequences=sequences, metadata={**ds.metadata, **metadata})


def split_dataset(
    ds: EventDataset, fractions: Sequence[float] = (0.8, 0.1, 0.1), *, seed: int = 0
) -> dict[str, EventDataset]:
    """Shuffle sequences with ``seed`` and cut into train/dev/test by ``fractions`` (sum 1)."""
    if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0):
        raise DataError(f"fractions must be three non-negative numbers summing to 1: {fractions}")
    order = np.random.default_rng(seed).permutation(len(ds))
    n_train = round(fractions[0] * len(ds))
    n_dev = round(fractions[1] * len(ds))
    cuts = {
        "train": order[:n_train],
        "dev": order[n_train : n_train + n_dev],
        "test": order[n_train + n_dev :],
    }
    return {
        name: _subset(
            ds,
            [ds.sequences[i] for i in sorted(idx)],
            split=name,
            split_seed=seed,
            split_fractions=list(fractions),
        )
        for name, idx in cuts.items()
    }


@dataclass
class FutureSplit:
    """Per-sequence time split: ``prefix`` on [start, split] for training, ``full`` for scoring.

    The suffix log-likelihood conditioned on the prefix is exact by the chain rule:
    ``LL(full on [start, end]) - LL(prefix on [start, split])`` (with the tail compensator on).
    ``split_times[i]`` is the split time of sequence ``i``; ``n_prefix[i]`` its prefix length.
    """

    prefix: EventDataset
    full: EventDataset
    split_times: np.ndarray
    n_prefix: np.ndarray
    excluded: list[str]  # seq_ids with no event in the prefix (cannot be conditioned on)


def future_split(ds: EventDataset, fraction: float = 0.7) -> FutureSplit:
    """Split each sequence at ``start + fraction * (end - start)`` of its window.

    Prefix events are those with time <= split time; the prefix keeps ``window_end`` = split
    time. Sequences with no prefix event are excluded and listed in ``excluded``.
    """
    if not 0 < fraction < 1:
        raise DataError(f"future_split fraction must be in (0, 1), got {fraction}")
    prefixes, fulls, cuts, counts, excluded = [], [], [], [], []
    for seq in ds.sequences:
        start = seq.times[0] if seq.window_start is None else seq.window_start
        end = seq.times[-1] if seq.window_end is None else seq.window_end
        cut = start + fraction * (end - start)
        n = int(np.searchsorted(seq.times, cut, side="right"))
        if n == 0:
            excluded.append(seq.seq_id)
            continue
        prefixes.append(
            EventSequence(seq.times[:n], seq.types[:n], seq.seq_id, float(start), float(cut))
        )
        fulls.append(EventSequence(seq.times, seq.types, seq.seq_id, float(start), float(end)))
        cuts.append(cut)
        counts.append(n)
    return FutureSplit(
        prefix=_subset(ds, prefixes, future_split="prefix", future_fraction=fraction),
        full=_subset(ds, fulls, future_split="full", future_fraction=fraction),
        split_times=np.asarray(cuts, dtype=np.float64),
        n_prefix=np.asarray(counts, dtype=np.int64),
        excluded=excluded,
    )


# ----------------------------------------------------------------------------- batching


def pad_sequences(sequences: Sequence[EventSequence]) -> Batch:
    """Right-pad sequences into a :class:`Batch` (pad time = last real time, pad type = 0)."""
    lengths = [len(s) for s in sequences]
    width = max(lengths)
    times = np.empty((len(sequences), width), dtype=np.float64)
    types = np.zeros((len(sequences), width), dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=bool)
    for b, s in enumerate(sequences):
        n = lengths[b]
        times[b, :n] = s.times
        times[b, n:] = s.times[-1]
        types[b, :n] = s.types
        mask[b, :n] = True
    start = [s.times[0] if s.window_start is None else s.window_start for s in sequences]
    end = [s.times[-1] if s.window_end is None else s.window_end for s in sequences]
    return Batch(
        times=torch.from_numpy(times),
        types=torch.from_numpy(types),
        mask=torch.from_numpy(mask),
        window_start=torch.tensor(start, dtype=torch.float64),
        window_end=torch.tensor(end, dtype=torch.float64),
    )


def batches(
    ds: EventDataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    sort_by_length: bool = False,
) -> Iterator[Batch]:
    """Yield padded batches; with ``sort_by_length`` sequences of similar length share a batch.

    Order is deterministic given ``seed``: sequences are permuted (if ``shuffle``), optionally
    stably sorted by length into buckets, and the buckets themselves are permuted (if ``shuffle``).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ds)) if shuffle else np.arange(len(ds))
    if sort_by_length:
        lengths = np.array([len(ds.sequences[i]) for i in order])
        order = order[np.argsort(lengths, kind="stable")]
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if shuffle and sort_by_length:
        chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    for chunk in chunks:
        yield pad_sequences([ds.sequences[i] for i in chunk])
