"""NHP/THP pickles: ``<split>.pkl`` holding ``dim_process`` and a split key of event-dict lists.

Each sequence is a list of dicts with ``time_since_start``, ``time_since_last_event`` and
``type_event``; pickles written by Python 2 are read with the latin-1 fallback.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from pathlib import Path

from commonio.atomic import write_bytes
from neuraltpp.data.containers import DataError, EventDataset
from neuraltpp.data.easytpp import easytpp_records
from neuraltpp.data.records import check_repair, from_records, num_types_of
from neuraltpp.data.splits import SPLIT_ALIASES, SPLITS, split_name


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
    preferred = [k for k in keys if k in (*SPLITS, *SPLIT_ALIASES)]
    if len(preferred) != 1 and len(keys) != 1:
        raise DataError(f"{path}: expected exactly one split key holding sequences, got {keys}")
    key = preferred[0] if len(preferred) == 1 else keys[0]
    rows = (
        (
            i,
            str(i),
            [e["time_since_start"] for e in seq],
            [e["time_since_last_event"] for e in seq],
            [e["type_event"] for e in seq],
        )
        for i, seq in enumerate(obj[key])
    )
    ds = from_records(
        rows,
        num_types_of(obj["dim_process"], str(path)),
        str(path),
        repair=check_repair(repair),
        gap_tol=gap_tol,
    )
    return split_name(key), ds


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
                for r in easytpp_records(ds)
            ],
        }
        write_bytes(directory / f"{split}.pkl", pickle.dumps(payload, protocol=4))
