"""Report of the probe benchmark: which cheap quantity predicts the measured LoRA gains.

Reads what bench_probes.py and probe_features.py wrote under --out (runs/, cards/, features/)
and writes probe_report.json, probe_report.md and one scatter plot per task: every candidate
predictor's Spearman rank correlation with the probed single-layer gains (and, for
classification, with the probed dev accuracy), the probes' own seed-to-seed Spearman (the
ceiling any prediction can reach), whether the probes rank like longer runs, and how well set
predictions (single-layer values combined through the card's coupling) rank measured sets.
The headline predictor is chosen on --choose-on and confirmed on the other task unchanged.

    python benchmarks/probe_report.py --out benchmarks/results/probes
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from scipy.stats import spearmanr

from commonio.atomic import atomic_write, write_text
from layercard.codec import read_card
from layercard.config import LoraSettings
from layercard.decide import predicted_gain
from layercard.schema import Card

# steps (0-based) at which the probes' training loss is ranked against their final gain
TRAJECTORY_STEPS = (1, 2, 4, 6, 8, 12, 16, 20, 29)
CARD_QUANTITIES = ("predicted_gain", "resnorm2", "resnorm2_rank", "rel_resnorm", "grad_norm",
                   "max_condition_number", "max_noise_amplification")


def _spearman(x: list[float], y: list[float]) -> float:
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(spearmanr(x, y).statistic)


def load_runs(directory: Path) -> list[dict]:
    """Every finished run of one task."""
    return [json.loads(p.read_text()) for p in sorted(directory.glob("L*.json"))]


def predictors(
    card: Card, features: dict | None, *, base_loss: float, steps: int, lr: float
) -> dict[str, list[float]]:
    """Per candidate, its value for every layer: the card's quantities, depth, the gradient
    features summed over a layer's modules, and two Adam-derived predictions in nats:
    adam_first_order = steps·lr·‖μ_B‖₁ (every Adam step moves each LoRA-B coordinate by about
    lr along the sign of its gradient, from B = 0), and adam_saturating = C·(1 − exp(−that/C))
    with capacity C = base loss · rel_resnorm (the share of the gradient a linear correction of
    the layer's inputs can explain): the first-order rate at first, the capacity at most."""
    n = card.n_layers
    out = {q: [float(getattr(e, q)) for e in card.layers] for q in CARD_QUANTITIES}
    out["depth"] = [float(i) for i in range(n)]
    if features is not None:
        names = next(iter(features["sites"].values())).keys()
        for name in names:
            per_layer = [0.0] * n
            for key, values in features["sites"].items():
                per_layer[int(key.split(":")[0])] += values[name]
            out[name] = per_layer
        first = [steps * lr * v for v in out["lora_l1"]]
        out["adam_first_order"] = first
        out["adam_saturating"] = saturating([base_loss * e.rel_resnorm for e in card.layers],
                                            first)
    return out


def _feature(out: Path, task: str, suffix: str, key: str) -> list[float] | None:
    """A per-layer feature list another script wrote to <out>/features/<task>-<suffix>.json."""
    path = out / "features" / f"{task}-{suffix}.json"
    return json.loads(path.read_text())[key] if path.exists() else None


def saturating(capacity: list[float], rate: list[float]) -> list[float]:
    """C·(1 − exp(−R/C)) per layer: the first-order rate R at first, the capacity C at most."""
    return [c * (1.0 - math.exp(-r / c)) if c > 0 else 0.0
            for c, r in zip(capacity, rate, strict=True)]


def _set_prediction(values: list[float], rho: np.ndarray, layers: list[int]) -> float:
    """A set's predicted gain: ½ vᵀR⁻¹v with v = √(2·single-layer value)."""
    v2 = 2.0 * np.clip(np.asarray(values, dtype=np.float64), 0.0, None)
    return predicted_gain(v2, rho, layers)


def _candidates(out: Path, task: str, card: Card, features: dict | None, base_loss: float,
                steps: int) -> dict[str, list[float]]:
    """Every candidate predictor per layer for runs of `steps` steps: `predictors` and the
    line, correction and attribution features other scripts wrote (with the correction's Adam
    saturations)."""
    candidates = predictors(card, features, base_loss=base_loss, steps=steps,
                            lr=LoraSettings().lr)
    line = _feature(out, task, "line", "adam_line")
    if line is not None:
        candidates["adam_line"] = line
    attribution = _feature(out, task, "attribution", "attribution")
    if attribution is not None:
        candidates["attribution"] = attribution
    correction = _feature(out, task, "correction", "correction_line")
    if correction is not None:
        candidates["correction_line"] = correction
        if "adam_first_order" in candidates:
            candidates["adam_correction"] = saturating(correction,
                                                       candidates["adam_first_order"])
        if "lora_aligned" in candidates:
            aligned = [steps * LoraSettings().lr * v for v in candidates["lora_aligned"]]
            candidates["adam_aligned_correction"] = saturating(correction, aligned)
    return candidates


def task_report(out: Path, task: str, steps: int, seeds: list[int]) -> dict:
    """The comparison for one task (whatever runs have finished so far)."""
    card = read_card(out / "cards" / task / "card.json")
    feature_path = out / "features" / f"{task}.json"
    features = json.loads(feature_path.read_text()) if feature_path.exists() else None
    runs = load_runs(out / "runs" / task)
    single = {(r["layers"][0], r["seed"]): r for r in runs
              if len(r["layers"]) == 1 and r["steps"] == steps}
    first = seeds[0]
    layers = sorted(layer for layer, seed in single if seed == first)
    gains = [single[(i, first)]["gain"] for i in layers]
    accuracy = [single[(i, first)]["accuracy"] for i in layers]
    report: dict = {"task": task, "n_layers": card.n_layers, "probed_layers": layers,
                    "gains": gains, "accuracy": accuracy if accuracy and accuracy[0] is not None
                    else None}
    base = json.loads((out / "runs" / task / "base.json").read_text())
    candidates = _candidates(out, task, card, features, base["dev_loss"], steps)
    report["spearman_gain"] = {
        name: _spearman([values[i] for i in layers], gains) for name, values in candidates.items()
    }
    if report["accuracy"] is not None:
        report["spearman_accuracy"] = {
            name: _spearman([values[i] for i in layers], accuracy)
            for name, values in candidates.items()
        }
    pairs = [i for i in layers if all((i, s) in single for s in seeds)]
    report["seed_layers"] = pairs
    report["seed_spearman"] = (
        _spearman([single[(i, seeds[0])]["gain"] for i in pairs],
                  [single[(i, seeds[1])]["gain"] for i in pairs]) if len(seeds) > 1 else math.nan
    )
    longer = {(r["layers"][0], r["seed"]): r for r in runs
              if len(r["layers"]) == 1 and r["steps"] != steps}
    long_runs = {i: r for (i, seed), r in longer.items() if seed == first}
    both = [i for i in sorted(long_runs) if (i, first) in single]
    long_pairs = [i for i in both if len(seeds) > 1 and (i, seeds[1]) in longer]
    long_steps = sorted({r["steps"] for r in long_runs.values()})
    long_gains = [long_runs[i]["gain"] for i in both]
    # the predictors at the longer runs' step count (it changes the saturating ones)
    at_long = (_candidates(out, task, card, features, base["dev_loss"], long_steps[0])
               if len(long_steps) == 1 else {})
    report["long"] = {
        "layers": both,
        "steps": long_steps,
        "short_gains": [single[(i, first)]["gain"] for i in both],
        "long_gains": long_gains,
        "spearman": _spearman([single[(i, first)]["gain"] for i in both], long_gains),
        "seed_layers": long_pairs,  # the longer runs' own noise: their seed-to-seed Spearman
        "seed_spearman": _spearman([long_runs[i]["gain"] for i in long_pairs],
                                   [longer[(i, seeds[1])]["gain"] for i in long_pairs]),
        "spearman_predictors": {
            name: _spearman([values[i] for i in both], long_gains)
            for name, values in at_long.items()
        },
    }
    # a shorter probe is the probe's own first steps: how its training loss ranks the layers
    report["trajectory"] = {
        step: _spearman([-single[(i, first)]["train_losses"][step] for i in layers], gains)
        for step in TRAJECTORY_STEPS if step < steps
    }
    sets = [r for r in runs if len(r["layers"]) > 1]
    rho = np.array(card.coupling.matrix, dtype=np.float64)
    report["sets"] = {
        "layers": [r["layers"] for r in sets],
        "measured": [r["gain"] for r in sets],
        "spearman": {
            name: _spearman([_set_prediction(values, rho, r["layers"]) for r in sets],
                            [r["gain"] for r in sets])
            for name, values in candidates.items()
        },
    }
    report["values"] = {name: [values[i] for i in layers] for name, values in candidates.items()}
    return report


def calibration(x: list[float], y: list[float]) -> dict[str, float]:
    """Least-squares y ≈ slope·x + intercept and its R²."""
    if len(x) < 3:
        return {"slope": math.nan, "intercept": math.nan, "r2": math.nan}
    slope, intercept = np.polyfit(x, y, 1)
    fitted = slope * np.asarray(x) + intercept
    resid = float(((np.asarray(y) - fitted) ** 2).sum())
    total = float(((np.asarray(y) - np.mean(y)) ** 2).sum())
    return {"slope": float(slope), "intercept": float(intercept),
            "r2": 1.0 - resid / total if total > 0 else math.nan}


def _signed(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.2f}"


def _cell(values: dict[str, float], name: str) -> str:
    return _signed(values.get(name, math.nan))


def to_markdown(result: dict) -> str:
    """The report as Markdown tables."""
    tasks = result["tasks"]
    names = list(dict.fromkeys(n for t in tasks for n in t["spearman_gain"]))
    head = "| predictor | " + " | ".join(f"{t['task']} gain" for t in tasks)
    acc_tasks = [t for t in tasks if t.get("spearman_accuracy")]
    head += "".join(f" | {t['task']} accuracy" for t in acc_tasks)
    head += "".join(f" | {t['task']} sets" for t in tasks)
    head += "".join(f" | {t['task']} longer runs ({len(t['long']['layers'])})" for t in tasks)
    rows = [head + " |", "|" + "---|" * (1 + 3 * len(tasks) + len(acc_tasks))]
    for name in names:
        cells = [_cell(t["spearman_gain"], name) for t in tasks]
        cells += [_cell(t["spearman_accuracy"], name) for t in acc_tasks]
        cells += [_cell(t["sets"]["spearman"], name) for t in tasks]
        cells += [_cell(t["long"]["spearman_predictors"], name) for t in tasks]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    lines = [
        "# Probe benchmark: predicted vs measured LoRA gains",
        "",
        f"Model {result['model']}; probes: {result['steps']}-step single-layer LoRA (card "
        f"settings), seeds {result['seeds']}. Spearman rank correlation of each candidate with the "
        "probed dev-loss drop per layer (seed "
        f"{result['seeds'][0]}), with the dev accuracy, over the multi-layer sets, and with "
        "the dev-loss drop of the longer single-layer runs (predictors evaluated at their step "
        "count; number of layers in brackets).",
        "",
        *rows,
        "",
        "| task | probed layers | seed-to-seed Spearman (ceiling) | probes vs longer runs | "
        "longer runs seed-to-seed | sets |",
        "|---|---|---|---|---|---|",
    ]
    for t in tasks:
        lines.append(
            f"| {t['task']} | {len(t['probed_layers'])} | {t['seed_spearman']:+.2f} "
            f"({len(t['seed_layers'])} layers) | {t['long']['spearman']:+.2f} "
            f"({len(t['long']['layers'])} layers, {t['long']['steps']} steps) | "
            f"{_signed(t['long']['seed_spearman'])} ({len(t['long']['seed_layers'])} layers) | "
            f"{len(t['sets']['layers'])} |"
        )
    lines += ["", "Shorter probes: Spearman of the probes' training loss after step t (its "
              "negative: lower is better; every layer sees the same batches) with their final "
              "dev-loss drop. A probe of t steps costs t/" + str(result["steps"]) + " of one.",
              "", "| task | " + " | ".join(f"t = {t}" for t in tasks[0]["trajectory"]) + " |",
              "|---|" + "---|" * len(tasks[0]["trajectory"])]
    for t in tasks:
        lines.append(f"| {t['task']} | "
                     + " | ".join(f"{v:+.2f}" for v in t["trajectory"].values()) + " |")
    head = result["headline"]
    lines += [
        "",
        f"Headline predictor, chosen on {head['chosen_on']}: **{head['name']}**. Spearman: "
        + ", ".join(f"{k} {v:+.2f}" for k, v in head["spearman"].items())
        + ". Calibration (gain ≈ slope·predictor + intercept, fitted per task): "
        + "; ".join(f"{k}: slope {c['slope']:.3g}, intercept {c['intercept']:.3g}, R² "
                    f"{c['r2']:.2f}" for k, c in head["calibration"].items()),
    ]
    return "\n".join(lines) + "\n"


def plot(task: dict, name: str, path: Path) -> None:
    """Measured single-layer gain vs the headline predictor, one point per layer."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    x, y = task["values"][name], task["gains"]
    ax.scatter(x, y, s=16)
    for layer, xi, yi in zip(task["probed_layers"], x, y, strict=True):
        ax.annotate(str(layer), (xi, yi), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel(f"{name} (per layer)")
    ax.set_ylabel("probed dev-loss drop (nats)")
    ax.set_title(f"{task['task']}: Spearman {task['spearman_gain'][name]:+.2f}", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def main() -> None:
    """Write probe_report.json, probe_report.md and the scatter plots."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the bench_probes.py results")
    parser.add_argument("--tasks", nargs="+", default=["sentiment", "dialog"])
    parser.add_argument("--choose-on", default="dialog", help="task the headline is chosen on")
    parser.add_argument("--steps", type=int, default=30, help="steps of the probes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    tasks = [task_report(args.out, t, args.steps, args.seeds) for t in args.tasks]
    chooser = next(t for t in tasks if t["task"] == args.choose_on)
    scored = {k: v for k, v in chooser["spearman_gain"].items() if not math.isnan(v)}
    name = max(scored, key=scored.__getitem__)
    meta = json.loads((args.out / "runs" / args.tasks[0] / "meta.json").read_text())
    result = {
        "model": meta["settings"]["model"], "steps": args.steps, "seeds": args.seeds,
        "machine": meta["machine"], "versions": meta["versions"], "tasks": tasks,
        "headline": {
            "name": name, "chosen_on": args.choose_on,
            "spearman": {t["task"]: t["spearman_gain"][name] for t in tasks},
            "calibration": {t["task"]: calibration(t["values"][name], t["gains"]) for t in tasks},
        },
    }
    write_text(args.out / "probe_report.json", json.dumps(result, indent=1) + "\n")
    write_text(args.out / "probe_report.md", to_markdown(result))
    for t in tasks:
        plot(t, name, args.out / f"probe_{t['task']}.png")
    print(to_markdown(result))


if __name__ == "__main__":
    main()
