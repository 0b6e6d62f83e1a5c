"""The `layercard` command end to end on a tiny random Llama with a hand-made tokenizer."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from scipy.stats import spearmanr
from transformers import AutoModelForCausalLM

from layercard.cli import main, make_parser
from layercard.codec import read_card
from layercard.config import BuildConfig, CostSettings, config_from_args
from layercard.decide import greedy_order
from layercard.memory import GIB, group_bytes
from layercard.schema import SCHEMA

Launch = Callable[..., subprocess.CompletedProcess]  # the `launch` fixture (conftest)

N_LAYERS = 3  # of the tiny_model fixture
# small but complete: cost on two depths, probes, coupling on a subset of the probe examples
FAST = ["--probe-examples", "16", "--batch-size", "4", "--max-length", "32",
        "--coupling-examples", "8", "--probe-steps", "2", "--probe-dev-examples", "4",
        "--cost-depths", "2", "--cost-steps", "1", "--quiet"]


@pytest.fixture(scope="module")
def built(tiny_model: Path, tiny_task: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One card directory built through the CLI with the FAST settings."""
    out = tmp_path_factory.mktemp("cards") / "card"
    status = main(["build", "--model", str(tiny_model), "--task", str(tiny_task),
                   "--out", str(out), *FAST])
    assert status == 0
    return out


def _build_args(model: Path | str, task: Path | str, out: Path, *extra: str) -> list[str]:
    return ["build", "--model", str(model), "--task", str(task), "--out", str(out), *extra]


def _option_fields(cls: type) -> list[tuple[str, object, dataclasses.Field]]:
    """(flag, default, field) of every BuildConfig setting with a CLI flag, nested included."""
    found = []
    for f in dataclasses.fields(cls):
        if "flag" in f.metadata:
            found.append((f.metadata["flag"], f.default, f))
        elif f.default_factory is not dataclasses.MISSING:
            found += _option_fields(f.default_factory)
    return found


