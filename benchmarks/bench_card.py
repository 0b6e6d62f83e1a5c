"""Benchmark: Layer Card build time and peak memory vs one epoch of all-layer LoRA.

In one run, on the same model, task, batch size and max length:
- card build, per --layer-groups setting (default: 2, the CLI default, and 1): statistics +
  diagnostics + coupling over the probe examples (no probes, no cost measurement), each run in
  a child process whose peak RSS (VmHWM of /proc/self/status) is the build's memory; model
  loading is excluded from the time. Each setting runs --repeats times, the first before the
  floors and the epoch and the others after them, so that the machine's drift during the run
  reaches both sides of the ratio; the reported time is the median run's (the slower middle one
  for an even count), the reported peak RSS the largest;
- full build: the same at the first setting plus the cost measurement (what `layercard build`
  and `make demo` run), also in a child; its cost stage is reported on its own;
- floor: one forward+backward of all-layer LoRA over the probe examples (no optimizer step), in
  training-order batches and in the card's measurement batches (sorted by length);
- epoch: one epoch of all-layer LoRA (layercard.training) over the training examples.
Writes card.json-style JSON, Markdown and a PNG bar plot into --out.

    python benchmarks/bench_card.py --out benchmarks/results/card [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from matplotlib.figure import Figure
from peft import LoraConfig
from tqdm import tqdm

from commonio.atomic import atomic_write, write_text
from commonio.process import peak_rss_bytes
from layercard import data
from layercard.build import build_card, library_versions, machine_info
from layercard.config import BuildConfig, add_config_arguments, config_from_args
from layercard.models import load_model
from layercard.training import causal_lm_loss, lora_config, lora_training, train_lora

TARGET_RATIO = 0.20
QUICK = {"probe_examples": 16, "train_examples": 32, "coupling_examples": 8, "repeats": 2}


@dataclass
class CardBuild:
    """One card build (child process) at one --layer-groups setting."""

    layer_groups: int
    cost: bool  # whether the build includes the cost measurement
    seconds: float  # statistics + diagnostics + coupling (+ cost), no load, no probes
    stages: dict[str, float]  # of the median run
    peak_rss_bytes: int  # VmHWM of the child process (the largest over the runs)
    ratio: float  # seconds / epoch seconds
    runs_seconds: list[float]  # every run's seconds, in the order they ran


@dataclass
class BenchResult:
    """Everything the benchmark measured, with the settings and machine it ran on."""

    model: str
    task: str
    probe_examples: int
    train_examples: int
    coupling_examples: int
    batch_size: int
    max_length: int
    rank: int
    seed: int
    quick: bool
    n_params: int
    repeats: int  # runs per card build setting
    builds: list[CardBuild]  # without cost measurement; the first is the CLI default setting
    full_build: CardBuild  # the first setting with cost measurement, as `layercard build` runs
    cost_seconds: float  # the full build's cost stage
    floor_seconds: float  # one forward+backward of all-layer LoRA, training-order batches
    floor_sorted_seconds: float  # the same over the card's measurement batches
    epoch_seconds: float  # one epoch of all-layer LoRA over the training examples
    floor_ratio: float  # floor_seconds / epoch_seconds
    floor_sorted_ratio: float
    target_ratio: float
    fp32_model_bytes: int
    rss_target_bytes: int  # 1.5 × fp32 model size + 1 GiB
    machine: dict[str, object]
    versions: dict[str, str]


def _config(args: argparse.Namespace, layer_groups: int = 1, cost: bool = False) -> BuildConfig:
    return replace(args.config, layer_groups=layer_groups, cost=cost)


def _child_build(args: argparse.Namespace) -> None:
    """Build the card (no probes) and print its stage times and peak RSS as JSON."""
    card = build_card(_config(args, args.group_settings[0], cost=args.child_cost))
    print(json.dumps({"stages": card.timings.stages, "peak_rss_bytes": peak_rss_bytes()}))


def _card_in_child(args: argparse.Namespace, layer_groups: int, cost: bool) -> CardBuild:
    """Build the card in a child process; its time excludes model loading."""
    command = [sys.executable, __file__, *sys.argv[1:], "--child-build",
               "--layer-groups", str(layer_groups), *(["--child-cost"] if cost else [])]
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"error: the card build (child process) failed with {proc.returncode}")
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    stages = child["stages"]
    seconds = stages["measure"] + stages.get("cost", 0.0)
    return CardBuild(
        layer_groups=layer_groups,
        cost=cost,
        seconds=seconds,
        stages=stages,
        peak_rss_bytes=int(child["peak_rss_bytes"]),
        ratio=math.nan,  # set once the epoch is timed
        runs_seconds=[seconds],
    )


def _median_run(runs: list[CardBuild]) -> CardBuild:
    """Runs of one setting as one build: the median run (the slower middle one for an even
    count) with every run's seconds and the largest peak RSS."""
    middle = sorted(runs, key=lambda build: build.seconds)[len(runs) // 2]
    return replace(
        middle,
        peak_rss_bytes=max(build.peak_rss_bytes for build in runs),
        runs_seconds=[build.seconds for build in runs],
    )


def _floor_seconds(
    model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], config: LoraConfig,
    args: argparse.Namespace,
) -> float:
    """One forward+backward of all-layer LoRA over `batches`, without optimizer steps."""
    lr = args.config.lora_settings().lr
    with lora_training(model, config, lr=lr, seed=args.seed) as (peft_model, _):
        start = time.perf_counter()
        for batch in tqdm(batches, desc="floor fwd+bwd", disable=not args.progress, leave=False):
            causal_lm_loss(peft_model, batch).backward()
        seconds = time.perf_counter() - start
        peft_model.zero_grad(set_to_none=True)
    return seconds


