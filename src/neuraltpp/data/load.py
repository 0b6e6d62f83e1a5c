"""Loading a path in any supported format as ``{split: EventDataset}``, the format found from
the path (built-in dataset names are resolved above this package, in ``neuraltpp.builtin``).

A directory holds ``train``/``dev``/``test`` files of one format or is a ``datasets``
directory; a single file yields one split named after its split key (pickle) or its stem
(``train``/``dev``/``test``/``valid``), else ``"all"``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from neuraltpp.data.containers import DataError, EventDataset, rescale
from neuraltpp.data.easytpp import JSON_SUFFIXES, read_easytpp_json
from neuraltpp.data.hf import is_hf_dataset, read_hf_dataset
from neuraltpp.data.nhp import read_pickle
from neuraltpp.data.splits import SPLITS, split_name
from neuraltpp.data.tables import TABLE_SUFFIXES, read_tables


def _split_files(directory: Path) -> dict[str, Path]:
    """Find ``<split>.<ext>`` files in a directory (one format only)."""
    found: dict[str, dict[str, Path]] = {}
    for p in sorted(directory.iterdir()):
        split = split_name(p.stem)
        if split in SPLITS and p.suffix in (".pkl", *JSON_SUFFIXES, *TABLE_SUFFIXES):
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


def _read_files(
    files: dict[str, Path], *, repair: Iterable[str], gap_tol: float
) -> dict[str, EventDataset]:
    suffix = next(iter(files.values())).suffix
    if suffix in TABLE_SUFFIXES:
        return read_tables(files, repair=repair)
    if suffix in JSON_SUFFIXES:
        return {s: read_easytpp_json(p, repair=repair, gap_tol=gap_tol) for s, p in files.items()}
    if suffix == ".pkl":
        out = {}
        for split, p in files.items():
            key, ds = read_pickle(p, repair=repair, gap_tol=gap_tol)
            out[split if split != "all" else key] = ds
        return out
    raise DataError(f"{next(iter(files.values()))}: unsupported file type {suffix!r}")


def load_dataset(
    path: str | Path,
    *,
    repair: Iterable[str] = (),
    time_scale: float | None = None,
    gap_tol: float = 1e-5,
) -> dict[str, EventDataset]:
    """Load a file or directory as {split: EventDataset}; ``time_scale`` divides all times."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if is_hf_dataset(path):
        splits = read_hf_dataset(path, repair=repair, gap_tol=gap_tol)
    elif path.is_dir():
        splits = _read_files(_split_files(path), repair=repair, gap_tol=gap_tol)
    else:
        stem = split_name(path.stem)
        split = stem if stem in SPLITS else "all"
        splits = _read_files({split: path}, repair=repair, gap_tol=gap_tol)
    splits = _consistent(splits, str(path))
    if time_scale is not None:
        splits = {s: rescale(ds, time_scale) for s, ds in splits.items()}
    return splits
