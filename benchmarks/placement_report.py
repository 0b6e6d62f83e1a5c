"""Report of the placement benchmark: metric, loss and cost per strategy, and the targets.

Reads <out>/runs/<task>/*.json (bench_placement.py) and the cards under <out>/cards/, and
writes placement_report.json, placement_report.md and one plot per task (metric per strategy,
and metric against training time). The metric is test accuracy for classification and the
test-loss improvement over the base model for generation. Targets, each checked on what has
finished: (a) the card at k = 8 reaches ≥ 98% of all-layer LoRA's metric and is within one std
of the best fixed strategy at k = 8; (b) the --budget time=0.6 choice is at least as good as
every strategy whose measured training time fits 0.6 of all-layer training's; (c) card build
plus card-guided training takes less time than all-layer training. Times in the targets and the
plot are process CPU seconds (wall time grows when other jobs share the cores; CPU time does not);
a run from before CPU time was recorded is listed as unmeasured.

    python benchmarks/placement_report.py --out benchmarks/results/placement
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from commonio.atomic import atomic_write, write_text
from layercard.codec import read_card

FIXED = ("first", "middle", "last", "uniform", "random")


def metric(record: dict, base: dict) -> float:
    """The run's headline metric on test: accuracy, or the loss improvement over the base."""
    test = record["test"]
    if test["accuracy"] is not None:
        return float(test["accuracy"])
    return float(base["test"]["loss"] - test["loss"])


def _label(r: dict) -> str:
    size = "" if r["strategy"] in ("all", "budget") else f"-{r['k']}"
    name = "budget time=0.6" if r["strategy"] == "budget" else r["strategy"]
    return f"{name}{size}" + ("" if r["card_task"] == r["task"] else f" (card of {r['card_task']})")


def _mean_or_nan(values: list[float | None]) -> float:
    """Mean of values a run recorded; NaN if one did not (runs from before it was recorded)."""
    return math.nan if None in values else float(np.mean(values))


def _summary(group: list[dict], base: dict) -> dict:
    values = [metric(r, base) for r in group]
    mean = float(np.mean(values))
    return {
        "label": _label(group[0]), "strategy": group[0]["strategy"], "k": group[0]["k"],
        "card_task": group[0]["card_task"], "seeds": [r["seed"] for r in group],
        "metric": values, "mean": mean,
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
        "test_loss": float(np.mean([r["test"]["loss"] for r in group])),
        "dev_loss": float(np.mean([r["dev"]["loss"] for r in group])),
        "train_seconds": float(np.mean([r["train_seconds"] for r in group])),
        "train_cpu_seconds": _mean_or_nan([r.get("train_cpu_seconds") for r in group]),
        "peak_memory_bytes": max(r["peak_memory_bytes"] for r in group),
        "trainable_params": group[0]["trainable_params"], "layers": group[0]["layers"],
    }


def task_report(out: Path, task: str) -> dict:
    """The strategies' summaries and the targets of one task (finished runs only)."""
    folder = out / "runs" / task
    base = json.loads((folder / "base.json").read_text())
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))
               if p.name != "base.json"]
    runs = [r for r in records if "infeasible" not in r]  # a placement that refused: no run
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["strategy"], r["k"], r["card_task"]), []).append(r)
    rows = sorted((_summary(g, base) for g in groups.values()),
                  key=lambda s: (s["card_task"] != task, -s["k"], -s["mean"]))
    by = {(s["strategy"], s["k"], s["card_task"]): s for s in rows}
    report = {"task": task, "base": base, "rows": rows, "targets": {}}
    everything, card8 = by.get(("all", 8, task)), by.get(("card", 8, task))
    fixed8 = [by[(s, 8, task)] for s in FIXED if (s, 8, task) in by]
    if everything and card8 and fixed8:
        best = max(fixed8, key=lambda s: s["mean"])
        std = card8["std"] if math.isfinite(card8["std"]) else 0.0
        report["targets"]["a"] = {
            "share_of_all": card8["mean"] / everything["mean"] if everything["mean"] else math.nan,
            "best_fixed": best["label"], "best_fixed_mean": best["mean"],
            "met": (card8["mean"] >= 0.98 * everything["mean"]
                    and card8["mean"] + std >= best["mean"]),
        }
    budget = by.get(("budget", 8, task))
    refused = [r["infeasible"] for r in records if r["strategy"] == "budget" and "infeasible" in r]
    if refused:
        report["targets"]["b"] = {"met": False, "no_run": refused[0]}
    if everything and budget:
        limit = 0.6 * everything["train_cpu_seconds"]  # NaN (no target met) if unmeasured
        others = [s for s in rows if s is not budget]
        fitting = [s for s in others if s["train_cpu_seconds"] <= limit]
        report["targets"]["b"] = {
            "time_limit_cpu_seconds": limit, "fitting": [s["label"] for s in fitting],
            "unmeasured": [s["label"] for s in others if math.isnan(s["train_cpu_seconds"])],
            "budget_train_cpu_seconds": budget["train_cpu_seconds"],
            "met": budget["train_cpu_seconds"] <= limit
            and all(budget["mean"] >= s["mean"] for s in fitting),
        }
    if everything and card8:
        card = read_card(out / "cards" / task / "card.json")
        card_seconds = card.timings.stages.get("total_cpu", math.nan)  # NaN: an older card
        report["targets"]["c"] = {
            "card_build_cpu_seconds": card_seconds,
            "card_train_cpu_seconds": card8["train_cpu_seconds"],
            "all_train_cpu_seconds": everything["train_cpu_seconds"],
            "met": card_seconds + card8["train_cpu_seconds"] < everything["train_cpu_seconds"],
        }
    return report