def run(args: argparse.Namespace) -> BenchResult:
    """Measure the card builds (child processes), both floors and one LoRA epoch."""
    runs = [[_card_in_child(args, groups, cost=False)] for groups in args.group_settings]
    full_build = _card_in_child(args, args.group_settings[0], cost=True)
    loaded = load_model(args.model)
    task = data.load_task(args.task, seed=args.seed)
    shape = {"kind": task.kind, "max_length": args.max_length, "batch_size": args.batch_size}
    probe_examples = task.train[: args.probe_examples]
    probe = data.task_batches(probe_examples, loaded.tokenizer, **shape)
    sorted_probe = data.measurement_batches(
        probe_examples, loaded.tokenizer, head=args.coupling_examples, **shape
    )
    train = data.task_batches(task.train[: args.train_examples], loaded.tokenizer, **shape)
    settings = args.config.lora_settings()

    all_layers = lora_config(loaded.model, range(loaded.n_layers), settings)
    floor = _floor_seconds(loaded.model, probe, all_layers, args)
    floor_sorted = _floor_seconds(loaded.model, sorted_probe, all_layers, args)
    start = time.perf_counter()
    train_lora(loaded.model, train, all_layers, steps=len(train), lr=settings.lr,
               seed=args.seed, progress=args.progress)
    epoch = time.perf_counter() - start
    for _ in range(args.repeats - 1):
        for groups, setting in zip(args.group_settings, runs, strict=True):
            setting.append(_card_in_child(args, groups, cost=False))
    builds = [_median_run(setting) for setting in runs]

    n_params = sum(p.numel() for p in loaded.model.parameters())
    for build in [*builds, full_build]:
        build.ratio = build.seconds / epoch
    return BenchResult(
        model=args.model, task=args.task, probe_examples=args.probe_examples,
        train_examples=args.train_examples, coupling_examples=args.coupling_examples,
        batch_size=args.batch_size, max_length=args.max_length, rank=args.rank, seed=args.seed,
        quick=args.quick, n_params=n_params, repeats=args.repeats, builds=builds,
        full_build=full_build, cost_seconds=full_build.stages["cost"],
        floor_seconds=floor, floor_sorted_seconds=floor_sorted, epoch_seconds=epoch,
        floor_ratio=floor / epoch, floor_sorted_ratio=floor_sorted / epoch,
        target_ratio=TARGET_RATIO, fp32_model_bytes=4 * n_params,
        rss_target_bytes=int(1.5 * 4 * n_params + 2**30),
        machine=asdict(machine_info()), versions=library_versions(),
    )


