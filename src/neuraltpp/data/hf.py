"""Hugging Face ``datasets`` directories (``save_to_disk``) of EasyTPP records, one per split
(with neuraltpp's window, time scale and type names fields, as in ``neuraltpp.data.easytpp``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from neuraltpp.data.containers import DataError, EventDataset
from neuraltpp.data.easytpp import easytpp_dataset, easytpp_records
from neuraltpp.data.splits import split_name


def is_hf_dataset(path: Path) -> bool:
    """Whether ``path`` is a directory written by ``save_to_disk``."""
    return path.is_dir() and (
        (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists()
    )


def read_hf_dataset(
    path: str | Path, *, repair: Iterable[str] = (), gap_tol: float = 1e-5
) -> dict[str, EventDataset]:
    """Read a local Hugging Face ``datasets`` directory (``save_to_disk``) of EasyTPP records."""
    import datasets

    path = Path(path)
    try:
        loaded = datasets.load_from_disk(str(path))
        parts = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [("train", loaded)]
        rows = {name: part.to_list() for name, part in parts}
    except Exception as exc:  # datasets/pyarrow raise many unrelated types on damaged files
        raise DataError(
            f"{path}: not a readable datasets directory ({type(exc).__name__}: {exc})"
        ) from exc
    return {
        split_name(name): easytpp_dataset(
            records, f"{path}[{name}]", num_types=None, repair=repair, gap_tol=gap_tol
        )
        for name, records in rows.items()
    }


def write_hf_dataset(splits: dict[str, EventDataset], directory: str | Path) -> None:
    """Write a Hugging Face ``DatasetDict`` of EasyTPP records (``save_to_disk``)."""
    import datasets

    dd = datasets.DatasetDict(
        {s: datasets.Dataset.from_list(easytpp_records(ds)) for s, ds in splits.items()}
    )
    dd.save_to_disk(str(directory))