def test_help_lists_the_commands_and_every_build_setting_with_its_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert re.search(r"^\s+build\s+measure a model on a task and write a Layer Card", text, re.M)
    assert re.search(r"^\s+show\s+print a Layer Card", text, re.M)
    assert re.search(r"^\s+fetch\s+download the built-in model and tasks", text, re.M)

    with pytest.raises(SystemExit):
        main(["build", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # unwrap argparse's line breaks
    assert "usage: layercard build [-h] --out DIR --model MODEL --task TASK" in text
    options = _option_fields(BuildConfig)
    assert {flag for flag, _, _ in options} >= {
        "--model", "--task", "--probe-examples", "--batch-size", "--max-length", "--rank",
        "--ridge", "--coupling-examples", "--layer-groups", "--probe-steps", "--seed", "--cost",
        "--cost-depths", "--cost-steps", "--quiet",
    }
    for flag, default, f in options:
        assert flag in text
        if f.type in ("int", "float"):
            metavar = f.metadata["metavar"]
            assert f"{flag} {metavar} {f.metadata['help']} (default: {default})" in text
    assert "--no-cost" in text and "card.json" in text and "timings" in text

    with pytest.raises(SystemExit):
        main(["show", "--help"])
    text = capsys.readouterr().out
    assert "card.json, or the directory holding it" in text and "--width N" in text
    with pytest.raises(SystemExit):
        main(["fetch", "--help"])
    assert "$LAYERCARD_CACHE" in capsys.readouterr().out


def test_build_options_set_exactly_their_build_config_field(tmp_path: Path) -> None:
    base = ["build", "--model", "m", "--task", "t", "--out", str(tmp_path)]
    parser = make_parser()
    assert config_from_args(BuildConfig, parser.parse_args(base)) == BuildConfig("m", "t")
    changed = {
        "--probe-examples": ("probe_examples", "300", 300),
        "--ridge": ("ridge_eps", "0.5", 0.5),
        "--layer-groups": ("layer_groups", "3", 3),
        "--seed": ("seed", "7", 7),
        "--no-cost": ("cost", None, False),
        "--quiet": ("progress", None, False),
    }
    for flag, (name, text, value) in changed.items():
        args = parser.parse_args([*base, flag] if text is None else [*base, flag, text])
        assert config_from_args(BuildConfig, args) == dataclasses.replace(
            BuildConfig("m", "t"), **{name: value}
        )
    args = parser.parse_args([*base, "--cost-steps", "9", "--cost-depths", "2"])
    assert config_from_args(BuildConfig, args).cost_settings == CostSettings(
        depths=2, timed_steps=9
    )


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--rank", "0"], "--rank"),
        (["--ridge", "-1"], "--ridge"),
        (["--ridge", "nan"], "--ridge"),
        (["--probe-examples", "0"], "--probe-examples"),
        (["--batch-size", "-2"], "--batch-size"),
        (["--probe-steps", "-1"], "--probe-steps"),
        (["--max-length", "1"], "--max-length"),
        (["--cost-depths", "0"], "--cost-depths"),
        (["--layer-groups", "0"], "--layer-groups"),
        (["--rank", "eight"], "--rank"),
    ],
)
def test_bad_numbers_exit_2_naming_the_option(
    extra: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _build_args("smollm2-135m", "sentiment", tmp_path / "out", *extra)
    try:
        status = main(args)
    except SystemExit as exit_info:  # argparse rejects non-numbers itself
        status = exit_info.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err
    assert not (tmp_path / "out").exists()


def test_bad_model_task_and_out_exit_2_naming_the_argument(
    tiny_model: Path, tiny_task: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(_build_args(tmp_path / "no-such-model", tiny_task, out, "--quiet")) == 2
    assert "--model" in capsys.readouterr().err
    assert main(_build_args(tiny_model, tmp_path / "missing.jsonl", out, "--quiet")) == 2
    assert "--task" in capsys.readouterr().err
    more_groups = str(N_LAYERS + 1)
    assert main(_build_args(tiny_model, tiny_task, out, "--layer-groups", more_groups)) == 2
    assert "--layer-groups" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("not a task")
    assert main(_build_args(tiny_model, tmp_path / "notes.txt", out, "--quiet")) == 2
    assert "unsupported file type" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert main(_build_args(tiny_model, tiny_task, busy, "--quiet")) == 2
    assert "--out" in capsys.readouterr().err
    assert not out.exists()


def test_show_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(tmp_path / "card.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "card.json").write_text('{"schema": "other"}')
    assert main(["show", str(tmp_path)]) == 2
    assert "schema 'other' is not supported" in capsys.readouterr().err


def test_build_writes_a_complete_card(built: Path) -> None:
    names = sorted(p.name for p in built.iterdir())
    assert names == ["card.json", "card.md", "conditioning.png", "cost.png", "coupling.png",
                     "gain_vs_cost.png", "resnorm.png"]
    card = read_card(built / "card.json")
    assert card.schema == SCHEMA
    p = card.provenance
    assert p.model.n_layers == card.n_layers == N_LAYERS
    assert len(p.model.weights_hash) == 64 and len(p.task.data_hash) == 64
    assert p.settings.probe_examples == 16 and p.settings.rank == 8
    assert set(p.versions) >= {"torch", "transformers", "peft", "python"}
    assert len(card.sites) == 7 * N_LAYERS  # q, k, v, o, gate, up, down per block
    for site in card.sites:
        assert 0 <= site.rel_resnorm <= 1
        assert site.resnorm2_rank <= site.resnorm2 + 1e-12
        assert site.noise_amplification >= 1 - 1e-9
    rho = torch.tensor(card.coupling.matrix)
    assert torch.allclose(rho, rho.T) and torch.all(rho.diagonal() == 1)
    assert card.coupling.n_examples == 8
    assert card.cost is not None and card.timings.cost is not None
    assert card.cost.memory.all_layers_bytes > 0
    assert card.probe is not None and len(card.probe.gains) == N_LAYERS
    assert card.probe.base_dev_loss > 0 and all(math.isfinite(g) for g in card.probe.gains)
    assert -1 <= card.probe.spearman <= 1
    front = (built / "card.md").read_text().split("---\n")[1]
    assert f"base_model: {p.model.id}" in front


def test_show_renders_the_built_card(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(built / "card.json")]) == 0
    text = capsys.readouterr().out
    assert "Layer Card (layercard/card@1)" in text
    assert "Findings" in text and "Spearman" in text
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("layer "))
    table = lines[start + 2 : start + 2 + N_LAYERS]
    assert [int(line.split()[0]) for line in table] == list(range(N_LAYERS))
    assert lines[start + 2 + N_LAYERS] == ""


def test_same_seed_gives_identical_card_json_except_timings(
    tiny_model: Path, tiny_task: Path, built: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    assert main(_build_args(tiny_model, tiny_task, again, *FAST)) == 0
    first = json.loads((built / "card.json").read_text())
    second = json.loads((again / "card.json").read_text())
    assert first.pop("timings") != second.pop("timings")  # wall clock differs...
    assert first == second  # ...everything else is identical
    other = tmp_path / "other-seed"
    assert main(_build_args(tiny_model, tiny_task, other, *FAST, "--seed", "1")) == 0
    third = json.loads((other / "card.json").read_text())
    assert third["provenance"]["task"]["split_seed"] == 1
    assert third["layers"] != first["layers"]  # another split → another probe set


def test_benchmark_quick_smoke_run(tiny_model: Path, tiny_task: Path, tmp_path: Path) -> None:
    script = Path(__file__).parents[2] / "benchmarks" / "bench_card.py"
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--quiet", "--model", str(tiny_model),
         "--task", str(tiny_task), "--out", str(out)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "bench_card.json").read_text())
    assert result["quick"] and result["probe_examples"] == 16 and result["train_examples"] == 32
    for key in ("floor_seconds", "floor_sorted_seconds", "epoch_seconds", "cost_seconds"):
        assert result[key] > 0
    assert [build["layer_groups"] for build in result["builds"]] == [2, 1]
    assert result["repeats"] == 2
    for build in result["builds"]:  # the slower of two runs, with both recorded
        assert len(build["runs_seconds"]) == 2
        assert build["seconds"] == max(build["runs_seconds"])
    full = result["full_build"]
    assert full["cost"] and full["layer_groups"] == 2
    assert not any(build["cost"] for build in result["builds"])
    assert "cost" not in result["builds"][0]["stages"]
    assert result["cost_seconds"] == full["stages"]["cost"]
    assert full["seconds"] == pytest.approx(full["stages"]["measure"] + full["stages"]["cost"])
    for build in [*result["builds"], full]:
        assert build["seconds"] > 0
        assert build["ratio"] == pytest.approx(build["seconds"] / result["epoch_seconds"])
        assert build["peak_rss_bytes"] > 100 * 2**20  # a real process with torch loaded
    assert {"torch", "transformers", "peft", "python"} <= set(result["versions"])
    assert result["machine"]["cpu_count"] >= 1
    assert (out / "bench_card.png").read_bytes().startswith(b"\x89PNG")
    assert "card build" in (out / "bench_card.md").read_text()


