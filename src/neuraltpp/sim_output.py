"""The files ``neuraltpp simulate`` writes: the splits in one format plus ``params.json``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from neuraltpp.data.containers import EventDataset
from neuraltpp.data.easytpp import write_easytpp_json
from neuraltpp.data.nhp import write_pickle
from neuraltpp.data.splits import split_dataset
from neuraltpp.hawkes import true_ll_per_event
from neuraltpp.metrics import write_json
from neuraltpp.simulate import HAWKES_SIM, HawkesParams, simulate_dataset

FORMATS = ("easytpp", "nhp")  # easytpp: <split>.json; nhp: <split>.pkl


@dataclass(frozen=True)
class SimulationConfig:
    """What ``neuraltpp simulate`` simulates (``seed`` also draws the split) and where it writes."""

    out: Path
    params: HawkesParams
    n_sequences: int = HAWKES_SIM.n_sequences
    horizon: float = HAWKES_SIM.horizon
    seed: int = 0
    fmt: str = "easytpp"  # one of FORMATS


def run_simulation(config: SimulationConfig) -> dict[str, EventDataset]:
    """Simulate ``n_sequences`` on ``[0, horizon]``, split them 80/10/10 and write them with
    ``params.json`` into ``out``; returns the splits."""
    ds = simulate_dataset(config.params, config.n_sequences, T=config.horizon, seed=config.seed)
    splits = split_dataset(ds, seed=config.seed)
    write_simulation(
        config.out,
        config.params,
        splits,
        fmt=config.fmt,
        horizon=config.horizon,
        seed=config.seed,
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
        out / "params.json",
    )
