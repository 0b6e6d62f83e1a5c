"""The files ``neuraltpp simulate`` writes: the splits in one format plus ``params.json``."""

from __future__ import annotations

from pathlib import Path

from neuraltpp.data.containers import EventDataset
from neuraltpp.data.easytpp import write_easytpp_json
from neuraltpp.data.nhp import write_pickle
from neuraltpp.hawkes import true_ll_per_event
from neuraltpp.metrics import write_json
from neuraltpp.simulate import HawkesParams

FORMATS = ("easytpp", "nhp")  # easytpp: <split>.json; nhp: <split>.pkl


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