def test_probe_benchmark_runs_every_planned_run_and_skips_finished_ones(
    tiny_model: Path, tiny_task: Path, tmp_path: Path
) -> None:
    script = Path(__file__).parents[2] / "benchmarks" / "bench_probes.py"
    out = tmp_path / "probes"
    command = [sys.executable, str(script), "--quick", "--quiet", "--model", str(tiny_model),
               "--tasks", str(tiny_task), "--long-count", "2", "--out", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    runs = out / "runs" / "reviews"
    files = sorted(p.name for p in runs.glob("L*.json"))
    # 3 layers x 2 seeds, 2 longer runs (bottom and top) x 2 seeds, and the multi-layer sets
    assert len([f for f in files if f.endswith("-s2-seed0.json") and "_" not in f]) >= 3
    assert {"L0-s2-seed1.json", "L2-s2-seed1.json", "L0-s4-seed0.json", "L2-s4-seed0.json",
            "L0-s4-seed1.json", "L2-s4-seed1.json", "L0-2-s2-seed0.json"} <= set(files)
    run = json.loads((runs / "L1-s2-seed0.json").read_text())
    base = json.loads((runs / "base.json").read_text())
    assert run["gain"] == pytest.approx(base["dev_loss"] - run["dev_loss"])
    assert 0.0 <= run["accuracy"] <= 1.0 and len(run["train_losses"]) == 2
    stamps = {p.name: p.stat().st_mtime_ns for p in runs.iterdir() if p.name != "meta.json"}
    again = subprocess.run(command, capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in runs.iterdir() if p.name != "meta.json"} == (
        stamps  # nothing re-run
    )
    scripts = Path(__file__).parents[2] / "benchmarks"
    steps = {
        "probe_features.py": ["--tasks", str(tiny_task), "--model", str(tiny_model),
                              "--probe-examples", "16"],
        "probe_line.py": ["--tasks", str(tiny_task), "--model", str(tiny_model),
                          "--probe-examples", "16", "--probe-steps", "2", "--dev-batches", "1"],
        "probe_correction.py": ["--tasks", str(tiny_task), "--model", str(tiny_model),
                                "--probe-examples", "16", "--dev-batches", "1"],
        "probe_report.py": ["--tasks", "reviews", "--steps", "2", "--choose-on", "reviews"],
    }
    for script, extra in steps.items():
        proc = subprocess.run(
            [sys.executable, str(scripts / script), "--out", str(out), *extra],
            capture_output=True, text=True, check=False,
        )
        assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "probe_report.json").read_text())
    [task] = report["tasks"]
    gains = [json.loads((runs / f"L{i}-s2-seed0.json").read_text())["gain"] for i in range(3)]
    assert task["gains"] == gains
    assert set(task["spearman_gain"]) >= {"predicted_gain", "rel_resnorm", "depth", "lora_l1",
                                          "label_lora_l1", "adam_line", "correction_line",
                                          "adam_correction", "adam_aligned_correction"}
    assert task["long"]["layers"] == task["long"]["seed_layers"] == [0, 2]
    assert task["long"]["long_gains"] == [  # the first seed's; the second seed's are its noise
        json.loads((runs / f"L{i}-s4-seed0.json").read_text())["gain"] for i in (0, 2)]
    # every predictor is also ranked against the longer runs
    assert set(task["long"]["spearman_predictors"]) == set(task["spearman_gain"])
    correction = json.loads((out / "features" / "reviews-correction.json").read_text())
    assert len(correction["correction_line"]) == 3
    # the best of a grid that starts at a 1e-4 relative step: never much below no change
    assert all(math.isfinite(v) and v > -1e-2 for v in correction["correction_line"])
    line = json.loads((out / "features" / "reviews-line.json").read_text())["adam_line"]
    assert len(line) == 3 and all(math.isfinite(v) for v in line)
    assert task["spearman_gain"]["depth"] == pytest.approx(
        float(spearmanr(range(3), gains).statistic)
    )
    assert (out / "probe_report.md").read_text().startswith("# Probe benchmark")


