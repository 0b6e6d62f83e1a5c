"""The files ``neuraltpp simulate`` writes: the splits in one format plus ``params.json``.

The directory appears whole or not at all (written beside ``out``, then moved in). An existing
``out`` must be empty, or hold an earlier simulated dataset and only that (its ``params.json``
and split files), which ``overwrite`` replaces; anything else raises `OutDirError`.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from commonio.atomic import replace_dir
from neuraltpp.data.containers import EventDataset
from neuraltpp.data.easytpp import write_easytpp_json
from neuraltpp.data.nhp import write_pickle
from neuraltpp.data.splits import SPLITS, split_dataset, split_sizes
from neuraltpp.hawkes import true_ll_per_event
from neuraltpp.metrics import write_json
from neuraltpp.simulate import HAWKES_SIM, HawkesParams, simulate_dataset

FORMATS = ("easytpp", "nhp")  # easytpp: <split>.json; nhp: <split>.pkl
PARAMS_FILE = "params.json"
PARAMS_KEYS = {"mu", "alpha", "beta", "true_ll_per_event"}  # what marks a simulated dataset
OUTPUT_FILES = {PARAMS_FILE} | {f"{s}{ext}" for s in SPLITS for ext in (".json", ".pkl")}
MIN_SEQUENCES = next(n for n in itertools.count(1) if min(split_sizes(n)) > 0)  # 8


class OutDirError(ValueError):
    """``out`` cannot take the simulated dataset (a file, foreign content, or an earlier
    dataset without ``overwrite``)."""


@dataclass(frozen=True)
class SimulationConfig:
    """What ``neuraltpp simulate`` simulates (``seed`` also draws the split) and where it writes."""

    out: Path
    params: HawkesParams
    n_sequences: int = HAWKES_SIM.n_sequences
    horizon: float = HAWKES_SIM.horizon
    seed: int = 0
    fmt: str = "easytpp"  # one of FORMATS
    overwrite: bool = False  # replace an earlier simulated dataset in ``out``

    def __post_init__(self) -> None:
        if self.n_sequences < MIN_SEQUENCES:
            raise ValueError(
                f"n_sequences: {self.n_sequences} sequences leave a split empty (80/10/10); "
                f"simulate at least {MIN_SEQUENCES}"
            )


def _is_simulation(out: Path) -> bool:
    """Whether ``out/params.json`` is the JSON object an earlier simulation wrote."""
    try:
        record = json.loads((out / PARAMS_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(record, dict) and record.keys() >= PARAMS_KEYS


def check_out_dir(out: Path, overwrite: bool) -> None:
    """OutDirError unless ``out`` can take a simulated dataset: absent, empty, or an earlier
    one (params.json and split files only) when ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise OutDirError(f"{out} exists and is not a directory")
    entries = sorted(p.name for p in out.iterdir()) if out.exists() else []
    if not entries:
        return
    if not _is_simulation(out):
        raise OutDirError(
            f"{out} is not empty and holds no simulated dataset ({PARAMS_FILE}); choose another "
            "directory"
        )
    foreign = [name for name in entries if name not in OUTPUT_FILES]
    if foreign:
        raise OutDirError(
            f"{out} holds a simulated dataset but also {', '.join(foreign)}, which simulate did "
            "not write; move them or choose another directory"
        )
    if not overwrite:
        raise OutDirError(f"{out} already holds a simulated dataset; --overwrite replaces it")


def run_simulation(config: SimulationConfig) -> dict[str, EventDataset]:
    """Simulate ``n_sequences`` on ``[0, horizon]``, split them 80/10/10 and write them with
    ``params.json`` into ``out`` (checked first); returns the splits."""
    check_out_dir(config.out, config.overwrite)
    ds = simulate_dataset(config.params, config.n_sequences, T=config.horizon, seed=config.seed)
    splits = split_dataset(ds, seed=config.seed)
    replace_dir(
        config.out,
        lambda staging: write_simulation(
            staging,
            config.params,
            splits,
            fmt=config.fmt,
            horizon=config.horizon,
            seed=config.seed,
        ),
    )
    return splits


def write_simulation(
    out: Path,
    params: HawkesParams,
    splits: dict[str, EventDataset],
    *,
    fmt: str,
    horizon: float,
    seed: int,
) -> None:
    """Write each split (``fmt``: one of FORMATS) and ``params.json``: the parameters, the
    settings and the true process's LL per event per split under both first-event conventions."""
    if fmt == "nhp":
        write_pickle(splits, out)
    else:
        for name, part in splits.items():
            write_easytpp_json(part, out / f"{name}.json")
    write_json(
        {
            "mu": params.mu.tolist(),
            "alpha": params.alpha.tolist(),
            "beta": params.beta,
            "spectral_radius": params.spectral_radius,
            "horizon": horizon,
            "seed": seed,
            "true_ll_per_event": {
                name: true_ll_per_event(params, part) for name, part in splits.items() if len(part)
            },
        },
        out / PARAMS_FILE,
    )
