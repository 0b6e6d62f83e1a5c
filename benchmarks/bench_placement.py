"""Benchmark: card-guided LoRA placement against all layers, fixed strategies and KappaTune.

Every run is `layercard.finetune.train` with the identical LoRA config (rank, alpha, modules,
lr, steps, batch, seed) on the chosen layers, scored by `layercard.evaluation.evaluate` on the
test split (metric: label accuracy for classification, completion-loss improvement over the
base model for generation) and on the dev split (loss). Per task, in order of need:
k = 8 for every strategy and the --budget time=0.6 choice at the first seed, then the card at
k = 4 with the fixed strategies it is compared with, the card of the other task (transfer),
then the remaining seeds (3 at k = 8, 2 at k = 4).

Run results are written one file each under <out>/runs/<task>/ as they finish, and a rerun
skips finished ones, so the benchmark can be completed over several sittings; adapters and
checkpoints go to --work (outside the repository), and a run interrupted there is rerun from
the start (its training time must be one uninterrupted measurement). The card of each task
(with its cost model) is built once into <out>/cards/<task>/. The report (Markdown table,
JSON, plots) is rewritten from whatever has finished after every run.

    python benchmarks/bench_placement.py --out benchmarks/results/placement [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from tqdm import tqdm

from commonio.atomic import write_text
from layercard import data
from layercard.build import build, library_versions, machine_info
from layercard.codec import read_card
from layercard.config import BuildConfig, CostSettings, TrainConfig
from layercard.decide import PlacementError
from layercard.evaluation import EvalConfig, evaluate
from layercard.finetune import train
from layercard.resources import cache_dir
from placement_report import write_report

K8 = ("all", "card", "middle", "first", "last", "uniform", "random", "gradnorm", "resnorm",
      "kappa")
K4 = ("card", "middle", "uniform", "random")
STRATEGIES = (*K8, "budget")  # what --strategies chooses from; none given means all
QUICK = {"train_examples": 16, "eval_examples": 8, "dev_examples": 8, "probe_examples": 16}


def plan(tasks: list[str], seeds: list[int]) -> list[tuple[str, str, int, int, str]]:
    """(task, strategy, k, seed, card task) of every run, most needed first."""
    runs = []
    for i, seed in enumerate(seeds[:3]):
        for task in tasks:
            other = next((t for t in tasks if t != task), task)
            runs += [(task, s, 8, seed, task) for s in K8]
            runs.append((task, "budget", 8, seed, task))
            if i < 2:
                runs += [(task, s, 4, seed, task) for s in K4]
            if other != task:
                runs.append((task, "card", 8, seed, other))
    return runs


def run_name(strategy: str, k: int, seed: int, card_task: str, task: str) -> str:
    """File stem of one run, e.g. card-k8-seed0 or card-k8-seed0-from-dialog."""
    size = "" if strategy in ("all", "budget") else f"-k{k}"
    transfer = "" if card_task == task else f"-from-{card_task}"
    return f"{strategy}{size}-seed{seed}{transfer}"


def _card(args: argparse.Namespace, task: str) -> Path:
    """The task's card (with cost) under <out>/cards/<task>/, built on first use."""
    out = args.out / "cards" / data.load_task(task).name
    if not (out / "card.json").exists():
        config = BuildConfig(
            model=args.model, task=task, probe_examples=args.probe_examples,
            coupling_examples=min(64, args.probe_examples), max_length=args.max_length,
            progress=args.progress,
            cost_settings=CostSettings(depths=2, timed_steps=1) if args.quick else CostSettings(),
        )
        build(config, out)
    return out


def _scores(run: Path | None, args: argparse.Namespace, task: str, split: str,
            examples: int | None = None) -> dict:
    """evaluate() of a run (or the base model with run None) on a split, as a dict."""
    config = EvalConfig(run=None if run is None else str(run), model=args.model, task=task,
                        split=split, examples=examples or args.eval_examples,
                        max_length=args.max_length)
    if run is not None:
        config = replace(config, model=None, task=None)
    return asdict(evaluate(config))


