"""The pipelines behind ``neuraltpp train``, ``eval`` and ``plot``, on run directories.

Each takes one config (data named as ``--data`` takes it: a built-in name or a path) and goes
load → train → evaluate → write: `train_run` (``run.json``, the checkpoints,
``train_result.json``, ``test_metrics.json``), `eval_run` (a metrics JSON) and `plot_run` (a
PNG). Input the caller can fix raises `RunError`, which names the config field at fault;
it is raised before anything is written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from commonio.atomic import replace_dir
from neuraltpp.builtin import load_splits
from neuraltpp.data.containers import EventDataset
from neuraltpp.evaluation import evaluate
from neuraltpp.metrics import AggregateMetrics, Metrics, aggregate, save_metrics, write_json
from neuraltpp.models import TPPModel
from neuraltpp.training import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    RESULT_FILE,
    TrainConfig,
    TrainResult,
    accelerator,
    check_inputs,
    load_checkpoint,
    train,
)

RUN_FILE = "run.json"
TEST_METRICS_FILE = "test_metrics.json"


class RunError(ValueError):
    """Bad run input; ``field`` names the config field at fault (the CLI shows its flag)."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


def select_split(splits: dict[str, EventDataset], name: str, data: str, field: str) -> EventDataset:
    """Split ``name`` of ``data``; RunError on ``field`` when it is missing or empty."""
    if name not in splits:
        raise RunError(field, f"{data} has no {name!r} split (it has {sorted(splits)})")
    if len(splits[name]) == 0:
        raise RunError(field, f"the {name!r} split of {data} is empty")
    return splits[name]


def checkpoint_path(path: str | Path) -> Path:
    """The checkpoint file a path names: a run directory means its ``best.pt``."""
    path = Path(path)
    return path / BEST_CHECKPOINT if path.is_dir() else path


def _load_model(checkpoint: str | Path, field: str) -> tuple[TPPModel, TrainConfig]:
    try:
        model, config, _ = load_checkpoint(checkpoint_path(checkpoint))
    except ValueError as exc:
        raise RunError(field, str(exc)) from exc
    return model, config


def _check_types(model: TPPModel, ds: EventDataset, data: str) -> None:
    if model.num_types != ds.num_types:
        raise RunError(
            "data",
            f"{data} has {ds.num_types} event types but the checkpoint's model has "
            f"{model.num_types}",
        )


def _check_out_file(out: Path) -> None:
    """RunError on ``out`` unless a file can be written there (not a directory, and no
    existing ancestor a file)."""
    if out.is_dir():
        raise RunError("out", f"{out} is a directory; name the file to write")
    ancestor = next((p for p in out.parents if p.exists()), None)
    if ancestor is not None and not ancestor.is_dir():
        raise RunError("out", f"{ancestor} is not a directory")


# ----------------------------------------------------------------------------- train


@dataclass(frozen=True)
class TrainRunConfig:
    """A training run: the data, the output directory and the `TrainConfig`."""

    data: str
    out: Path
    train: TrainConfig = field(default_factory=TrainConfig)
    data_seed: int = 0  # seed of built-in data simulation and of random splits
    time_scale: float | None = None  # divide all times by this
    max_sequences: int | None = None  # train on the first N training sequences only
    resume: bool = False  # continue from ``out/last.pt``
    overwrite: bool = False  # replace the run in ``out`` (only once the new one is complete)


@dataclass
class TrainRunResult:
    """The training result and, when the data has a non-empty test split, its metrics."""

    train: TrainResult
    run_file: Path
    test_metrics: Metrics | None
    test_metrics_file: Path | None


RUN_FILES = (RUN_FILE, BEST_CHECKPOINT, LAST_CHECKPOINT, RESULT_FILE, TEST_METRICS_FILE)


