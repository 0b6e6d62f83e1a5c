"""PNG of a model's learned intensity per event type over one sequence, events marked as ticks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from commonio.atomic import atomic_write
from neuraltpp.data.batching import pad_sequences
from neuraltpp.data.containers import EventSequence
from neuraltpp.models import TPPModel


@dataclass
class IntensityCurve:
    """lambda_k(t) on a grid: ``times`` [M] (absolute), ``intensity`` [M, K], and the events.

    Between events j and j+1 the curve uses h_j (the state that has seen events 0..j); the
    grid includes each interval's right end, where the intensity scores event j+1.
    """

    times: np.ndarray
    intensity: np.ndarray
    event_times: np.ndarray
    event_types: np.ndarray


@torch.no_grad()
def intensity_curve(
    model: TPPModel, seq: EventSequence, *, points_per_interval: int = 32
) -> IntensityCurve:
    """Evaluate every type's intensity from the first event to the window end (or last event)."""
    if points_per_interval < 2:
        raise ValueError(f"points_per_interval must be >= 2, got {points_per_interval}")
    model.eval()
    batch = pad_sequences([seq])
    h = model.hidden(batch)[0]
    times = batch.times[0]
    ends = torch.cat([times[1:], batch.window_end])
    gaps = (ends - times).clamp_min(0.0)
    frac = torch.linspace(0.0, 1.0, points_per_interval, dtype=torch.float64)
    dt = gaps.unsqueeze(-1) * frac  # [L, S]
    lam = model.intensity(h, dt)  # [L, S, K]
    grid = (times.unsqueeze(-1) + dt).reshape(-1)
    lam = lam.reshape(-1, lam.shape[-1])
    keep = torch.ones_like(grid, dtype=torch.bool)
    keep[-points_per_interval:] = gaps[-1] > 0  # no tail segment when the window ends at t_n
    return IntensityCurve(
        times=grid[keep].numpy(),
        intensity=lam[keep].double().numpy(),
        event_times=seq.times.copy(),
        event_types=seq.types.copy(),
    )


def plot_intensity(
    model: TPPModel,
    seq: EventSequence,
    path: str | Path,
    *,
    type_names: list[str] | None = None,
    title: str | None = None,
    time_unit: str | None = None,
    points_per_interval: int = 32,
) -> Path:
    """Write a PNG of lambda_k(t) per type over ``seq`` with its events as coloured ticks."""
    path = Path(path)
    curve = intensity_curve(model, seq, points_per_interval=points_per_interval)
    k_types = curve.intensity.shape[1]
    names = type_names or [f"type {k}" for k in range(k_types)]
    if len(names) != k_types:
        raise ValueError(f"type_names has {len(names)} names for {k_types} types")
    fig = Figure(figsize=(10, 5), constrained_layout=True)
    ax, ax_ev = fig.subplots(2, 1, sharex=True, height_ratios=[4, 1])
    colours = [f"C{k % 10}" for k in range(k_types)]
    for k in range(k_types):
        ax.plot(curve.times, curve.intensity[:, k], color=colours[k], lw=1.0, label=names[k])
    ax.set_ylabel(f"intensity λ_k(t) (per {time_unit})" if time_unit else "intensity λ_k(t)")
    ax.set_title(title or f"learned intensity, sequence {seq.seq_id}")
    ax.legend(loc="upper right", fontsize="small", ncols=min(k_types, 5))
    positions = [curve.event_times[curve.event_types == k] for k in range(k_types)]
    ax_ev.eventplot(positions, colors=colours, lineoffsets=np.arange(k_types), linelengths=0.8)
    ax_ev.set_yticks(np.arange(k_types), names, fontsize="small")
    ax_ev.set_xlabel(f"time ({time_unit})" if time_unit else "time")
    ax_ev.set_ylabel("events")
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    return path
