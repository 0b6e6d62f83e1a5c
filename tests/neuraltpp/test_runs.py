"""The run pipelines: simulate to files, train a run directory, evaluate checkpoints, plot."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from neuraltpp.builtin import load_splits
from neuraltpp.data import load_dataset
from neuraltpp.evaluation import evaluate
from neuraltpp.hawkes import true_ll_per_event
from neuraltpp.likelihood import LikelihoodOptions
from neuraltpp.metrics import load_metrics
from neuraltpp.runs import (
    CheckpointMetrics,
    EvalRunConfig,
    PlotRunConfig,
    RunError,
    TrainRunConfig,
    TrainRunResult,
    eval_run,
    plot_run,
    train_run,
)
from neuraltpp.sim_output import SimulationConfig, run_simulation
from neuraltpp.simulate import HawkesParams
from neuraltpp.training import TrainConfig, TrainResult, load_checkpoint

from .conftest import SIZES

PARAMS = HawkesParams(mu=np.array([0.5, 0.3]), alpha=np.array([[0.3, 0.1], [0.2, 0.3]]), beta=2.0)


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 sequences of a 2-type Hawkes process on [0, 10], written by `run_simulation`."""
    out = tmp_path_factory.mktemp("sim")
    run_simulation(SimulationConfig(out, PARAMS, n_sequences=20, horizon=10.0, seed=3))
    return out


def _train_config(**kw: object) -> TrainConfig:
    return TrainConfig(model="mhp", model_config=SIZES["tiny"], batch_size=4, **kw)


@pytest.fixture(scope="module")
def trained(
    sim_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainRunResult, TrainRunConfig, list[bool]]:
    """A 1-epoch run on 5 training sequences; the list says whether test metrics already
    existed when ``on_trained`` was called."""
    config = TrainRunConfig(
        data=str(sim_dir),
        out=tmp_path_factory.mktemp("run"),
        train=_train_config(epochs=1),
        max_sequences=5,
    )
    seen: list[bool] = []

    def on_trained(result: TrainResult) -> None:
        seen.append((config.out / "test_metrics.json").exists())

    return train_run(config, on_trained=on_trained), config, seen


def test_simulation_files_hold_the_returned_splits(sim_dir: Path) -> None:
    splits = run_simulation(
        SimulationConfig(sim_dir / "again", PARAMS, n_sequences=20, horizon=10.0, seed=3)
    )
    assert sum(len(ds) for ds in splits.values()) == 20
    read = load_dataset(sim_dir)  # the fixture's files: same config, so the same data
    for name, ds in splits.items():
        assert [s.times.tolist() for s in read[name].sequences] == [
            s.times.tolist() for s in ds.sequences
        ]
        assert all(s.window_end == 10.0 for s in ds.sequences)
    params = json.loads((sim_dir / "params.json").read_text())
    assert params["mu"] == [0.5, 0.3] and params["horizon"] == 10.0 and params["seed"] == 3
    assert params["true_ll_per_event"]["test"] == pytest.approx(
        true_ll_per_event(PARAMS, splits["test"])
    )


def test_train_run_writes_run_json_and_scores_the_best_checkpoint(
    trained: tuple[TrainRunResult, TrainRunConfig, list[bool]],
) -> None:
    result, config, seen = trained
    assert seen == [False]  # on_trained came once, before the test split was scored
    splits = load_splits(config.data)
    run = json.loads(result.run_file.read_text())
    assert run["n_train_sequences"] == 5 and run["max_sequences"] == 5
    assert run["n_dev_sequences"] == len(splits["dev"])
    assert TrainConfig.from_dict(run["train_config"]) == config.train

    assert result.train.best_checkpoint == config.out / "best.pt"
    model, _, _ = load_checkpoint(config.out / "best.pt")
    expected = evaluate(model, splits["test"], config.train.likelihood)
    assert result.test_metrics == expected
    assert result.test_metrics_file is not None
    assert load_metrics(result.test_metrics_file) == expected
    saved = json.loads(result.test_metrics_file.read_text())
    assert saved["checkpoint"] == str(config.out / "best.pt")