def _check_run_dir(config: TrainRunConfig) -> bool:
    """RunError unless ``out`` can take the run: absent, empty, or a run of this tool (with
    ``resume`` or ``overwrite``, not both). True when an existing run is to be replaced."""
    out = config.out
    if config.resume and config.overwrite:
        raise RunError(
            "overwrite", "cannot be combined with resume (continue the run or replace it)"
        )
    if out.exists() and not out.is_dir():
        raise RunError("out", f"{out} is not a directory")
    entries = sorted(p.name for p in out.iterdir()) if out.exists() else []
    if not entries:
        return False
    if not {RUN_FILE, LAST_CHECKPOINT} & set(entries):
        raise RunError("out", f"{out} is not empty and holds no run; choose another directory")
    foreign = [name for name in entries if name not in RUN_FILES]
    if config.overwrite and foreign:
        raise RunError(
            "out",
            f"{out} holds a run but also {', '.join(foreign)}, which train did not write; move "
            "them or choose another directory",
        )
    if not (config.resume or config.overwrite):
        raise RunError(
            "out", f"{out} already holds a run; continue it (--resume) or replace it (--overwrite)"
        )
    return config.overwrite


def _run_record(
    config: TrainRunConfig, train_ds: EventDataset, dev_ds: EventDataset
) -> dict[str, Any]:
    """What ``run.json`` records: the data, its settings and the training config."""
    return {
        "data": config.data,
        "data_seed": config.data_seed,
        "time_scale": config.time_scale,
        "max_sequences": config.max_sequences,
        "train_config": config.train.to_dict(),
        "n_train_sequences": len(train_ds),
        "n_dev_sequences": len(dev_ds),
    }


def train_run(
    config: TrainRunConfig,
    *,
    progress: bool = False,
    on_trained: Callable[[TrainResult], None] | None = None,
) -> TrainRunResult:
    """Check ``out`` and the inputs, write ``run.json``, train into ``out`` and score the best
    model on the test split (``test_metrics.json``); ``on_trained`` sees the training result
    before that. Nothing is written before the inputs are checked; an overwritten run is
    trained beside ``out`` and swapped in only when complete, so a failure leaves it intact.
    Under several processes (``accelerate launch``) all train and only the main one writes,
    scores the test split and calls ``on_trained``; the others return without test metrics."""
    replace = _check_run_dir(config)
    splits = load_splits(config.data, seed=config.data_seed, time_scale=config.time_scale)
    train_ds = select_split(splits, "train", config.data, "data")
    if config.max_sequences is not None:
        train_ds = dataclasses.replace(
            train_ds, sequences=train_ds.sequences[: config.max_sequences]
        )
    dev_ds = select_split(splits, "dev", config.data, "data")
    check_inputs(config.train, train_ds, dev_ds, config.out, config.resume)
    test_ds = splits["test"] if len(splits.get("test", ())) else None
    acc = accelerator()
    acc.wait_for_everyone()  # every process has checked `out` before the main one writes
    main = acc.is_main_process

    def fill(run_dir: Path) -> TrainRunResult:
        if main:
            write_json(_run_record(config, train_ds, dev_ds), run_dir / RUN_FILE)
        trained = train(
            config.train, train_ds, dev_ds, run_dir, resume=config.resume, progress=progress
        )
        trained = dataclasses.replace(
            trained, out_dir=config.out, best_checkpoint=config.out / BEST_CHECKPOINT
        )
        if main and on_trained is not None:
            on_trained(trained)
        if test_ds is None or not main:
            return TrainRunResult(trained, config.out / RUN_FILE, None, None)
        metrics = evaluate(trained.model, test_ds, config.train.likelihood, progress=progress)
        best = str(trained.best_checkpoint)
        save_metrics(metrics, run_dir / TEST_METRICS_FILE, checkpoint=best)
        return TrainRunResult(
            trained, config.out / RUN_FILE, metrics, config.out / TEST_METRICS_FILE
        )

    if not (replace and main):  # the other processes never write: their run_dir is unused
        return fill(config.out)
    done: list[TrainRunResult] = []
    replace_dir(config.out, lambda staging: done.append(fill(staging)))
    return done[0]


# ----------------------------------------------------------------------------- eval


@dataclass(frozen=True)
class EvalRunConfig:
    """Checkpoints to score on one split, and the metrics JSON to write."""

    checkpoints: Sequence[str | Path]  # files or run directories (their best.pt)
    data: str
    out: Path
    split: str = "test"
    data_seed: int = 0
    time_scale: float | None = None
    batch_size: int = 64
    predictions: bool = True  # False: the log-likelihood only
    likelihood: dict[str, Any] = field(default_factory=dict)  # overrides each checkpoint's own


