"""Target (b) of the placement benchmark as the step-cost benchmark judges it
(benchmarks/bench_step_cost.py `budget_target`), on hand-made rows and placement report."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports bench_placement from there
    return importlib.import_module("bench_step_cost")


def _row(run: str, strategy: str, k: int, ratio: float) -> dict:
    return {"run": run, "strategy": strategy, "k": k, "measured_ratio": ratio}


def _placement(tmp_path: Path, means: dict[tuple[str, int], float]) -> Path:
    rows = [{"strategy": s, "k": k, "card_task": "sentiment", "mean": m}
            for (s, k), m in means.items()]
    rows.append({"strategy": "middle", "k": 4, "card_task": "dialog", "mean": 0.99})  # transfer
    (tmp_path / "placement_report.json").write_text(json.dumps([{"task": "sentiment",
                                                                 "rows": rows}]))
    return tmp_path


ROWS = [_row("budget-seed0", "budget", 8, 0.58), _row("last-k8-seed0", "last", 8, 0.50),
        _row("middle-k4-seed0", "middle", 4, 0.61), _row("all-seed0", "all", 8, 1.0)]


def test_the_budget_choice_must_fit_and_match_every_set_that_fits(bench: ModuleType,
                                                                 tmp_path: Path) -> None:
    means = {("budget", 8): 0.85, ("last", 8): 0.83, ("middle", 4): 0.90, ("all", 8): 0.86}
    goal = bench.budget_target(ROWS, _placement(tmp_path, means), "sentiment", 0.6)
    assert goal["met"] and goal["fitting"] == {"last-k8-seed0": 0.83}  # middle-4 is over 0.6
    assert (goal["budget_ratio"], goal["budget_metric"]) == (0.58, 0.85)
    tighter = bench.budget_target(ROWS, tmp_path, "sentiment", 0.55)
    assert not tighter["met"]  # the choice itself overruns 0.55
    wider = bench.budget_target(ROWS, tmp_path, "sentiment", 0.62)
    assert not wider["met"] and wider["fitting"]["middle-k4-seed0"] == 0.90  # a better set fits


def test_no_verdict_before_the_budget_run_or_the_placement_report(bench: ModuleType,
                                                                  tmp_path: Path) -> None:
    assert bench.budget_target(ROWS, tmp_path, "sentiment", 0.6) is None  # no report yet
    means = {("last", 8): 0.83, ("middle", 4): 0.90, ("all", 8): 0.86}
    assert bench.budget_target(ROWS[1:], _placement(tmp_path, means), "sentiment", 0.6) is None
