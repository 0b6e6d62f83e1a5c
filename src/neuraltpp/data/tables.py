"""Long tables (``.csv``/``.parquet``) with columns ``seq_id``, ``time``, ``type``.

Rows are grouped by ``seq_id`` (first-appearance order), keeping row order within a sequence;
string types are mapped to ints in sorted order (kept in ``EventDataset.type_names``), so a
table holds only the types that occur. Optional columns, written only where the data has
them: ``window_start``/``window_end`` (the same on every row of a sequence; empty/NaN where
unknown) and ``time_scale`` (the same on every row). Errors name the data row (0-based, the
header not counted).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from commonio.atomic import atomic_write
from neuraltpp.data.containers import DataError, EventDataset, validate_sequence, where
from neuraltpp.data.records import (
    WINDOW_FIELDS,
    build_sequence,
    check_repair,
    finish,
    has_windows,
    integers_of,
    time_scale_of,
)

TABLE_SUFFIXES = (".csv", ".parquet")
COLUMNS = ("seq_id", "time", "type")
ROW = "data row"


def _parse(path: Path) -> Any:
    import pandas as pd

    if path.suffix != ".csv":
        return pd.read_parquet(path)
    try:
        return pd.read_csv(
            path,
            dtype={"seq_id": str},
            keep_default_na=False,  # only an empty field is missing: "NA" is a name
            na_values=[""],
        )
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: empty file (need a header {','.join(COLUMNS)})") from exc


def _read_frame(path: Path) -> Any:
    try:
        frame = _parse(path)
    except DataError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many unrelated types on damaged files
        raise DataError(f"{path}: not a readable table ({type(exc).__name__}: {exc})") from exc
    missing = set(COLUMNS) - set(frame.columns)
    if missing:
        raise DataError(f"{path}: missing columns {sorted(missing)} (need seq_id, time, type)")
    if len(frame) == 0:
        raise DataError(f"{path}: no data rows (a table needs at least one event)")
    for column in COLUMNS:
        na = np.flatnonzero(frame[column].isna().to_numpy())
        if na.size:
            raise DataError(f"{path}, {ROW} {na[0]}: missing value in column {column!r}")
    return frame


def _type_codes(
    frames: dict[str, Any], paths: dict[str, Path]
) -> tuple[dict[str, np.ndarray], int, list[str] | None]:
    """Map type columns of all splits to ints: strings by sorted name, ints as they are."""
    columns = {name: f["type"].to_numpy() for name, f in frames.items()}
    if any(c.dtype.kind in "OUS" for c in columns.values()):
        names = sorted({str(v) for c in columns.values() for v in c})
        index = {n: i for i, n in enumerate(names)}
        codes = {
            s: np.array([index[str(v)] for v in c], dtype=np.int64) for s, c in columns.items()
        }
        return codes, len(names), names
    codes = {s: integers_of(c, str(paths[s]), unit=ROW) for s, c in columns.items()}
    return codes, 1 + max(int(c.max()) for c in codes.values()), None


def _constant(values: np.ndarray, column: str, rows: Sequence[int], at: str) -> float | None:
    """The one value of ``column`` on the data rows ``rows`` (None when all are missing)."""
    if np.all(np.isnan(values)):
        return None
    differ = np.flatnonzero(values != values[0])
    if differ.size:
        raise DataError(
            f"{at}: column {column!r} differs within the sequence ({ROW} {rows[int(differ[0])]})"
        )
    return float(values[0])


def _numeric(frame: Any, column: str, source: str) -> np.ndarray:
    """A numeric column as float64 (NaN where empty); DataError naming the first data row
    that holds something else (a CSV column is text: "1.5" is a number there)."""
    import pandas as pd

    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(np.isnan(values) & ~raw.isna().to_numpy())
    if bad.size:
        row = int(bad[0])
        raise DataError(f"{source}, {ROW} {row}: {column} {raw.iloc[row]!r} is not a number")
    return values


def _optional(frame: Any, column: str, source: str) -> np.ndarray | None:
    """An optional numeric column (NaN where empty), None when the table has none."""
    return _numeric(frame, column, source) if column in frame.columns else None


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
    times = _numeric(frame, "time", source)
    windows = {k: _optional(frame, k, source) for k in WINDOW_FIELDS}
    groups: dict[str, list[int]] = {}
    for row, sid in enumerate(ids):
        groups.setdefault(sid, []).append(row)
    sequences = []
    for i, (sid, rows) in enumerate(groups.items()):
        at = where(source, i, sid)
        seq = build_sequence(times[rows], codes[rows], sid, where=at, repair=repair, log=log)
        for k, column in windows.items():
            if column is not None:
                setattr(seq, k, _constant(column[rows], k, rows, at))
        try:
            validate_sequence(seq, num_types, source=source, index=i)
        except DataError as exc:
            if exc.position is None:
                raise
            row = rows[exc.position]
            raise DataError(f"{exc} ({ROW} {row})", position=exc.position) from None
        sequences.append(seq)
    return finish(
        sequences, num_types, source, log, type_names=names, time_scale=_time_scale(frame, source)
    )


def _time_scale(frame: Any, source: str) -> float:
    """The table's optional ``time_scale`` column: one value on every row (1 when absent)."""
    scale = _optional(frame, "time_scale", source)
    if scale is None:
        return 1.0
    return time_scale_of(_constant(scale, "time_scale", range(len(scale)), source), source)


def read_tables(paths: dict[str, Path], *, repair: Iterable[str] = ()) -> dict[str, EventDataset]:
    """Read long tables (one per split) sharing one type mapping; returns {split: dataset}."""
    chosen = check_repair(repair)
    frames = {s: _read_frame(p) for s, p in paths.items()}
    codes, k, names = _type_codes(frames, paths)
    return {s: _table_dataset(frames[s], codes[s], k, names, str(paths[s]), chosen) for s in paths}


def _frame(ds: EventDataset) -> Any:
    """The long table of ``ds``, with the optional columns its data needs."""
    import pandas as pd

    frame = pd.DataFrame(
        {
            "seq_id": np.concatenate([[s.seq_id] * len(s) for s in ds.sequences]),
            "time": np.concatenate([s.times for s in ds.sequences]),
            "type": np.concatenate([s.types for s in ds.sequences]),
        }
    )
    if ds.type_names is not None:
        frame["type"] = np.asarray(ds.type_names, dtype=object)[frame["type"].to_numpy()]
    if has_windows(ds):
        lengths = [len(s) for s in ds.sequences]
        for k in WINDOW_FIELDS:  # an unknown bound (None) is NaN, an empty CSV field
            bounds = np.array([getattr(s, k) for s in ds.sequences], dtype=np.float64)
            frame[k] = np.repeat(bounds, lengths)
    if ds.time_scale != 1.0:
        frame["time_scale"] = ds.time_scale
    return frame


def write_table(ds: EventDataset, path: str | Path) -> None:
    """Write a long table (``.csv`` or ``.parquet``) with columns seq_id, time, type (and the
    optional window and time-scale columns where the data has them)."""
    path = Path(path)
    frame = _frame(ds)
    if path.suffix == ".csv":
        atomic_write(path, lambda p: frame.to_csv(p, index=False, float_format="%.17g"))
    elif path.suffix == ".parquet":
        atomic_write(path, lambda p: frame.to_parquet(p, index=False))
    else:
        raise DataError(f"{path}: table suffix must be .csv or .parquet")
