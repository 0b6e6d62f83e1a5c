"""`layercard train` / `eval` on a tiny saved Llama: layer choices, resume after a kill, scores."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel
from peft.helpers import KappaTuneSelector
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, Trainer

from layercard.cli import main
from layercard.codec import read_card
from layercard.config import TrainConfig
from layercard.decide import Objective, place
from layercard.evaluation import EvalConfig, evaluate
from layercard.finetune import TrainDirError, read_summary, train
from layercard.strategies import LayerSpecError

SMALL = ["--train-examples", "24", "--batch-size", "4", "--max-length", "32",
         "--save-steps", "2", "--quiet"]


def _config(model: Path, task: Path, **changes) -> TrainConfig:
    base = TrainConfig(model=str(model), task=str(task), layers="middle", k=1,
                       train_examples=24, batch_size=4, max_length=32, save_steps=2,
                       progress=False)
    return replace(base, **changes)


def _adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "adapter" / "adapter_model.safetensors")


def test_train_adapts_exactly_the_chosen_layers(tiny_model: Path, tiny_task: Path,
                                                tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", "--model", str(tiny_model), "--task", str(tiny_task),
                 "--layers", "0,2", "--out", str(out), *SMALL]) == 0
    summary = read_summary(out)
    assert summary.choice.layers == [0, 2] and summary.steps == 6  # 24 examples / 4
    weights = _adapter(out)
    layers = {int(k.split(".layers.")[1].split(".")[0]) for k in weights}
    assert layers == {0, 2}
    assert summary.trainable_params == sum(v.numel() for v in weights.values())
    assert any(float(v.abs().sum()) > 0 for k, v in weights.items() if "lora_B" in k)
    assert summary.peak_memory_bytes > 0 and summary.train_seconds > 0
    assert len(summary.train_losses) == summary.steps
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert isinstance(PeftModel.from_pretrained(base, out / "adapter"), PeftModel)


def test_strategies_share_the_identical_lora_config(tiny_model: Path, tiny_task: Path,
                                                    tmp_path: Path) -> None:
    configs = {}
    for strategy in ("first", "last"):
        out = tmp_path / strategy
        train(_config(tiny_model, tiny_task, layers=strategy), out)
        configs[strategy] = json.loads((out / "adapter" / "adapter_config.json").read_text())
    first, last = configs["first"], configs["last"]
    assert first.pop("layers_to_transform") == [0] and last.pop("layers_to_transform") == [2]
    assert first == last


def test_kappa_adapts_the_lowest_condition_number_modules(tiny_model: Path, tiny_task: Path,
                                                          tmp_path: Path) -> None:
    summary = train(_config(tiny_model, tiny_task, layers="kappa"), tmp_path / "kappa")
    assert summary.choice.modules is not None and len(summary.choice.modules) == 7
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    ranked = [m for m in KappaTuneSelector(model, show_progress=False).get_best_targets()
              if ".layers." in m]
    assert summary.choice.modules == ranked[:7]
    adapted = {k.split(".lora_")[0].removeprefix("base_model.model.")
               for k in _adapter(tmp_path / "kappa")}
    assert adapted == set(ranked[:7])


def test_resume_after_a_kill_gives_the_uninterrupted_adapter(
    tiny_model: Path, tiny_task: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tiny_model, tiny_task)
    train(config, tmp_path / "straight")
    original = Trainer.training_step
    calls = []

    def dying(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # after the step-4 checkpoint
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", dying)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "killed")
    monkeypatch.setattr(Trainer, "training_step", original)
    assert not (tmp_path / "killed" / "train.json").exists()
    with pytest.raises(TrainDirError, match="other settings"):
        train(replace(config, lr=5e-4), tmp_path / "killed")
    resumed = train(config, tmp_path / "killed")
    assert resumed.resumed
    straight, again = _adapter(tmp_path / "straight"), _adapter(tmp_path / "killed")
    assert straight.keys() == again.keys()
    for key in straight:
        torch.testing.assert_close(again[key], straight[key], rtol=0, atol=1e-6)


def test_train_refuses_foreign_and_finished_directories(tiny_model: Path, tiny_task: Path,
                                                        tmp_path: Path) -> None:
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep me")
    args = ["train", "--model", str(tiny_model), "--task", str(tiny_task), "--layers", "1",
            *SMALL]
    assert main([*args, "--out", str(foreign)]) == 2
    assert (foreign / "mine.txt").read_text() == "keep me"
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    assert main([*args, "--out", str(tmp_path / "run")]) == 2  # finished: not redone
    assert main([*args, "--out", str(tmp_path / "x"), "--layers", "7"]) == 2
    assert main([*args, "--out", str(tmp_path / "y"), "--budget", "time=0.5"]) == 2
    assert not (tmp_path / "y").exists()


def test_eval_scores_the_adapter_and_the_base_model(tiny_model: Path, tiny_task: Path,
                                                    tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(_config(tiny_model, tiny_task, layers="all", lr=1e-2), run)
    adapted = evaluate(EvalConfig(run=str(run), latency_tokens=3))
    base = evaluate(EvalConfig(run=None, model=str(tiny_model), task=str(tiny_task),
                               latency_tokens=3))
    assert adapted.metric == base.metric == "accuracy"
    assert 0.0 <= adapted.accuracy <= 1.0 and adapted.n_examples == base.n_examples > 0
    assert adapted.loss < base.loss  # the adapter learned the label format
    assert adapted.latency_unmerged > 0 and adapted.latency_merged > 0
    assert base.latency_unmerged is None
    out = tmp_path / "eval.json"
    assert main(["eval", str(run), "--latency-tokens", "2", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["accuracy"] == pytest.approx(adapted.accuracy)
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert main(["eval", "--model", str(tiny_model)]) == 2


def test_lora_config_of_an_explicit_list_is_peft_loadable(tiny_model: Path, tiny_task: Path,
                                                          tmp_path: Path) -> None:
    train(_config(tiny_model, tiny_task, layers="1-2"), tmp_path / "r")
    config = LoraConfig.from_pretrained(tmp_path / "r" / "adapter")
    assert config.layers_to_transform == [1, 2] and config.r == 8


def test_placement_benchmark_resumes_and_reports(tiny_model: Path, tiny_task: Path,
                                                 tmp_path: Path) -> None:
    script = Path(__file__).parents[2] / "benchmarks" / "bench_placement.py"
    out = tmp_path / "placement"
    command = [sys.executable, str(script), "--quick", "--quiet", "--model", str(tiny_model),
               "--tasks", str(tiny_task), "--seeds", "0", "--max-length", "32",
               "--work", str(tmp_path / "work"), "--out", str(out), "--max-runs", "3"]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    runs = out / "runs" / "reviews"
    first = {p.name: p.stat().st_mtime_ns for p in runs.glob("*-seed0.json")}
    assert sorted(first) == ["all-seed0.json", "card-k8-seed0.json", "middle-k8-seed0.json"]
    record = json.loads((runs / "middle-k8-seed0.json").read_text())
    assert record["layers"] == [0, 1, 2]  # k = 8 of a 3-layer model: clipped to every layer
    assert 0.0 <= record["test"]["accuracy"] <= 1.0
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    now = {p.name: p.stat().st_mtime_ns for p in runs.glob("*-seed0.json")}
    assert {k: now[k] for k in first} == first and len(now) == 6  # 3 skipped, 3 new
    report = json.loads((out / "placement_report.json").read_text())
    assert {row["strategy"] for row in report[0]["rows"]} == {"all", "card", "middle", "first",
                                                              "last", "uniform"}
    assert "| all |" in (out / "placement_report.md").read_text()
    only = [*command[:-2], "--max-runs", "1", "--strategies", "kappa", "random"]
    proc = subprocess.run(only, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    latest = {p.name for p in runs.glob("*-seed0.json")} - set(now)
    assert latest == {"kappa-k8-seed0.json"}  # the first strategy asked for, before random
    settings = json.loads((out / "meta.json").read_text())["settings"]
    assert "budget" in settings["strategies"] and "first" in settings["strategies"]  # kept

    cost = tmp_path / "step-cost"  # the same runs' layer sets, timed interleaved
    cost_cmd = [sys.executable, str(script.with_name("bench_step_cost.py")), "--quick", "--quiet",
                "--model", str(tiny_model), "--tasks", str(tiny_task), "--max-length", "32",
                "--placement", str(out), "--out", str(cost)]
    proc = subprocess.run(cost_cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    rows = {r["run"]: r for r in json.loads((cost / "step_cost.json").read_text())[0]["rows"]}
    assert set(rows) == {p.stem for p in runs.glob("*-seed0.json")} - {"kappa-k8-seed0"}
    assert rows["all-seed0"]["measured_ratio"] == 1.0
    assert rows["all-seed0"]["predicted_ratio"] == pytest.approx(1.0)
    assert all(r["step_seconds"] > 0 for r in rows.values())
    (same,) = json.loads((cost / "step_cost.json").read_text())[0]["identical_sets"]
    assert {"all-seed0", "middle-k8-seed0"} <= set(same["runs"])  # k = 8 of 3 layers: all of them
    timed = cost / "runs" / "reviews" / "round-0.json"
    stamp = timed.stat().st_mtime_ns
    proc = subprocess.run(cost_cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert timed.stat().st_mtime_ns == stamp  # the finished round is skipped
    extra = json.loads((runs / "middle-k8-seed0.json").read_text()) | {"layers": [2]}
    (runs / "extra-k1-seed0.json").write_text(json.dumps(extra))  # a run added since
    proc = subprocess.run(cost_cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(timed.read_text())["seconds"]) == {*rows, "extra-k1-seed0"}
    assert "| extra-k1-seed0 | 2 |" in (cost / "step_cost.md").read_text()


def test_auto_builds_a_card_once_and_follows_its_placement(tiny_model: Path, tiny_task: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "auto"
    summary = train(_config(tiny_model, tiny_task, layers="auto", k=2), out)
    card = read_card(out / "card" / "card.json")
    assert summary.choice.layers == place(card, Objective(max_layers=2)).chosen.layers
    assert summary.card_seconds == card.timings.stages["total"] > 0


def test_two_processes_train_data_parallel_and_only_the_main_one_writes(
    tiny_model: Path, tiny_task: Path, tmp_path: Path, launch: Callable
) -> None:
    out = tmp_path / "ddp"
    proc = launch(2, "layercard.cli", "train", "--model", str(tiny_model), "--task",
                  str(tiny_task), "--layers", "1", "--out", str(out), *SMALL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("layers: 1") == 1  # reported once, by rank 0
    summary = read_summary(out)
    assert summary.steps == 3  # 24 examples, 4 per process and step, 2 processes
    assert {int(k.split(".layers.")[1].split(".")[0]) for k in _adapter(out)} == {1}


def test_auto_without_a_card_is_refused_in_a_multi_process_run(
    tiny_model: Path, tiny_task: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(LayerSpecError, match="needs --card"):
        train(_config(tiny_model, tiny_task, layers="auto"), tmp_path / "auto")
