"""The EasyTPP peer benchmark's comparison (benchmarks/easytpp_peer.py) on hand-made records:
times from the same run, the best model on each side, and the report's rows."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


@pytest.fixture
def peer(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("easytpp_peer")


def _easytpp(ll: float, train_s: float, train_dev_s: float, cpu_s: float) -> dict:
    conventions = {k: {"ll_per_event": ll} for k in ("easytpp", "gl_no_tail", "neuraltpp")}
    return {
        "parameters": 1, "best_epoch": 3, "test_ll_per_event": ll,
        "test_conventions": conventions,
        "timing": {"train_seconds_per_epoch": train_s, "train_dev_seconds_per_epoch": train_dev_s,
                   "train_cpu_seconds_per_epoch": cpu_s, "epoch_seconds_per_epoch": train_dev_s,
                   "train_loop_seconds": 40 * train_dev_s, "whole_run_seconds": 50.0},
        "load_average_1_5_15": {"before": [1.0, 1.0, 1.0], "after": [2.0, 1.0, 1.0]},
    }


def _results(peer: ModuleType) -> dict:
    args = argparse.Namespace(data_seed=0, epochs=40, lr=3e-3, batch_size=16, seed=0,
                              train_sequences=None, eval_sequences=None, data_format="json",
                              dropout=0.0)
    same = {"parameters": 2, "best_epoch": 30, "test_ll_per_event": -0.95,
            "timing": {"seconds_per_epoch": 0.5, "cpu_seconds_per_epoch": 0.25,
                       "train_seconds": 20.0, "eval_seconds": 1.0},
            "load_average_1_5_15": {"before": [3.0, 1.0, 1.0], "after": [3.5, 1.0, 1.0]}}
    return {"settings": peer.settings_of(args), "machine": {"cpu_count": 2},
            "models": {"THP": _easytpp(-0.98, 1.5, 2.0, 1.0), "NHP": _easytpp(-0.91, 3, 3, 3)},
            "neuraltpp_reference": None, "neuraltpp_same_run": same}


def test_speedups_come_from_the_same_run(peer: ModuleType) -> None:
    results = _results(peer)
    assert results["settings"]["easytpp_model_config"]["THP"]["dropout_rate"] == 0.0
    cmp = peer.comparison(results)
    assert cmp["thp_speedup_vs_train_dev"] == pytest.approx(2.0 / 0.5)
    assert cmp["thp_speedup_vs_train_pass"] == pytest.approx(1.5 / 0.5)
    assert cmp["thp_cpu_speedup_vs_train_pass"] == pytest.approx(1.0 / 0.25)
    assert cmp["thp_whole_run_neuraltpp_seconds"] == pytest.approx(21.0)
    # the best of each side under neuraltpp's convention: NHP beats the same-run THP
    assert (cmp["best_easytpp"], cmp["best_neuraltpp"]) == ("NHP", peer.SAME_RUN)
    assert cmp["ll_difference"] == pytest.approx(-0.95 + 0.91)
    results["comparison"] = cmp
    text = peer.render_markdown(results)
    assert f"| neuraltpp {peer.SAME_RUN} | 2 | 30 | | | | -0.9500 |" in text
    assert f"| neuraltpp {peer.SAME_RUN} | | 0.50 (0.25) | | 20.0 | (+ test 1.0) |" in text
    assert "1-minute load average 1.0–3.5" in text  # the same run's load counts too


def test_no_timing_ratio_without_both_thps(peer: ModuleType) -> None:
    results = _results(peer)
    del results["neuraltpp_same_run"]
    assert peer.comparison(results) is None  # no neuraltpp model at all
    results = _results(peer)
    del results["models"]["THP"]
    cmp = peer.comparison(results)
    assert cmp["best_easytpp"] == "NHP" and "thp_speedup_vs_train_pass" not in cmp


def test_bench_tpp_runs_are_shown_only_at_their_dropout(peer: ModuleType) -> None:
    settings = _results(peer)["settings"]  # dropout 0: bench_tpp's runs used 0.1
    assert peer.neuraltpp_reference(settings) is None
    settings["easytpp_model_config"] = peer.model_configs(0.1)  # the committed runs' dropout
    assert "rothp-decay" in peer.neuraltpp_reference(settings)["runs"]