def test_train_run_without_test_split_writes_no_test_metrics(sim_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.json", "dev.json"):
        shutil.copy(sim_dir / name, data / name)
    config = TrainRunConfig(str(data), tmp_path / "run", _train_config(epochs=0))
    result = train_run(config)
    assert result.test_metrics is None and result.test_metrics_file is None
    assert not (config.out / "test_metrics.json").exists()
    assert (config.out / "best.pt").exists() and result.train.best_epoch == 0


def test_train_run_needs_a_dev_split(sim_dir: Path, tmp_path: Path) -> None:
    config = TrainRunConfig(str(sim_dir / "train.json"), tmp_path / "run", _train_config())
    with pytest.raises(RunError, match="has no 'dev' split") as info:
        train_run(config)
    assert info.value.field == "data"
    assert not (tmp_path / "run").exists()  # nothing written before the data is checked


def test_eval_run_of_the_run_directory_reproduces_the_test_metrics(
    trained: tuple[TrainRunResult, TrainRunConfig, list[bool]], tmp_path: Path
) -> None:
    train_result, config, _ = trained
    out = tmp_path / "m.json"
    result = eval_run(EvalRunConfig([config.out], config.data, out))
    assert result.aggregate is None and result.out == out
    assert [r.checkpoint for r in result.runs] == [config.out / "best.pt"]
    assert load_metrics(out) == train_result.test_metrics
    saved = json.loads(out.read_text())
    assert (saved["checkpoint"], saved["split"], saved["model"]) == (
        str(config.out / "best.pt"),
        "test",
        "mhp",
    )


def test_eval_run_of_several_checkpoints_aggregates_with_overrides(
    trained: tuple[TrainRunResult, TrainRunConfig, list[bool]], tmp_path: Path
) -> None:
    _, config, _ = trained
    checkpoints = [config.out / "best.pt", config.out / "last.pt"]
    scored: list[CheckpointMetrics] = []
    result = eval_run(
        EvalRunConfig(
            checkpoints,
            config.data,
            tmp_path / "m.json",
            split="dev",
            predictions=False,
            likelihood={"mode": "legacy"},
        ),
        on_scored=scored.append,
    )
    assert [r.checkpoint for r in scored] == checkpoints
    dev = load_splits(config.data)["dev"]
    legacy = dataclasses.replace(config.train.likelihood, mode="legacy")
    for run in result.runs:
        model, _, _ = load_checkpoint(run.checkpoint)
        assert run.metrics == evaluate(model, dev, legacy, predictions=False)
        assert run.metrics.model_prediction is None
    saved = json.loads((tmp_path / "m.json").read_text())
    assert [r["checkpoint"] for r in saved["runs"]] == [str(c) for c in checkpoints]
    lls = [r.metrics.likelihood.ll_per_event for r in result.runs]
    assert result.aggregate is not None and result.aggregate.n_runs == 2
    assert saved["aggregate"]["mean"]["likelihood.ll_per_event"] == pytest.approx(np.mean(lls))


def test_eval_run_errors_name_the_field(
    trained: tuple[TrainRunResult, TrainRunConfig, list[bool]], sim_dir: Path, tmp_path: Path
) -> None:
    _, config, _ = trained
    other = TrainRunConfig(
        config.data,
        tmp_path / "start-state",
        _train_config(epochs=0, likelihood=LikelihoodOptions(first_event="start-state")),
    )
    train_run(other)
    three = HawkesParams(mu=np.full(3, 0.5), alpha=np.full((3, 3), 0.1), beta=2.0)
    run_simulation(SimulationConfig(tmp_path / "three", three, n_sequences=10, horizon=5.0))
    out = tmp_path / "m.json"
    cases = {
        "split": EvalRunConfig([config.out], str(sim_dir / "dev.json"), out),
        "checkpoints": EvalRunConfig([tmp_path / "none.pt"], config.data, out),
        "data": EvalRunConfig([config.out], str(tmp_path / "three"), out),  # 3 types, not 2
    }
    for field, bad in cases.items():
        with pytest.raises(RunError) as info:
            eval_run(bad)
        assert info.value.field == field
    with pytest.raises(RunError, match="checkpoints: ") as info:  # conventions disagree
        eval_run(EvalRunConfig([config.out, other.out], config.data, out))
    assert not out.exists()


def test_plot_run_writes_a_png_and_checks_its_options(
    trained: tuple[TrainRunResult, TrainRunConfig, list[bool]], tmp_path: Path
) -> None:
    _, config, _ = trained
    out = plot_run(PlotRunConfig(config.out, config.data, tmp_path / "p.png", points=4))
    assert out == tmp_path / "p.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    n_test = len(load_splits(config.data)["test"])
    for field, bad in {"points": {"points": 1}, "index": {"index": n_test}}.items():
        with pytest.raises(RunError) as info:
            plot_run(PlotRunConfig(config.out, config.data, tmp_path / "q.png", **bad))
        assert info.value.field == field
    assert not (tmp_path / "q.png").exists()
