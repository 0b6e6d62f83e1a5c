"""Built-in datasets by name, and loading a ``--data`` value (a name or a path) as splits.

`BUILTIN_DATASETS` is the one map from a built-in name to its loader (``seed`` -> splits):
``hawkes-sim`` (the simulated preset of ``neuraltpp.simulate``) and the pycsep earthquake
catalogs of ``neuraltpp.earthquakes``. A name is used only when no file of that name exists.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from neuraltpp import earthquakes
from neuraltpp.data.containers import DataError, EventDataset, rescale
from neuraltpp.data.load import load_dataset
from neuraltpp.data.splits import split_dataset
from neuraltpp.simulate import HAWKES_SIM, simulated_splits

Loader = Callable[..., dict[str, EventDataset]]  # called as loader(seed=...)


def _hawkes_sim(*, seed: int) -> dict[str, EventDataset]:
    return simulated_splits(HAWKES_SIM, seed)[1]


BUILTIN_DATASETS: dict[str, Loader] = {
    "hawkes-sim": _hawkes_sim,
    **{
        name: functools.partial(earthquakes.load_earthquakes, name) for name in earthquakes.CATALOGS
    },
}


def load_splits(
    spec: str, *, seed: int = 0, time_scale: float | None = None
) -> dict[str, EventDataset]:
    """A built-in name or a path as train/dev/test (a single set is split 80/10/10 with
    ``seed``); ``time_scale`` divides all times."""
    path = Path(spec).expanduser()
    if spec in BUILTIN_DATASETS and not path.exists():
        splits = BUILTIN_DATASETS[spec](seed=seed)
    elif not path.exists():
        raise DataError(
            f"{path}: no such file or directory, nor a built-in dataset "
            f"({', '.join(BUILTIN_DATASETS)})"
        )
    else:
        splits = load_dataset(path)
    if set(splits) == {"all"}:
        splits = split_dataset(splits["all"], seed=seed)
    if time_scale is not None:
        splits = {s: rescale(ds, time_scale) for s, ds in splits.items()}
    return splits
