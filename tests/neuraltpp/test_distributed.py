"""`neuraltpp train` under `accelerate launch` with two CPU processes (gloo): the same global
batch gives the single-process run's per-epoch dev LL, only the main process writes, and a
two-process run resumes exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from neuraltpp.data.nhp import write_pickle
from neuraltpp.data.splits import split_dataset
from neuraltpp.hawkes import HawkesParams
from neuraltpp.simulate import simulate_dataset

# Tiny THP, dropout 0 (dropout masks are drawn per process, so they cannot match one process).
# 25 training sequences in batches of 4: the last batch has one, so process 1's share is empty.
SETTINGS = ["--model", "thp", "--d-model", "8", "--n-layers", "1", "--n-heads", "2",
            "--d-ff", "16", "--dropout", "0", "--batch-size", "4", "--lr", "0.01",
            "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    params = HawkesParams(
        mu=np.array([0.4, 0.2]), alpha=np.array([[0.5, 0.1], [0.3, 0.4]]), beta=2.0
    )
    splits = split_dataset(simulate_dataset(params, 40, T=15.0, seed=1), (0.625, 0.2, 0.175))
    assert len(splits["train"]) == 25
    directory = tmp_path_factory.mktemp("hawkes")
    write_pickle(splits, directory)
    return directory


def _train(launch: Callable, processes: int, out: Path, data: Path, *extra: str) -> Any:
    args = ["train", "--data", str(data), "--out", str(out), *SETTINGS, *extra]
    if processes > 1:
        return launch(processes, "neuraltpp.cli", *args)
    return subprocess.run([sys.executable, "-m", "neuraltpp.cli", *args], capture_output=True,
                          text=True, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _history(out: Path) -> list[dict]:
    """The run's per-epoch records without their measured times (which differ run to run)."""
    history = json.loads((out / "train_result.json").read_text())["history"]
    assert all(r["seconds"] > 0 and r["cpu_seconds"] > 0 for r in history)
    return [{k: v for k, v in r.items() if k not in ("seconds", "cpu_seconds")} for r in history]


@pytest.fixture(scope="module")
def two_process_run(
    data: Path, tmp_path_factory: pytest.TempPathFactory, launch: Callable
) -> Path:
    out = tmp_path_factory.mktemp("runs") / "two"
    proc = _train(launch, 2, out, data, "--epochs", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("best epoch") == 1  # reported once, by the main process
    assert proc.stdout.count("test: ") == 1
    return out


def test_two_processes_match_one_process_epoch_by_epoch(
    data: Path, two_process_run: Path, tmp_path: Path, launch: Callable
) -> None:
    proc = _train(launch, 1, tmp_path / "one", data, "--epochs", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = _history(tmp_path / "one"), _history(two_process_run)
    assert [r["epoch"] for r in two] == [0, 1, 2, 3]
    for a, b in zip(one, two, strict=True):
        assert b["dev_ll_per_event"] == pytest.approx(a["dev_ll_per_event"], abs=1e-4)
        if a["train_loss"] is not None:
            assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-4)
            assert b["train_ll_per_event"] == pytest.approx(a["train_ll_per_event"], abs=1e-4)
    assert one[-1]["dev_ll_per_event"] != one[0]["dev_ll_per_event"]  # it trained
    assert sorted(p.name for p in two_process_run.iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )


def test_a_two_process_run_resumes_exactly_and_only_with_two(
    data: Path, two_process_run: Path, tmp_path: Path, launch: Callable
) -> None:
    out = tmp_path / "resumed"
    first = _train(launch, 2, out, data, "--epochs", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    alone = _train(launch, 1, out, data, "--epochs", "3", "--resume")
    assert alone.returncode == 2
    assert "written by 2 process(es)" in alone.stderr
    assert alone.stderr.count("error:") == 1
    assert len(_history(out)) == 3  # the refused resume changed nothing
    resumed = _train(launch, 2, out, data, "--epochs", "3", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _history(out) == _history(two_process_run)
