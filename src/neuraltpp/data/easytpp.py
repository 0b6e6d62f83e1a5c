"""EasyTPP JSON records: one record per sequence, as a ``.json`` list or ``.jsonl`` lines.

A record holds the lists ``time_since_start``, ``time_since_last_event``, ``type_event`` and
``dim_process``, ``seq_len``, ``seq_idx``. neuraltpp adds what EasyTPP has no field for, only
where the data has it: ``window_start``/``window_end`` (the sequence's observation window, on
every record once one sequence has one; null where unknown), and on every record the
dataset's ``time_scale`` (when not 1) and ``type_names``. Other EasyTPP readers ignore them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from commonio.atomic import write_text
from neuraltpp.data.containers import DataError, EventDataset, where
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

JSON_SUFFIXES = (".json", ".jsonl")
EVENT_FIELDS = ("time_since_start", "time_since_last_event", "type_event")


def _parse(text: str, path: Path) -> list[Any]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    rows = json.loads(text)
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of sequence records")
    return rows


def _rows(path: Path) -> list[Any]:
    try:
        return _parse(path.read_text(encoding="utf-8"), path)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from exc
    except (json.JSONDecodeError, RecursionError) as exc:
        raise DataError(f"{path}: invalid JSON ({exc})") from exc


def _shared(rows: Sequence[dict[str, Any]], key: str, source: str) -> Any:
    """The one value of the dataset-level ``key`` on the records (None when absent)."""
    values = [r[key] for r in rows if r.get(key) is not None]
    for value in values[1:]:
        if value != values[0]:
            raise DataError(
                f"{source}: records disagree on {key}: {values[0]!r:.80} and {value!r:.80}"
            )
    return values[0] if values else None


def _raw(i: int, record: Any, source: str) -> RawSequence:
    """One record as a raw sequence; DataError naming it when it is not a record."""
    if not isinstance(record, dict):
        raise DataError(
            f"{where(source, i, str(i))}: expected a record (JSON object), got "
            f"{type(record).__name__}"
        )
    seq_id = str(record.get("seq_idx", i))
    missing = [k for k in EVENT_FIELDS if k not in record]
    if missing:
        raise DataError(f"{where(source, i, seq_id)}: missing field(s) {', '.join(missing)}")
    return RawSequence(
        i,
        seq_id,
        *(record[k] for k in EVENT_FIELDS),
        seq_len=record.get("seq_len"),
        **{k: record.get(k) for k in WINDOW_FIELDS},
    )


def easytpp_dataset(
    rows: Sequence[Any],
    source: str,
    *,
    num_types: int | None,
    repair: Iterable[str],
    gap_tol: float,
) -> EventDataset:
    """Build a dataset from EasyTPP records (also what a ``datasets`` directory holds)."""
    raws = [_raw(i, r, source) for i, r in enumerate(rows)]
    dim = _shared(rows, "dim_process", source)
    return from_records(
        raws,
        num_types if dim is None else num_types_of(dim, source),
        source,
        repair=check_repair(repair),
        gap_tol=gap_tol,
        time_scale=time_scale_of(_shared(rows, "time_scale", source), source),
        type_names=type_names_of(_shared(rows, "type_names", source), source),
    )


def read_easytpp_json(
    path: str | Path,
    *,
    num_types: int | None = None,
    repair: Iterable[str] = (),
    gap_tol: float = 1e-5,
) -> EventDataset:
    """Read EasyTPP records from a ``.json`` list or ``.jsonl`` file."""
    path = Path(path)
    return easytpp_dataset(
        _rows(path), str(path), num_types=num_types, repair=repair, gap_tol=gap_tol
    )


def dataset_fields(ds: EventDataset) -> dict[str, Any]:
    """neuraltpp's dataset-level fields that differ from the defaults: time_scale, type_names."""
    fields: dict[str, Any] = {}
    if ds.time_scale != 1.0:
        fields["time_scale"] = ds.time_scale
    if ds.type_names is not None:
        fields["type_names"] = list(ds.type_names)
    return fields


def easytpp_records(ds: EventDataset) -> list[dict[str, Any]]:
    """The EasyTPP record of every sequence (first event's time_since_last_event is 0), with
    neuraltpp's window, time scale and type names where the data has them."""
    windows, shared = has_windows(ds), dataset_fields(ds)
    records = []
    for i, seq in enumerate(ds.sequences):
        # EasyTPP's seq_idx is an integer column (int64 in Arrow): other ids become the index
        digits = seq.seq_id.isascii() and seq.seq_id.isdigit() and int(seq.seq_id) < 2**63
        record = {
            "time_since_start": seq.times.tolist(),
            "time_since_last_event": np.diff(seq.times, prepend=seq.times[0]).tolist(),
            "type_event": seq.types.tolist(),
            "dim_process": ds.num_types,
            "seq_len": len(seq),
            "seq_idx": int(seq.seq_id) if digits else i,
        }
        if windows:
            record |= {k: getattr(seq, k) for k in WINDOW_FIELDS}
        records.append(record | shared)
    return records


def write_easytpp_json(ds: EventDataset, path: str | Path) -> None:
    """Write EasyTPP records: a JSON list (``.json``) or one record per line (``.jsonl``)."""
    path = Path(path)
    records = easytpp_records(ds)
    if path.suffix == ".jsonl":
        text = "".join(json.dumps(r) + "\n" for r in records)
    else:
        text = json.dumps(records)
    write_text(path, text)