def _plot(report: dict, path: Path) -> None:
    fig = Figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2)
    rows = report["rows"]
    y = np.arange(len(rows))
    left.barh(y, [s["mean"] for s in rows],
              xerr=[0 if math.isnan(s["std"]) else s["std"] for s in rows], color="#4c72b0")
    left.set_yticks(y, [s["label"] for s in rows], fontsize=7)
    left.invert_yaxis()
    kind = "accuracy" if report["base"]["test"]["accuracy"] is not None else "loss improvement"
    left.set_xlabel(f"test {kind} (mean ± std over seeds)")
    for s in rows:
        right.scatter(s["train_cpu_seconds"], s["mean"], color="#c44e52" if s["strategy"] in (
            "card", "budget") else "#4c72b0")
        right.annotate(s["label"], (s["train_cpu_seconds"], s["mean"]), fontsize=6)
    right.set_xlabel("training CPU seconds (one thread)")
    right.set_ylabel(f"test {kind}")
    fig.suptitle(f"{report['task']}: LoRA placement strategies")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))


def _markdown(reports: list[dict]) -> str:
    lines = ["# Placement benchmark: card-guided LoRA vs all layers, fixed strategies, KappaTune",
             "", "Identical LoRA config in every run; metric: test accuracy (sentiment) or "
             "test-loss improvement over the base model (dialog). Mean ± std over seeds. Train s: "
             "wall time (Trainer's train_runtime; other processes sharing the cores lengthen "
             "it); CPU s: the process's CPU time in training (one thread; less changed by them "
             "than the wall time, but not unchanged: sentiment's budget choice took 190 CPU s "
             "alone and 290-295 s beside other jobs; n/a for runs from before it was "
             "recorded). The time targets use the CPU time.", ""]
    for rep in reports:
        lines += [f"## {rep['task']}", "", "| strategy | seeds | metric | test loss | dev loss "
                  "| train s | CPU s | peak MiB | params | layers (first seed) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for s in rep["rows"]:
            std = "" if math.isnan(s["std"]) else f" ± {s['std']:.4f}"
            cpu = "n/a" if math.isnan(s["train_cpu_seconds"]) else f"{s['train_cpu_seconds']:.0f}"
            lines.append(
                f"| {s['label']} | {len(s['seeds'])} | {s['mean']:.4f}{std} | {s['test_loss']:.4f}"
                f" | {s['dev_loss']:.4f} | {s['train_seconds']:.0f} | {cpu} | "
                f"{s['peak_memory_bytes'] / 2**20:.0f} | {s['trainable_params']} | "
                f"{','.join(map(str, s['layers']))} |")
        lines.append("")
        for name, target in sorted(rep["targets"].items()):
            lines.append(f"- target ({name}): {'met' if target['met'] else 'MISSED'}: "
                         + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                     for k, v in target.items() if k != "met"))
        lines += ["", f"![{rep['task']}](placement_{rep['task']}.png)", ""]
    return "\n".join(lines)


def write_report(out: Path) -> list[dict]:
    """Rewrite placement_report.json/.md and the plots from the finished runs."""
    reports = [task_report(out, folder.name) for folder in sorted((out / "runs").iterdir())
               if (folder / "base.json").exists()]
    for rep in reports:
        if rep["rows"]:
            _plot(rep, out / f"placement_{rep['task']}.png")
    write_text(out / "placement_report.json", json.dumps(reports, indent=2) + "\n")
    write_text(out / "placement_report.md", _markdown(reports))
    return reports


def main() -> None:
    """Write the report of --out."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the bench_placement.py results")
    write_report(parser.parse_args().out)


if __name__ == "__main__":
    main()