@dataclass
class CheckpointMetrics:
    """One checkpoint's metrics, with the file and the model name it came from."""

    checkpoint: Path
    model: str
    metrics: Metrics


@dataclass
class EvalRunResult:
    """Each checkpoint's metrics and, for several, their mean and spread."""

    runs: list[CheckpointMetrics]
    aggregate: AggregateMetrics | None
    out: Path


def eval_run(
    config: EvalRunConfig,
    *,
    progress: bool = False,
    on_scored: Callable[[CheckpointMetrics], None] | None = None,
) -> EvalRunResult:
    """Score every checkpoint on the split (its training likelihood with ``config.likelihood``
    on top) and write ``out``: one checkpoint's metrics, or every run plus their aggregate;
    ``on_scored`` sees each checkpoint's metrics as they come."""
    _check_out_file(config.out)
    splits = load_splits(config.data, seed=config.data_seed, time_scale=config.time_scale)
    ds = select_split(splits, config.split, config.data, "split")
    runs: list[CheckpointMetrics] = []
    for checkpoint in config.checkpoints:
        model, train_config = _load_model(checkpoint, "checkpoints")
        _check_types(model, ds, config.data)
        metrics = evaluate(
            model,
            ds,
            dataclasses.replace(train_config.likelihood, **config.likelihood),
            batch_size=config.batch_size,
            predictions=config.predictions,
            progress=progress,
        )
        runs.append(CheckpointMetrics(checkpoint_path(checkpoint), train_config.model, metrics))
        if on_scored is not None:
            on_scored(runs[-1])

    def provenance(run: CheckpointMetrics) -> dict[str, str]:
        return {
            "checkpoint": str(run.checkpoint),
            "data": config.data,
            "split": config.split,
            "model": run.model,
        }

    if len(runs) == 1:
        save_metrics(runs[0].metrics, config.out, **provenance(runs[0]))
        return EvalRunResult(runs, None, config.out)
    try:
        spread = aggregate([run.metrics for run in runs])
    except ValueError as exc:
        raise RunError("checkpoints", str(exc)) from exc
    write_json(
        {
            "runs": [{**run.metrics.to_dict(), **provenance(run)} for run in runs],
            "aggregate": spread.to_dict(),
        },
        config.out,
    )
    return EvalRunResult(runs, spread, config.out)


# ----------------------------------------------------------------------------- plot


@dataclass(frozen=True)
class PlotRunConfig:
    """A checkpoint, one sequence of a split, and the PNG to write."""

    checkpoint: str | Path  # file or run directory (its best.pt)
    data: str
    out: Path
    split: str = "test"
    index: int = 0  # sequence index within the split
    points: int = 32  # grid points per inter-event interval
    data_seed: int = 0
    time_scale: float | None = None


def plot_run(config: PlotRunConfig) -> Path:
    """Plot the checkpoint's intensity per type over sequence ``index`` of the split into
    ``out``; returns ``out``."""
    from neuraltpp.plotting import plot_intensity  # matplotlib only when plotting

    if config.points < 2:
        raise RunError("points", f"must be at least 2, got {config.points}")
    _check_out_file(config.out)
    model, train_config = _load_model(config.checkpoint, "checkpoint")
    splits = load_splits(config.data, seed=config.data_seed, time_scale=config.time_scale)
    ds = select_split(splits, config.split, config.data, "split")
    _check_types(model, ds, config.data)
    if config.index >= len(ds):
        raise RunError(
            "index", f"{config.index} is out of range; the split has {len(ds)} sequences"
        )
    seq = ds.sequences[config.index]
    plot_intensity(
        model,
        seq,
        config.out,
        type_names=ds.type_names,
        points_per_interval=config.points,
        time_unit=ds.metadata.get("time_unit"),
        title=f"{train_config.model}: learned intensity, {config.split} sequence {config.index} "
        f"({seq.seq_id})",
    )
    return config.out