def one_run(args: argparse.Namespace, task: str, strategy: str, k: int, seed: int,
            card_task: str) -> dict:
    """Train and score one run; the record written to <out>/runs/<task>/."""
    name = run_name(strategy, k, seed, card_task, task)
    work = args.work / data.load_task(task).name / name
    n_layers = read_card(_card(args, task) / "card.json").n_layers
    config = TrainConfig(
        model=args.model, task=task, layers="auto" if strategy == "budget" else strategy,
        k=min(k, n_layers),  # the planned k, clipped on models with fewer layers (--quick)
        budget="time=0.6" if strategy == "budget" else "",
        card=str(_card(args, card_task)) if strategy in ("card", "gradnorm", "resnorm",
                                                         "budget") else "",
        train_examples=args.train_examples, max_length=args.max_length, seed=seed,
        progress=args.progress,
    )
    if not (work / "train.json").exists():
        if work.exists():  # an interrupted run of this benchmark: rerun it whole, so that its
            shutil.rmtree(work)  # training time is one uninterrupted measurement
        try:
            train(config, work)
        except PlacementError as err:  # the card's cost model fits no set under the budget
            return {"task": task, "strategy": strategy, "k": k, "seed": seed,
                    "card_task": card_task, "infeasible": str(err)}
    summary = json.loads((work / "train.json").read_text())
    return {
        "task": task, "strategy": strategy, "k": k, "seed": seed, "card_task": card_task,
        "layers": summary["choice"]["layers"], "modules": summary["choice"]["modules"],
        "trainable_params": summary["trainable_params"], "steps": summary["steps"],
        "train_seconds": summary["train_seconds"],
        "train_cpu_seconds": summary.get("train_cpu_seconds"), "peak_memory_bytes":
        summary["peak_memory_bytes"], "memory_method": summary["memory_method"],
        "test": _scores(work, args, task, "test"),
        "dev": _scores(work, args, task, "dev", examples=args.dev_examples),
    }


def run_meta(args: argparse.Namespace) -> dict:
    """meta.json of a layercard benchmark: its settings, machine, library versions, threads."""
    return {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": asdict(machine_info()), "versions": library_versions(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version()}


def recorded_meta(path: Path, args: argparse.Namespace) -> dict:
    """run_meta(args) with its run selection (tasks, seeds, strategies; no --strategies means
    all) joined to the one already in ``path``, so that meta.json describes every run under
    --out and not only the last sitting's."""
    meta = run_meta(args)
    settings = meta["settings"]
    before = json.loads(path.read_text())["settings"] if path.exists() else {}
    for key in ("tasks", "seeds", "strategies"):
        default = STRATEGIES if key == "strategies" else ()
        settings[key] = list(dict.fromkeys([*(before.get(key) or default),
                                            *(settings[key] or default)]))
    return meta


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument("--work", type=Path, default=cache_dir() / "bench-placement",
                        help="adapters and checkpoints (large; outside the repository)")
    parser.add_argument("--model", default="smollm2-135m", help="the model every run adapts")
    parser.add_argument("--tasks", nargs="+", default=["sentiment", "dialog"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-examples", type=int, default=1000,
                        help="training examples of every run (one epoch)")
    parser.add_argument("--eval-examples", type=int, default=None,
                        help="score the first N test/dev examples (default: all)")
    parser.add_argument("--dev-examples", type=int, default=200,
                        help="dev examples scored per run (the first ones; dev loss only informs)")
    parser.add_argument("--probe-examples", type=int, default=256,
                        help="probe examples of the cards")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--max-runs", type=int, default=None,
                        help="stop after this many new runs (a sitting's worth)")
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=None,
                        help="run only these strategies, seed by seed in this order (default: "
                        "all, in plan order)")
    parser.add_argument("--quiet", dest="progress", action="store_false")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run with tiny sizes {QUICK} (overrides those options)")
    return parser


def main() -> None:
    """Run the missing runs in plan order, rewriting the report after each."""
    args = _parser().parse_args()
    if args.quick:
        vars(args).update(QUICK)
    args.out.mkdir(parents=True, exist_ok=True)
    meta_path = args.out / "meta.json"
    write_text(meta_path, json.dumps(recorded_meta(meta_path, args), indent=2) + "\n")
    names = {t: data.load_task(t).name for t in args.tasks}
    for task in args.tasks:
        base = args.out / "runs" / names[task] / "base.json"
        if not base.exists():
            record = {"test": _scores(None, args, task, "test"),
                      "dev": _scores(None, args, task, "dev", examples=args.dev_examples)}
            write_text(base, json.dumps(record, indent=2) + "\n")
    todo = [r for r in plan(args.tasks, args.seeds)
            if not (args.out / "runs" / names[r[0]] / f"{run_name(*r[1:], r[0])}.json").exists()]
    if args.strategies:  # per seed, in the order asked for
        todo = sorted((r for r in todo if r[1] in args.strategies),
                      key=lambda r: (args.seeds.index(r[3]), args.strategies.index(r[1])))
    todo = todo[: args.max_runs]
    for task, strategy, k, seed, card_task in tqdm(todo, desc="placement runs",
                                                   disable=not args.progress):
        start = time.perf_counter()
        record = one_run(args, task, strategy, k, seed, card_task)
        record["seconds"] = time.perf_counter() - start
        name = run_name(strategy, k, seed, card_task, task)
        path = args.out / "runs" / names[task] / f"{name}.json"
        write_text(path, json.dumps(record, indent=2) + "\n")
        write_report(args.out)
    write_report(args.out)


if __name__ == "__main__":
    main()
