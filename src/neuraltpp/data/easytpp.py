"""EasyTPP JSON records: one record per sequence, as a ``.json`` list or ``.jsonl`` lines.

A record holds the lists ``time_since_start``, ``time_since_last_event``, ``type_event`` and
``dim_process``, ``seq_len``, ``seq_idx``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from commonio.atomic import write_text
from neuraltpp.data.containers import DataError, EventDataset, where
from neuraltpp.data.records import check_repair, from_records, num_types_of

JSON_SUFFIXES = (".json", ".jsonl")


def _rows(path: Path) -> list[dict[str, Any]]:
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


def easytpp_dataset(
    rows: Sequence[dict[str, Any]],
    source: str,
    *,
    num_types: int | None,
    repair: Iterable[str],
    gap_tol: float,
) -> EventDataset:
    """Build a dataset from EasyTPP records (also what a ``datasets`` directory holds)."""
    dims = {r.get("dim_process") for r in rows} - {None}
    if len(dims) > 1:
        raise DataError(f"{source}: records disagree on dim_process: {sorted(dims)}")
    for i, r in enumerate(rows):
        if "seq_len" in r and r["seq_len"] != len(r.get("type_event", ())):
            raise DataError(
                f"{where(source, i, str(r.get('seq_idx', i)))}: seq_len {r['seq_len']} but "
                f"{len(r.get('type_event', ()))} events"
            )
    if dims:
        k = num_types_of(dims.pop(), source)
    elif num_types is not None:
        k = num_types
    else:
        k = 1 + max((int(max(r["type_event"], default=-1)) for r in rows), default=0)
    records = (
        (
            i,
            str(r.get("seq_idx", i)),
            r["time_since_start"],
            r["time_since_last_event"],
            r["type_event"],
        )
        for i, r in enumerate(rows)
    )
    return from_records(records, k, source, repair=check_repair(repair), gap_tol=gap_tol)


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


def easytpp_records(ds: EventDataset) -> list[dict[str, Any]]:
    """The EasyTPP record of every sequence (first event's time_since_last_event is 0)."""
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


def write_easytpp_json(ds: EventDataset, path: str | Path) -> None:
    """Write EasyTPP records: a JSON list (``.json``) or one record per line (``.jsonl``)."""
    path = Path(path)
    records = easytpp_records(ds)
    if path.suffix == ".jsonl":
        text = "".join(json.dumps(r) + "\n" for r in records)
    else:
        text = json.dumps(records)
    write_text(path, text)
