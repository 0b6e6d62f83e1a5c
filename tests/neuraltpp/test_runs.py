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
from neuraltpp.sim_output import MIN_SEQUENCES, OutDirError, SimulationConfig, run_simulation
from neuraltpp.simulate import HawkesParams
from neuraltpp.training import TrainConfig, TrainingDiverged, TrainResult, load_checkpoint

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
        windows = {
            (s.window_start, s.window_end) for part in (ds, read[name]) for s in part.sequences
        }
        assert windows == {(0.0, 10.0)}  # the files keep the window the true LL was scored on
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


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _no_temporaries(directory: Path) -> bool:
    return not [p.name for p in directory.iterdir() if p.name.startswith(".")]


def test_resume_with_other_settings_changes_nothing(sim_dir: Path, tmp_path: Path) -> None:
    config = TrainRunConfig(str(sim_dir), tmp_path / "run", _train_config(epochs=0))
    train_run(config)
    before = _snapshot(config.out)
    other = dataclasses.replace(config, train=_train_config(epochs=1, lr=0.5), resume=True)
    with pytest.raises(ValueError, match="different configuration"):
        train_run(other)
    fewer = dataclasses.replace(config, resume=True, max_sequences=3)
    with pytest.raises(ValueError, match="different train/dev data"):
        train_run(fewer)
    assert _snapshot(config.out) == before  # run.json too: checked before anything is written


def test_overwrite_keeps_the_previous_run_until_the_new_one_is_complete(
    sim_dir: Path, tmp_path: Path
) -> None:
    config = TrainRunConfig(str(sim_dir), tmp_path / "run", _train_config(epochs=1))
    train_run(config)
    before = _snapshot(config.out)
    diverging = dataclasses.replace(config, train=_train_config(epochs=2, lr=1e6), overwrite=True)
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step \d+"):
        train_run(diverging)
    assert _snapshot(config.out) == before and _no_temporaries(tmp_path)

    seen: list[Path] = []
    new = dataclasses.replace(config, train=_train_config(epochs=1, seed=5), overwrite=True)
    result = train_run(new, on_trained=lambda r: seen.append(r.best_checkpoint))
    assert _snapshot(config.out) != before and _no_temporaries(tmp_path)
    assert seen == [result.train.best_checkpoint] == [config.out / "best.pt"]
    assert result.run_file == config.out / "run.json" and result.train.out_dir == config.out
    assert TrainConfig.from_dict(json.loads(result.run_file.read_text())["train_config"]).seed == 5
    assert (
        json.loads((config.out / "train_result.json").read_text())["best_checkpoint"] == "best.pt"
    )
    assert json.loads((config.out / "test_metrics.json").read_text())["checkpoint"] == str(
        config.out / "best.pt"
    )


def test_train_run_refuses_an_out_it_cannot_take(sim_dir: Path, tmp_path: Path) -> None:
    run = TrainRunConfig(str(sim_dir), tmp_path / "run", _train_config(epochs=0))
    train_run(run)
    (tmp_path / "file").write_text("x")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    cases = {
        "overwrite": dataclasses.replace(run, resume=True, overwrite=True),
        "out": dataclasses.replace(run),  # holds a run: resume or overwrite it
    }
    for field, bad in cases.items():
        with pytest.raises(RunError) as info:
            train_run(bad)
        assert info.value.field == field
    for out, detail in {"file": "not a directory", "mine": "holds no run"}.items():
        with pytest.raises(RunError, match=detail) as info:
            train_run(dataclasses.replace(run, out=tmp_path / out, overwrite=True))
        assert info.value.field == "out"
    (run.out / "notes.txt").write_text("x")
    with pytest.raises(RunError, match=r"also notes\.txt, which train did not write"):
        train_run(dataclasses.replace(run, overwrite=True))


def test_data_that_scores_no_event_writes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "singles.csv"
    data.write_text("seq_id,time,type\n" + "".join(f"{i},0.5,0\n" for i in range(10)))
    with pytest.raises(ValueError, match="no event is scored"):
        train_run(TrainRunConfig(str(data), tmp_path / "run", _train_config()))
    assert not (tmp_path / "run").exists()


def test_eval_and_plot_refuse_a_directory_as_out(
    trained: tuple[TrainRunResult, TrainRunConfig, list[bool]], tmp_path: Path
) -> None:
    _, config, _ = trained
    with pytest.raises(RunError, match="is a directory") as info:
        eval_run(EvalRunConfig([config.out], config.data, tmp_path))
    assert info.value.field == "out"
    with pytest.raises(RunError, match="is a directory") as info:
        plot_run(PlotRunConfig(config.out, config.data, tmp_path))
    assert info.value.field == "out"


def test_simulation_writes_only_where_it_may(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    config = SimulationConfig(out, PARAMS, n_sequences=10, horizon=5.0)
    run_simulation(config)
    before = _snapshot(out)
    with pytest.raises(OutDirError, match="already holds a simulated dataset"):
        run_simulation(dataclasses.replace(config, seed=1))
    assert _snapshot(out) == before
    run_simulation(dataclasses.replace(config, seed=1, overwrite=True))
    assert _snapshot(out) != before and _no_temporaries(tmp_path)
    (tmp_path / "file").write_text("x")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    for name, detail in {"file": "not a directory", "mine": "holds no simulated dataset"}.items():
        with pytest.raises(OutDirError, match=detail):
            run_simulation(dataclasses.replace(config, out=tmp_path / name, overwrite=True))
    (out / "notes.txt").write_text("x")
    with pytest.raises(OutDirError, match=r"also notes\.txt"):
        run_simulation(dataclasses.replace(config, overwrite=True))
    with pytest.raises(ValueError, match="leave a split empty"):
        SimulationConfig(tmp_path / "few", PARAMS, n_sequences=MIN_SEQUENCES - 1)
