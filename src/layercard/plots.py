"""PNG plots of a Layer Card: one function per figure (matplotlib Figure, no pyplot), atomic."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from matplotlib.figure import Figure

from commonio.atomic import atomic_write
from layercard.decide import Placement, cost_model, greedy_order, layer_gains
from layercard.schema import Card

_DPI = 110


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=_DPI))
    return path


def _per_type(card: Card, attribute: str) -> dict[str, tuple[list[int], list[float]]]:
    series: dict[str, tuple[list[int], list[float]]] = {}
    for module in card.module_types():
        sites = [s for s in card.sites if s.module == module]
        series[module] = ([s.layer for s in sites], [getattr(s, attribute) for s in sites])
    return series


def _by_module_panels(card: Card, panels: list[tuple[str, str, bool]], path: Path) -> Path:
    fig = Figure(figsize=(9, 3.2 * len(panels)))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (attribute, label, log) in zip(axes, panels, strict=True):
        for module, (x, y) in _per_type(card, attribute).items():
            ax.plot(x, y, marker="o", markersize=3, linewidth=1.2, label=module)
        ax.set_ylabel(label)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=4)
    axes[-1].set_xlabel("layer")
    p = card.provenance
    axes[0].set_title(f"{p.model.id} on {p.task.name}")
    return _save(fig, path)


def plot_resnorm(card: Card, path: Path) -> Path:
    """Rank-r resnorm² and relative resnorm per layer, one line per module type."""
    rank = card.provenance.settings.rank
    return _by_module_panels(
        card,
        [("resnorm2_rank", f"resnorm² (rank {rank})", True),
         ("rel_resnorm", "relative resnorm", False)],
        path,
    )


def plot_conditioning(card: Card, path: Path) -> Path:
    """Condition number and noise amplification of the module inputs per layer and type."""
    return _by_module_panels(
        card,
        [("condition_number", "condition number (ridged)", True),
         ("noise_amplification", "noise amplification", True)],
        path,
    )


def plot_coupling(card: Card, path: Path) -> Path:
    """Heatmap of the layer coupling matrix ρ on [-1, 1]."""
    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.subplots()
    image = ax.imshow(card.coupling.matrix, cmap="RdBu_r", vmin=-1, vmax=1, origin="lower")
    fig.colorbar(image, ax=ax, label="ρ")
    ax.set_xlabel("layer")
    ax.set_ylabel("layer")
    ax.set_title(f"layer coupling ρ over {card.coupling.n_examples} probe examples", fontsize=9)
    return _save(fig, path)


def plot_cost(card: Card, path: Path) -> Path:
    """Step time and training memory vs lowest adapted layer: measured, fitted, checked."""
    model = cost_model(card)
    if model is None:
        raise ValueError("plot_cost: the card has no cost measurements (built with --no-cost)")
    n = card.n_layers
    depths = list(range(n))
    panels = [
        ("step seconds", model.timing.fit_seconds, model.timing.check_seconds,
         lambda d: model.predict([d])[0], 1.0),
        ("training memory (MiB)", model.memory.fit_bytes, model.memory.check_bytes,
         lambda d: model.predict([d])[1], 2.0**20),
    ]
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for ax, (label, fitted, checked, single, scale) in zip(axes, panels, strict=True):
        single_sets = [s for s in model.fit_sets if len(s) == 1]
        ax.plot(depths, [single(d) / scale for d in depths], color="C0", label="fit, one layer")
        ax.scatter([s[0] for s in single_sets], [v / scale for v in fitted[: len(single_sets)]],
                   color="C0", zorder=3, label="measured, one layer")
        multi = model.fit_sets[len(single_sets):] + model.check_sets
        measured = fitted[len(single_sets):] + checked
        ax.scatter([min(s) for s in multi], [v / scale for v in measured], marker="x",
                   color="C3", zorder=3, label="measured, multi-layer (fit check)")
        ax.set_xlabel("lowest adapted layer")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("cost vs depth (backward must reach the lowest adapted layer)", fontsize=10)
    return _save(fig, path)


def plot_gain_vs_cost(card: Card, path: Path) -> Path:
    """Predicted gain vs step time (or layer count) of single layers and the greedy ordering."""
    model = cost_model(card)
    order = greedy_order(card)
    if model is None:
        def cost(layers: list[int]) -> float:
            return float(len(layers))
        xlabel = "layers adapted"
    else:
        def cost(layers: list[int]) -> float:
            return model.predict(layers)[0]
        xlabel = "predicted step seconds"
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    singles = [cost([entry.layer]) for entry in card.layers]
    gains, source = layer_gains(card)
    ax.scatter(singles, gains, s=14, color="C0", label=f"single layer ({source})")
    prefix: list[int] = []
    xs, ys = [], []
    for layer, gain in order:
        prefix.append(layer)
        xs.append(cost(prefix))
        ys.append(gain)
    ax.plot(xs, ys, marker="o", markersize=3, color="C1", label="greedy order (cumulative)")
    for k, (x, y, (layer, _)) in enumerate(zip(xs, ys, order, strict=True)):
        if k < 8:
            ax.annotate(str(layer), (x, y), fontsize=7, xytext=(3, -9), textcoords="offset points")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("gain of the set (½ vᵀR⁻¹v)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("predicted gain vs cost; numbers: first layers picked greedily", fontsize=9)
    return _save(fig, path)


def plot_pareto(placement: Placement, path: Path) -> Path:
    """The gain-vs-cost Pareto front of layer sets (relative to all layers), and the choice."""
    everything = placement.all_layers
    kind = "time" if everything.seconds is not None else "params"
    total_cost, total_gain = everything.cost(kind), everything.gain or 1.0
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    xs = [c.cost(kind) / total_cost for c in placement.front]
    ys = [c.gain / total_gain for c in placement.front]
    ax.plot(xs, ys, marker="o", markersize=3, color="C0", label="Pareto front of layer sets")
    chosen = placement.chosen
    ax.scatter([chosen.cost(kind) / total_cost], [chosen.gain / total_gain], s=80, color="C3",
               zorder=3, label=f"chosen ({placement.objective.describe()}): "
               f"layers {', '.join(map(str, chosen.layers))}"[:90])
    ax.scatter([1.0], [1.0], s=40, marker="s", color="k", zorder=3, label="all layers")
    ax.set_xlabel(f"predicted {'step time' if kind == 'time' else 'LoRA parameters'}, "
                  "relative to all-layer LoRA")
    ax.set_ylabel(f"gain relative to all layers ({placement.gain_source})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def write_plots(card: Card, directory: Path) -> list[Path]:
    """Write every plot that the card's data supports into `directory`; the paths written."""
    plots: list[tuple[str, Callable[[Card, Path], Path]]] = [
        ("resnorm.png", plot_resnorm),
        ("conditioning.png", plot_conditioning),
        ("coupling.png", plot_coupling),
        ("gain_vs_cost.png", plot_gain_vs_cost),
    ]
    if cost_model(card) is not None:
        plots.insert(3, ("cost.png", plot_cost))
    return [plot(card, directory / name) for name, plot in plots]