def to_markdown(r: BenchResult) -> str:
    """A short report of the result."""
    gib = 2**30
    m = r.machine

    def verdict(ok: bool) -> str:
        return "meets" if ok else "misses"

    def spread(b: CardBuild, scale: float, digits: int) -> str:
        if len(b.runs_seconds) == 1:
            return ""
        return " (runs " + ", ".join(f"{s / scale:.{digits}f}" for s in b.runs_seconds) + ")"

    rows = [
        f"| card build, --layer-groups {b.layer_groups}: {r.probe_examples} probe examples, "
        f"coupling on {r.coupling_examples}, no probes, no cost (excl. model load)"
        f"{', median of ' + str(r.repeats) + ' runs' if r.repeats > 1 else ''} | "
        f"{b.seconds:.1f}{spread(b, 1.0, 1)} | {b.ratio:.3f}{spread(b, r.epoch_seconds, 3)} | "
        f"{b.peak_rss_bytes / gib:.2f} |"
        for b in r.builds
    ]
    verdicts = [
        f"- --layer-groups {b.layer_groups}: time ratio {b.ratio:.3f} "
        f"{verdict(b.ratio <= r.target_ratio)} the target ≤ {r.target_ratio}; peak RSS "
        f"{b.peak_rss_bytes / gib:.2f} GiB {verdict(b.peak_rss_bytes <= r.rss_target_bytes)} "
        f"the target ≤ 1.5 × fp32 model ({r.fp32_model_bytes / gib:.2f} GiB) + 1 GiB = "
        f"{r.rss_target_bytes / gib:.2f} GiB."
        for b in r.builds
    ]
    return "\n".join([
        f"# Layer Card build vs one LoRA epoch{' (quick smoke run)' if r.quick else ''}",
        "",
        f"Model `{r.model}` ({r.n_params:,} parameters), task `{r.task}`, batch size "
        f"{r.batch_size}, max length {r.max_length}, LoRA rank {r.rank}, seed {r.seed}.",
        "",
        "| what | seconds | ratio to epoch | peak RSS (GiB) |",
        "|---|---|---|---|",
        *rows,
        f"| floor: one fwd+bwd of all-layer LoRA over the probe examples, training-order "
        f"batches | {r.floor_seconds:.1f} | {r.floor_ratio:.3f} | |",
        f"| floor over the card's length-sorted measurement batches | "
        f"{r.floor_sorted_seconds:.1f} | {r.floor_sorted_ratio:.3f} | |",
        f"| one epoch all-layer LoRA r={r.rank}, {r.train_examples} examples | "
        f"{r.epoch_seconds:.1f} | 1 | |",
        f"| full build (`layercard build`): the card build at --layer-groups "
        f"{r.full_build.layer_groups} plus the cost measurement | {r.full_build.seconds:.1f} | "
        f"{r.full_build.ratio:.3f} | {r.full_build.peak_rss_bytes / gib:.2f} |",
        f"| of which the cost measurement | {r.cost_seconds:.1f} | "
        f"{r.cost_seconds / r.epoch_seconds:.3f} | |",
        "",
        *verdicts,
        f"- each card build setting ran {r.repeats} time(s), the first before the floors and "
        "the epoch, the others after them; its time is the median run's, its peak RSS the "
        "largest." if r.repeats > 1 else "- each card build setting ran once.",
        "- the targets apply to the card build; the full build adds the cost measurement, which "
        "runs LoRA optimizer steps down to layer 0 (its memory is that of all-layer LoRA "
        "training).",
        *(
            f"- stages (s), --layer-groups {b.layer_groups}{' with cost' if b.cost else ''}"
            f"{' (median run)' if len(b.runs_seconds) > 1 else ''}: "
            + ", ".join(f"{k} {v:.1f}" for k, v in b.stages.items())
            for b in [*r.builds, r.full_build]
        ),
        f"- machine: {m['processor']}, {m['cpu_count']} cores, {m['torch_threads']} torch "
        f"threads, {int(m['memory_bytes']) / gib:.1f} GiB RAM ({m['platform']})",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in r.versions.items()),
        "",
        "![times](bench_card.png)",
        "",
    ])


def plot(r: BenchResult, path: Path) -> None:
    """Bar plot of the times: floors, card builds, the full build and the epoch."""
    fig = Figure(figsize=(8, 3.6))
    ax = fig.subplots()
    labels = ["floor\nfwd+bwd", "floor\nsorted", *(f"card\n{b.layer_groups} group(s)"
                                                   for b in r.builds),
              "full build\n(with cost)", "LoRA epoch"]
    values = [r.floor_seconds, r.floor_sorted_seconds, *(b.seconds for b in r.builds),
              r.full_build.seconds, r.epoch_seconds]
    colors = ["C7", "C7", *["C0"] * len(r.builds), "C2", "C3"]
    bars = ax.bar(labels, values, color=colors)
    ax.bar_label(bars, fmt="%.1f s", fontsize=8)
    ax.set_ylabel("seconds")
    ratios = ", ".join(f"{b.layer_groups} group(s) {b.ratio:.3f}" for b in r.builds)
    ax.set_title(f"{r.model} on {r.task}: card / epoch = {ratios}", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks and shows each option's default."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_Formatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    add_config_arguments(
        parser,
        BuildConfig,
        skip=("layer_groups", "cost", "probe_steps", "probe_dev_examples", "depths",
              "timed_steps"),
        defaults={"model": "smollm2-135m", "task": "sentiment"},
    )
    parser.add_argument("--train-examples", type=int, default=2000,
                        help="examples in the LoRA epoch")
    parser.add_argument("--layer-groups", dest="group_settings", type=int, nargs="+",
                        default=[2, 1], metavar="N",
                        help="card builds to time, one per setting")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per card build setting (the median is reported)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run with tiny sizes {QUICK} (overrides those options)")
    parser.add_argument("--child-build", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-cost", action="store_true", help=argparse.SUPPRESS)
    return parser


def main() -> None:
    """Run the benchmark and write bench_card.json, bench_card.md and bench_card.png."""
    args = _parser().parse_args()
    if args.quick:
        vars(args).update(QUICK)
    args.config = config_from_args(BuildConfig, args)
    try:
        args.config.validate()
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    if args.repeats < 1:
        raise SystemExit(f"error: --repeats must be >= 1, got {args.repeats}")
    if args.child_build:
        _child_build(args)
        return
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "bench_card.json", json.dumps(asdict(result), indent=2) + "\n")
    write_text(args.out / "bench_card.md", to_markdown(result))
    plot(result, args.out / "bench_card.png")
    print(to_markdown(result))


if __name__ == "__main__":
    main()
