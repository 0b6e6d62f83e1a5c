"""Benchmark: the card's training-time prediction against LoRA steps timed side by side.

The placement benchmark's time targets compare whole training runs, each timed while other
jobs may have shared the cores, so a ratio between two runs also measures how the load changed.
Here the layer sets of those runs (seed --seed, every strategy but KappaTune, whose modules
differ) are timed in one process, interleaved: in each round every set trains one warm-up step
and then one step on each of the same --batches training batches (the placement runs' training
rows, batch size and padding), in an order rotated from round to round, with the card's clock
(`layercard.cost.step_clock`: process CPU time on CPU). Load drift then moves every set alike
and cancels in the ratios. Per set the report gives the mean step time over rounds and batches
and its ratio to all layers, next to the card's predicted ratio (its fitted cost model) and the
ratio of the placement runs' whole training CPU times, and which sets fit --budget each way.

Each round is one JSON file under <out>/runs/<task>/ and a rerun skips finished rounds.

    python benchmarks/bench_step_cost.py --out benchmarks/results/step-cost \\
        --placement benchmarks/results/placement [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.stats import spearmanr
from torch import nn
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from bench_placement import run_meta
from commonio.atomic import atomic_write, write_text
from layercard import data
from layercard.codec import read_card
from layercard.config import LoraSettings, TrainConfig
from layercard.cost import step_clock
from layercard.decide import cost_model
from layercard.finetune import training_rows
from layercard.models import load_model
from layercard.training import lora_config, lora_training, optimizer_step

QUICK = {"rounds": 1, "batches": 1, "train_examples": 16}


def layer_sets(placement: Path, task: str, seed: int) -> dict[str, dict]:
    """{run name: its layers and whole-run training CPU seconds} of the placement runs at
    `seed` on `task` with the task's own card (transfer runs end in -from-<task>), KappaTune
    (module subsets) and refused placements left out."""
    sets = {}
    for path in sorted((placement / "runs" / task).glob(f"*-seed{seed}.json")):
        run = json.loads(path.read_text())
        if "layers" not in run or run["modules"] is not None:
            continue
        sets[path.stem] = {"layers": run["layers"], "train_cpu_seconds": run["train_cpu_seconds"],
                           "strategy": run["strategy"], "k": run["k"]}
    return sets


def training_batches(task: data.TaskData, tokenizer: PreTrainedTokenizerBase, n: int,
                     config: TrainConfig) -> list[dict]:
    """`n` batches of `config.batch_size` rows drawn without replacement (seeded by
    `config.seed`) from the rows a placement run with `config` trains on, padded alike."""
    rows = training_rows(task, tokenizer, config)
    size = config.batch_size
    picked = random.Random(config.seed).sample(range(len(rows)), min(n * size, len(rows)))
    pad = tokenizer.pad_token_id
    return [data.pad_rows([rows[i] for i in picked[j:j + size]], pad)
            for j in range(0, len(picked), size)]


def time_round(model: nn.Module, sets: dict[str, dict], batches: list[dict], settings: LoraSettings,
               order: list[str], seed: int) -> dict[str, list[float]]:
    """Step seconds (the card's clock) of each set on every batch, sets in `order`."""
    clock = step_clock(next(model.parameters()).device)
    seconds = {}
    for name in order:
        config = lora_config(model, sets[name]["layers"], settings)
        with lora_training(model, config, lr=settings.lr, seed=seed) as (peft_model, optimizer):
            optimizer_step(peft_model, optimizer, batches[0])  # warm-up
            times = []
            for batch in batches:
                start = clock()
                optimizer_step(peft_model, optimizer, batch)
                times.append(clock() - start)
        seconds[name] = times
    return seconds


def finished_round(path: Path, sets: dict[str, dict]) -> dict | None:
    """The round recorded at `path` if it timed every set (placement runs added since make it
    stale: it is timed again, so that every ratio comes from one interleaved round)."""
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return record if set(sets) <= set(record["seconds"]) else None


def budget_target(rows: list[dict], placement: Path, task: str, budget: float) -> dict | None:
    """The placement benchmark's target (b) judged by interleaved step time: the budget choice
    fits the budget and its metric (the placement report's mean over seeds) is at least that of
    every set that fits; None before the budget run and the placement report exist."""
    path = placement / "placement_report.json"
    chosen = next((r for r in rows if r["strategy"] == "budget"), None)
    if chosen is None or not path.exists():
        return None
    metrics = {(m["strategy"], m["k"]): m["mean"]
               for t in json.loads(path.read_text()) if t["task"] == task for m in t["rows"]
               if m["card_task"] == task}
    fitting = [r for r in rows if r is not chosen and r["measured_ratio"] <= budget]
    mean = metrics[("budget", chosen["k"])]
    return {"budget_ratio": chosen["measured_ratio"], "budget_metric": mean,
            "fitting": {r["run"]: metrics[(r["strategy"], r["k"])] for r in fitting},
            "met": chosen["measured_ratio"] <= budget
            and all(mean >= metrics[(r["strategy"], r["k"])] for r in fitting)}


def report(out: Path, task: str, sets: dict[str, dict], placement: Path, seed: int,
           budget: float) -> dict:
    """Step time per set over the finished rounds, its ratio to all layers within each round
    (mean ± std over rounds), the card's predicted ratio, the whole runs' ratio, the budget."""
    card_path = placement / "cards" / task / "card.json"
    rounds = [r for p in sorted((out / "runs" / task).glob("round-*.json"))
              if (r := finished_round(p, sets)) is not None]
    card = read_card(card_path)
    model = cost_model(card)
    if model is None:
        raise SystemExit(f"error: {card_path}: the card has no cost model")
    all_seconds = model.predict(range(card.n_layers))[0]
    all_name = f"all-seed{seed}"
    rows = []
    for name, info in sets.items():
        ratios = [np.mean(r["seconds"][name]) / np.mean(r["seconds"][all_name]) for r in rounds]
        run_cpu, all_cpu = info["train_cpu_seconds"], sets[all_name]["train_cpu_seconds"]
        rows.append({
            "run": name, "strategy": info["strategy"], "k": info["k"], "layers": info["layers"],
            "step_seconds": float(np.mean([t for r in rounds for t in r["seconds"][name]])),
            "measured_ratio": float(np.mean(ratios)),
            "measured_ratio_std": float(np.std(ratios, ddof=1)) if len(ratios) > 1 else None,
            "predicted_ratio": model.predict(info["layers"])[0] / all_seconds,
            "run_ratio": None if run_cpu is None or all_cpu is None else run_cpu / all_cpu,
        })
    rows.sort(key=lambda r: r["measured_ratio"])
    others = [r for r in rows if r["run"] != all_name]
    errors = [r["predicted_ratio"] / r["measured_ratio"] - 1 for r in others]
    rho = spearmanr([r["predicted_ratio"] for r in others],
                    [r["measured_ratio"] for r in others]).statistic if len(others) > 2 else None
    same: dict[tuple[int, ...], list[dict]] = {}
    for r in rows:
        same.setdefault(tuple(r["layers"]), []).append(r)
    result = {
        "task": task, "rounds": len(rounds), "budget": budget, "rows": rows,
        "identical_sets": [{"runs": [r["run"] for r in g],
                            "measured_ratios": [r["measured_ratio"] for r in g]}
                           for g in same.values() if len(g) > 1],
        "prediction_errors": {"max_abs": float(np.max(np.abs(errors))) if errors else None,
                              "mean": float(np.mean(errors)) if errors else None,
                              "spearman": None if rho is None else float(rho)},
        "fit_budget": {kind: sorted(r["run"] for r in rows if r[kind] is not None
                                    and r[kind] <= budget)
                       for kind in ("measured_ratio", "predicted_ratio", "run_ratio")},
        "load_average": [r["load_average"] for r in rounds],
    }
    result["target_b"] = budget_target(rows, placement, task, budget)
    _plot(result, out / f"step_cost_{task}.png")
    return result


def _plot(result: dict, path: Path) -> None:
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    rows = result["rows"]
    x = [r["measured_ratio"] for r in rows]
    ax.scatter(x, [r["predicted_ratio"] for r in rows], label="card's prediction")
    runs = [r for r in rows if r["run_ratio"] is not None]
    if runs:
        ax.scatter([r["measured_ratio"] for r in runs], [r["run_ratio"] for r in runs],
                   marker="x", label="whole training runs (CPU s)")
    for r in rows:
        ax.annotate(r["run"].split("-seed")[0], (r["measured_ratio"], r["predicted_ratio"]),
                    fontsize=7)
    ax.plot([0, 1.05], [0, 1.05], color="grey", lw=0.8)
    ax.axvline(result["budget"], color="red", lw=0.8, ls="--")
    ax.axhline(result["budget"], color="red", lw=0.8, ls="--", label=f"budget {result['budget']}")
    ax.set_xlabel("step time / all layers' (interleaved, measured)")
    ax.set_ylabel("ratio to all layers")
    ax.set_title(f"Training step cost: {result['task']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))


def _markdown(results: list[dict], meta: dict) -> str:
    lines = ["# Training step cost: the card's prediction against interleaved measurement", "",
             "Per layer set (the placement runs at seed "
             f"{meta['settings']['seed']}): mean step time (process CPU s, one thread) over "
             "rounds × batches, timed interleaved in one process; its ratio to all layers; the "
             "card's predicted ratio (its cost model); the ratio of the placement runs' whole "
             "training CPU times (timed in separate processes, under whatever load they had).",
             f"Machine: {meta['machine']['processor']}, {meta['machine']['cpu_count']} cores; "
             + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".", ""]
    for r in results:
        e = r["prediction_errors"]
        lines += [f"## {r['task']} ({r['rounds']} rounds; load average per round "
                  + ", ".join(f"{a[0]:.1f}" for a in r["load_average"]) + ")", "",
                  "| run | layers | step CPU s | measured ratio | predicted | whole runs |",
                  "|---|---|---|---|---|---|"]
        for row in r["rows"]:
            run = "n/a" if row["run_ratio"] is None else f"{row['run_ratio']:.2f}"
            std = row["measured_ratio_std"]
            spread = "" if std is None else f" ± {std:.2f}"
            lines.append(f"| {row['run']} | {','.join(map(str, row['layers']))} | "
                         f"{row['step_seconds']:.3f} | {row['measured_ratio']:.2f}{spread} | "
                         f"{row['predicted_ratio']:.2f} | {run} |")
        if e["max_abs"] is not None:
            rho = "n/a" if e["spearman"] is None else f"{e['spearman']:+.2f}"
            lines += ["", f"Prediction / measurement − 1: mean {e['mean']:+.1%}, largest "
                      f"{e['max_abs']:.1%}; Spearman of predicted with measured ratio {rho}."]
        for pair in r["identical_sets"]:  # the same layers under two names: the noise floor
            lines += ["", "Identical layer sets (the measurement's own spread): "
                      + ", ".join(f"{n} {v:.2f}" for n, v in zip(pair["runs"],
                                                                  pair["measured_ratios"],
                                                                  strict=True)) + "."]
        lines += ["", f"Sets within the budget {r['budget']} of all layers' time:"]
        lines += [f"- by {kind.replace('_', ' ')}: {', '.join(names) or 'none'}"
                  for kind, names in r["fit_budget"].items()]
        if (goal := r["target_b"]) is not None:
            others = ", ".join(f"{n} {v:.4f}" for n, v in goal["fitting"].items()) or "none"
            verdict = "met" if goal["met"] else "MISSED"
            lines += ["", f"Target (b) by interleaved step time: **{verdict}**: the budget "
                      f"choice takes {goal['budget_ratio']:.2f} of all layers' step "
                      f"time (budget {r['budget']}), metric {goal['budget_metric']:.4f}; the "
                      f"other sets that fit: {others}."]
        lines += ["", f"![{r['task']}](step_cost_{r['task']}.png)", ""]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument("--placement", type=Path, default=Path("benchmarks/results/placement"),
                        help="the placement benchmark's results (its runs and cards)")
    parser.add_argument("--tasks", nargs="+", default=["sentiment", "dialog"],
                        help="tasks whose placement runs to time (skipped when it has none)")
    parser.add_argument("--model", default="smollm2-135m", help="the model the runs adapted")
    parser.add_argument("--seed", type=int, default=0,
                        help="the placement runs' seed whose layer sets are timed")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--batches", type=int, default=6, help="timed steps per set and round")
    parser.add_argument("--train-examples", type=int, default=1000,
                        help="training rows the batches are drawn from (the runs' own)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--budget", type=float, default=0.6,
                        help="the time budget the placement benchmark places for")
    parser.add_argument("--quiet", dest="progress", action="store_false")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run {QUICK} (overrides those options)")
    return parser


def main() -> None:
    """Time the missing rounds of every task that has placement runs; write the report."""
    args = _parser().parse_args()
    if args.quick:
        vars(args).update(QUICK)
    torch.set_num_threads(1)  # as the placement runs (OMP_NUM_THREADS=1)
    loaded = None
    results = []
    for task in args.tasks:
        task_data = data.load_task(task, seed=args.seed)  # as a placement run at this seed
        name = task_data.name  # the placement runs' folder name
        sets = layer_sets(args.placement, name, args.seed)
        if f"all-seed{args.seed}" not in sets:  # nothing to compare with yet
            print(f"{name}: no all-layer placement run at seed {args.seed} yet; skipped")
            continue
        todo = [i for i in range(args.rounds)
                if finished_round(args.out / "runs" / name / f"round-{i}.json", sets) is None]
        if todo and loaded is None:
            loaded = load_model(args.model)
        if todo:  # the placement runs' training config (LoRA settings, batch size, rows)
            config = TrainConfig(model=args.model, task=task, train_examples=args.train_examples,
                                 max_length=args.max_length, seed=args.seed)
            batches = training_batches(task_data, loaded.tokenizer, args.batches, config)
        for i in tqdm(todo, desc=f"step cost {name}", disable=not args.progress):
            runs = list(sets)
            shift = i % len(runs)
            order = runs[shift:] + runs[:shift]
            start_load = os.getloadavg()
            seconds = time_round(loaded.model, sets, batches, config.lora_settings(),
                                 order if i % 2 == 0 else order[::-1], args.seed)
            record = {"round": i, "order": order, "seconds": seconds,
                      "load_average": [start_load[0], os.getloadavg()[0]]}
            write_text(args.out / "runs" / name / f"round-{i}.json",
                       json.dumps(record, indent=2) + "\n")
        results.append(report(args.out, name, sets, args.placement, args.seed, args.budget))
    if not results:
        raise SystemExit(f"error: --placement {args.placement}: no all-layer run at seed "
                         f"{args.seed} of {args.tasks}")
    meta = run_meta(args)
    write_text(args.out / "meta.json", json.dumps(meta, indent=2) + "\n")
    write_text(args.out / "step_cost.json", json.dumps(results, indent=2) + "\n")
    write_text(args.out / "step_cost.md", _markdown(results, meta))


if __name__ == "__main__":
    main()
