"""Benchmark: measured LoRA gains per layer and per layer set, the ground truth of the card.

For each task: the card's own single-layer probes (`layercard.probe` settings: LoRA r=8, AdamW
lr 1e-3, the first --probe-examples training examples, one batch per step, scored on the first
--probe-dev-examples dev examples) on every layer, at two seeds (the probes' own noise); longer
single-layer runs (--long-steps) on a few layers, at every seed (do probes rank like longer
training? how noisy is that ranking?); and
multi-layer sets including all layers at the probe length (checks set predictions). Each run
records the dev-loss drop and, for classification tasks, the dev accuracy by label scoring.

Runs are written one file each under <out>/runs/ as they finish; a rerun skips finished runs,
so the benchmark can be completed over several sittings. The card of each task (no probes, no
cost) is built once into <out>/cards/<task>/. `benchmarks/probe_report.py` turns the results
into the predictor comparison.

    python benchmarks/bench_probes.py --out benchmarks/results/probes [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from commonio.atomic import write_text
from layercard import data
from layercard.build import build, library_versions, machine_info
from layercard.config import BuildConfig, add_config_arguments, config_from_args
from layercard.costmodel import depth_layer_sets
from layercard.models import LoadedModel, load_model
from layercard.scoring import label_scores
from layercard.training import dev_loss, lora_adapter, lora_config, train_lora

QUICK = {"probe_examples": 16, "probe_dev_examples": 8, "probe_steps": 2, "long_steps": 4}


@dataclass
class Run:
    """One LoRA run from the frozen base model and what it measured on the dev examples."""

    task: str
    layers: list[int]
    steps: int
    seed: int
    dev_loss: float
    gain: float  # base dev loss − adapted dev loss (nats per completion token)
    accuracy: float | None  # label-scoring dev accuracy (classification tasks)
    train_losses: list[float]
    trainable_params: int
    seconds: float


def run_name(layers: list[int], steps: int, seed: int) -> str:
    """File stem of a run: layers as ranges (0-29 for all 30), steps and seed."""
    spans, start = [], layers[0]
    for prev, cur in zip(layers, [*layers[1:], None], strict=True):
        if cur != prev + 1:
            spans.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = cur
    return f"L{'_'.join(spans)}-s{steps}-seed{seed}"


def layer_sets(n_layers: int) -> list[list[int]]:
    """Multi-layer sets the set predictions are checked on: all layers, contiguous blocks at the
    bottom / middle / top, spread-out sets and pairs of neighbours and of distant layers."""
    n, q = n_layers, max(n_layers // 4, 1)
    mid = n // 2
    candidates = [
        list(range(n)),
        list(range(0, 4)),
        list(range(mid - 2, mid + 2)),
        list(range(n - 4, n)),
        list(range(0, n, 4)),
        list(range(2, n, 8)),
        [q, 2 * q, 3 * q],
        list(range(mid - 4, mid + 4)),
        [mid, mid + 1],
        [0, n - 1],
        list(range(n // 2, n)),
        list(range(0, n // 2)),
    ]
    out: list[list[int]] = []
    for s in candidates:
        s = sorted({i for i in s if 0 <= i < n})
        if len(s) > 1 and s not in out:
            out.append(s)
    return out


def _scores(
    model: torch.nn.Module, loaded: LoadedModel, task: data.TaskData, config: BuildConfig,
    dev: list, dev_examples: list,
) -> tuple[float, float | None]:
    """(dev loss, label-scoring dev accuracy or None) of `model` on the dev examples."""
    loss = dev_loss(model, dev)
    if task.kind != "classification":
        return loss, None
    accuracy, _ = label_scores(
        model, loaded.tokenizer, dev_examples, task.label_words,
        max_length=config.max_length, batch_size=config.batch_size,
    )
    return loss, accuracy


# in the order they run, most needed first, each for every task: single layers at the first
# seed (what predictors are ranked against), multi-layer sets, longer runs, the other seeds
PHASES = ("even", "odd", "set", "long", "even-seeds", "odd-seeds", "long-seeds")


def plan(args: argparse.Namespace, n_layers: int, steps: int) -> list[tuple[str, list, int, int]]:
    """(phase, layers, steps, seed) of every run: single layers at the first seed and at the
    other seeds (the probes' own noise), even layers before odd ones so that partial results
    span the depth; longer single-layer runs ("long", and at the other seeds "long-seeds": their
    own noise); multi-layer sets ("set")."""
    first = args.seeds[0]
    runs = []
    for parity in ("even", "odd"):
        layers = range(0 if parity == "even" else 1, n_layers, 2)
        runs += [(parity, [i], steps, first) for i in layers]
        runs += [(f"{parity}-seeds", [i], steps, seed) for seed in args.seeds[1:] for i in layers]
    long = depth_layer_sets(n_layers, args.long_count)
    runs += [("long", list(s), args.long_steps, first) for s in long]
    runs += [("long-seeds", list(s), args.long_steps, seed) for seed in args.seeds[1:]
             for s in long]
    return runs + [("set", s, steps, first) for s in layer_sets(n_layers)]


def run_task(args: argparse.Namespace, config: BuildConfig, phase: str) -> None:
    """Every missing run of one phase of one task (its card is built first)."""
    task = data.load_task(config.task, seed=config.seed)
    card_dir = args.out / "cards" / task.name
    if not (card_dir / "card.json").exists():
        build(replace(config, cost=False, probe_steps=0), card_dir)
    loaded = load_model(config.model)
    shape = {"kind": task.kind, "max_length": config.max_length, "batch_size": config.batch_size}
    train = data.task_batches(task.train[: config.probe_examples], loaded.tokenizer, **shape)
    dev_examples = task.dev[: config.probe_dev_examples]
    dev = data.task_batches(dev_examples, loaded.tokenizer, **shape)
    base_path = args.out / "runs" / task.name / "base.json"
    if not base_path.exists():
        loss, accuracy = _scores(loaded.model, loaded, task, config, dev, dev_examples)
        write_text(base_path, json.dumps({"dev_loss": loss, "accuracy": accuracy}) + "\n")
    base = json.loads(base_path.read_text())
    todo = [r for r in plan(args, loaded.n_layers, config.probe_steps) if r[0] == phase]
    settings = config.lora_settings()
    bar = tqdm(todo, desc=f"{phase} {task.name}", disable=not config.progress)
    for _, layers, steps, seed in bar:
        path = args.out / "runs" / task.name / f"{run_name(layers, steps, seed)}.json"
        if path.exists():
            continue
        lora = lora_config(loaded.model, layers, settings)
        start = time.perf_counter()
        result = train_lora(loaded.model, train, lora, steps=steps, lr=settings.lr, seed=seed)
        with lora_adapter(loaded.model, lora, result.adapter_state) as adapted:
            loss, accuracy = _scores(adapted, loaded, task, config, dev, dev_examples)
        run = Run(
            task=task.name, layers=layers, steps=steps, seed=seed, dev_loss=loss,
            gain=base["dev_loss"] - loss, accuracy=accuracy, train_losses=result.losses,
            trainable_params=result.trainable_params, seconds=time.perf_counter() - start,
        )
        write_text(path, json.dumps(asdict(run), indent=2) + "\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_Formatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    add_config_arguments(
        parser, BuildConfig, skip=("task", "cost", "depths", "timed_steps"),
        defaults={"model": "smollm2-135m"},
    )
    parser.set_defaults(probe_steps=30)
    parser.add_argument("--tasks", nargs="+", default=["sentiment", "dialog"],
                        help="tasks, in the order they run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                        help="probe seeds on every layer and of the longer runs (the first also "
                        "for the sets)")
    parser.add_argument("--long-steps", type=int, default=120,
                        help="steps of the longer single-layer runs")
    parser.add_argument("--long-count", type=int, default=5,
                        help="layers (spread bottom to top) that get a longer run")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run with tiny sizes {QUICK} (overrides those options)")
    return parser


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks and shows each option's default."""


def main() -> None:
    """Run every missing probe run and write meta.json (machine, versions, settings)."""
    args = _parser().parse_args()
    if args.quick:
        vars(args).update(QUICK)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.tasks:  # check every setting before the first long run
        config = config_from_args(BuildConfig, args, task=name)
        try:
            config.validate()
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
        meta = {
            "settings": {**asdict(config), "seeds": args.seeds, "long_steps": args.long_steps,
                         "long_count": args.long_count},
            "machine": asdict(machine_info()), "versions": library_versions(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        }
        task_name = data.load_task(name, seed=config.seed).name
        write_text(args.out / "runs" / task_name / "meta.json", json.dumps(meta, indent=2) + "\n")
    order = [(phase, name) for phase in PHASES for name in args.tasks]
    for phase, name in order:
        run_task(args, config_from_args(BuildConfig, args, task=name), phase)


if __name__ == "__main__":
    main()