def test_a_long_row_anywhere_in_the_task_is_an_error(
    tiny_model: Path, tiny_task: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = tiny_task.read_text().splitlines()
    long = json.dumps({"prompt": "Review: " + " ".join(["good"] * 40) + "\nSentiment:",
                       "label": "positive"})
    task = tmp_path / "long.jsonl"
    task.write_text("\n".join([*rows, long]) + "\n")
    out = tmp_path / "card"
    assert main(_build_args(tiny_model, task, out, *FAST)) == 2  # probes use 16 of 81 rows
    err = capsys.readouterr().err
    assert "long.jsonl:81" in err and "max_length=32" in err
    assert not out.exists()


def test_memory_budget_picks_the_layer_groups_or_names_the_option(
    tiny_model: Path, tiny_task: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    per_layer = group_bytes(model, N_LAYERS) / GIB
    small = tmp_path / "small"
    assert main(_build_args(tiny_model, tiny_task, small, "--memory-budget", "1e-9")) == 2
    err = capsys.readouterr().err
    assert "error: --memory-budget: the statistics of one layer take" in err  # after loading
    assert err.count("error:") == 1
    assert not small.exists()
    fast = [*FAST, "--probe-steps", "0", "--no-cost"]
    budget = ["--memory-budget", repr(per_layer * 1.5)]  # one layer fits, two do not
    assert main(_build_args(tiny_model, tiny_task, tmp_path / "fit", *fast, *budget)) == 0
    assert "layer groups" not in capsys.readouterr().err  # --quiet
    fast.remove("--quiet")
    assert main(_build_args(tiny_model, tiny_task, tmp_path / "told", *fast, *budget)) == 0
    assert f"layer groups: {N_LAYERS} (statistics" in capsys.readouterr().err
    a, b = read_card(tmp_path / "fit" / "card.json"), read_card(tmp_path / "told" / "card.json")
    assert [x.resnorm2 for x in a.sites] == [x.resnorm2 for x in b.sites]


def test_a_two_process_build_gives_the_single_process_card(
    tiny_model: Path, tiny_task: Path, tmp_path: Path, launch: Launch
) -> None:
    fast = [*FAST, "--probe-steps", "0", "--no-cost"]  # later flags win
    single, double = tmp_path / "one", tmp_path / "two"
    assert main(_build_args(tiny_model, tiny_task, single, *fast)) == 0
    proc = launch(2, "layercard.cli", *_build_args(tiny_model, tiny_task, double, *fast))
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = read_card(single / "card.json"), read_card(double / "card.json")
    assert a.base_loss == pytest.approx(b.base_loss, rel=1e-6)
    # the sums are float64, so the order the batches are added in no longer shows
    for x, y in zip(a.sites, b.sites, strict=True):
        for name in ("resnorm2", "resnorm2_rank", "rel_resnorm", "grad_norm", "act_energy",
                     "condition_number", "noise_amplification"):
            assert getattr(x, name) == pytest.approx(getattr(y, name), rel=1e-5), name
    for row_a, row_b in zip(a.coupling.matrix, b.coupling.matrix, strict=True):
        assert row_b == pytest.approx(row_a, rel=1e-5, abs=1e-9)
    assert [i for i, _ in greedy_order(a)] == [i for i, _ in greedy_order(b)]
