"""Long tables (``.csv``/``.parquet``) with columns ``seq_id``, ``time``, ``type``.

Rows are grouped by ``seq_id`` (first-appearance order), keeping row order within a sequence;
string types are mapped to ints in sorted order (kept in ``EventDataset.type_names``).
Validation errors also name the data row.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from commonio.atomic import atomic_write
from neuraltpp.data.containers import DataError, EventDataset, validate_sequence, where
from neuraltpp.data.records import build_sequence, check_repair, finish

TABLE_SUFFIXES = (".csv", ".parquet")


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
        at = where(source, i, sid)
        seq = build_sequence(times[rows], codes[rows], sid, where=at, repair=repair, log=log)
        try:
            validate_sequence(seq, num_types, source=source, index=i)
        except DataError as exc:
            if exc.position is None:
                raise
            row = rows[exc.position]
            raise DataError(f"{exc} (data row {row})", position=exc.position) from None
        sequences.append(seq)
    return finish(sequences, num_types, source, log, type_names=names)


def read_tables(paths: dict[str, Path], *, repair: Iterable[str] = ()) -> dict[str, EventDataset]:
    """Read long tables (one per split) sharing one type mapping; returns {split: dataset}."""
    chosen = check_repair(repair)
    frames = {s: _read_frame(p) for s, p in paths.items()}
    codes, k, names = _type_codes(frames)
    return {s: _table_dataset(frames[s], codes[s], k, names, str(paths[s]), chosen) for s in paths}


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
