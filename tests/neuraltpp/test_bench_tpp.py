"""The TPP benchmark (benchmarks/bench_tpp.py, tpp_report.py) end to end in its quick setting."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from neuraltpp import earthquakes
from neuraltpp.models import MODEL_NAMES
from neuraltpp.models.config import DECODERS

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def _fake_pycsep(cache: Path) -> None:
    """A stand-in pycsep wheel in ``cache`` with small ridgecrest and ucerf3 catalogs, so the
    benchmark runs offline on the catalogs' real loaders."""
    rng = np.random.default_rng(0)
    start = np.datetime64("2019-07-06T03:22:35")
    seconds = np.sort(rng.uniform(0, 7 * 86400, 60)).astype("timedelta64[s]")
    ridgecrest = ["lon,lat,M,time_string,depth,catalog_id,event_id"] + [
        f"-117.5,35.7,{m:.2f},{start + s},9.0,-1," for s, m in
        zip(seconds, rng.uniform(2.5, 5.0, 60), strict=True)
    ]
    origin = np.datetime64("1992-06-28T11:57:34")
    ucerf3 = ["lon,lat,mag,time_string,depth,catalog_id,event_id"]
    for catalog in range(20):
        n = int(rng.integers(3, 9))
        for s in np.sort(rng.uniform(0, 360 * 86400, n)).astype("timedelta64[s]"):
            ucerf3.append(f"-116.4,34.2,{rng.uniform(4.95, 6.0):.2f},{origin + s},5.0,{catalog},")
    wheel = cache / "wheels" / "pycsep-0.8.0-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(earthquakes.MEMBERS["ridgecrest"], "\n".join(ridgecrest) + "\n")
        archive.writestr(earthquakes.MEMBERS["ucerf3"], "\n".join(ucerf3) + "\n")


def _expected_runs() -> dict[str, set[str]]:
    """File names the quick plan with seeds 0 and 1 writes, per dataset."""
    def neural(size: str) -> set[str]:
        return {f"{m}-{d}-x{size}-seed{s}.json" for m in MODEL_NAMES for d in DECODERS
                for s in (0, 1)}

    sim = {"truth.json"} | {f"hawkes-fit-x{s}.json" for s in ("0.25", "1", "4")}
    catalog = {"hawkes-fit-x1.json"} | neural("1")
    return {"hawkes-sim": sim | neural("0.25") | neural("1") | neural("4"),
            "ridgecrest": catalog, "ucerf3": catalog}


def test_tpp_benchmark_runs_every_planned_run_reports_and_skips_finished_ones(
    tmp_path: Path,
) -> None:
    _fake_pycsep(tmp_path / "cache")
    env = {**os.environ, "NEURALTPP_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "tpp"
    command = [sys.executable, str(BENCHMARKS / "bench_tpp.py"), "--quick", "--quiet",
               "--seeds", "0", "1", "--out", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    runs = out / "runs"
    expected = _expected_runs()
    assert {d.name: {p.name for p in d.iterdir()} for d in runs.iterdir()} == expected
    records = {(d, name): json.loads((runs / d / name).read_text())
               for d, names in expected.items() for name in names}
    for record in records.values():
        assert math.isfinite(record["test"]["likelihood"]["ll_per_event"])
        assert record["peak_rss_bytes"] > 0
        assert record["machine"]["processor"] and len(record["load_average"]) == 3
    sim = {name: r for (d, name), r in records.items() if d == "hawkes-sim"}
    # x0.25, x1, x4 of the 8 quick training sequences, always the same 4 test sequences
    assert {s: sim[f"mhp-decay-x{s}-seed0.json"]["n_train_sequences"]
            for s in ("0.25", "1", "4")} == {"0.25": 2, "1": 8, "4": 32}
    assert {r["test"]["n_events"] for r in sim.values()} == {sim["truth.json"]["test"]["n_events"]}
    thp = sim["thp-thp-x1-seed1.json"]
    assert thp["epochs"] == 1 and len(thp["dev_ll_per_epoch"]) == 2
    assert thp["train_config"]["model_config"]["decoder"] == "thp"
    assert thp["test"]["head_prediction"]["type_accuracy"] is not None

    report_cmd = [sys.executable, str(BENCHMARKS / "tpp_report.py"), "--out", str(out)]
    proc = subprocess.run(report_cmd, capture_output=True, text=True, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "tpp_report.json").read_text())
    truth = sim["truth.json"]["test"]["likelihood"]["ll_per_event"]
    assert report["datasets"]["hawkes-sim"]["true_ll_per_event"] == truth
    row = next(r for r in report["datasets"]["hawkes-sim"]["rows"]
               if (r["model"], r["decoder"], r["size"]) == ("rothp", "decay", 4.0))
    lls = [sim[f"rothp-decay-x4-seed{s}.json"]["test"]["likelihood"]["ll_per_event"]
           for s in (0, 1)]
    assert row["ll_per_event"]["mean"] == pytest.approx(np.mean(lls))
    assert row["ll_per_event"]["std"] == pytest.approx(np.std(lls, ddof=1))
    assert row["gap_to_truth"]["mean"] == pytest.approx(np.mean(lls) - truth)
    assert all(r["gap_to_truth"] is None for r in report["datasets"]["ucerf3"]["rows"])
    curve = report["learning_curve"]
    assert curve["sizes"] == [0.25, 1.0, 4.0]
    assert len(curve["curves"]) == len(MODEL_NAMES) * len(DECODERS) + 1  # + the Hawkes fit
    goal = report["target"]
    assert goal["required_gap"] == -0.02 and goal["met"] == (goal["gap"] >= -0.02)
    neural = [r for r in report["datasets"]["hawkes-sim"]["rows"] if r["dev_ll_per_event"]]
    chosen = max(neural, key=lambda r: r["dev_ll_per_event"]["mean"])  # on dev, not on test
    assert (goal["model"], goal["decoder"], goal["size"]) == (
        chosen["model"], chosen["decoder"], chosen["size"])
    assert goal["ll_per_event"] == chosen["ll_per_event"]["mean"]
    markdown = (out / "tpp_report.md").read_text()
    assert "**Target**" in markdown and ("**met**" in markdown or "**MISSED**" in markdown)
    assert "## Learning curve" in markdown and "## ridgecrest" in markdown
    for png in ("tpp_learning_curve.png", "tpp_hawkes-sim.png", "tpp_ucerf3.png"):
        assert (out / png).stat().st_size > 0

    stamps = {p: p.stat().st_mtime_ns for p in runs.rglob("*.json")}
    again = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    assert again.returncode == 0, again.stderr
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*.json")} == stamps  # nothing re-run
    other = subprocess.run([*command, "--lr", "0.01"], capture_output=True, text=True,
                           check=False, env=env)
    assert other.returncode != 0 and "other settings" in other.stderr
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*.json")} == stamps

    # the report counts the CPUs runs were timed on and marks times of runs beside other jobs
    assert sum(report["timed_on"].values()) == len(records) - 1  # all but the truth
    shared, old = (runs / "ucerf3" / f"thp-thp-x1-seed{s}.json" for s in (0, 1))
    shared.write_text(json.dumps(records["ucerf3", shared.name] | {"load_average": [9, 9, 9]}))
    old.write_text(json.dumps({k: v for k, v in records["ucerf3", old.name].items()
                               if k not in ("machine", "load_average")}))
    for seed in (0, 1):  # an idle machine: no mark, whatever the load while the test ran
        idle = runs / "ucerf3" / f"thp-decay-x1-seed{seed}.json"
        idle.write_text(json.dumps(records["ucerf3", idle.name] | {"load_average": [0, 0, 0]}))
    proc = subprocess.run(report_cmd, capture_output=True, text=True, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "tpp_report.json").read_text())
    assert report["timed_on"]["not recorded"] == 1
    row = next(r for r in report["datasets"]["ucerf3"]["rows"]
               if (r["model"], r["decoder"]) == ("thp", "thp"))
    assert row["shared_runs"] == 1 and row["processors"][1] == "not recorded"
    ucerf3 = (out / "tpp_report.md").read_text().split("## ucerf3")[1].splitlines()
    assert "†" in next(line for line in ucerf3 if line.startswith("| THP (thp) |"))
    assert "†" not in next(line for line in ucerf3 if line.startswith("| THP (decay) |"))


def test_protocol_benchmark_quick_runs_reports_claims_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "protocols"
    command = [sys.executable, str(BENCHMARKS / "bench_tpp_protocols.py"), "--out", str(out),
               "--quick", "--quiet", "--models", "thp", "rothp", "--seeds", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.name for p in (out / "runs").glob("*.json"))
    assert runs == sorted(["truth.json"] + [f"{m}-decay-{t}-seed0.json" for m in ("thp", "rothp")
                                            for t in ("clean", "noise", "future", "short")])
    clean = json.loads((out / "runs" / "rothp-decay-clean-seed0.json").read_text())
    # RoTHP encodes time differences: translating the test times leaves its LL, in both modes
    for mode in ("correct", "legacy"):
        values = [v for k, v in clean[mode].items() if k.startswith("shift=")]
        assert len(values) == 6 and max(values) - min(values) < 1e-4
    assert isinstance(clean["future_excluded"], list)  # recorded, even when none is left out
    truth = json.loads((out / "runs" / "truth.json").read_text())["correct"]
    assert truth["future"] > -math.inf and truth["shift=1e+06"] == pytest.approx(truth["shift=0"])
    report = json.loads((out / "protocols_report.json").read_text())
    claims = {c["protocol"]: c for c in report["claims"]["decay"]}
    assert claims["translation"]["correct"] is not None and claims["clean"]["correct"] is None
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    again = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()} == stamps
    assert "| translation |" in (out / "protocols_report.md").read_text()
    other = [*command[: command.index("--seeds")], "--seeds", "1", "--max-runs", "0"]
    assert subprocess.run(other, capture_output=True, check=False, env=env).returncode == 0
    assert json.loads((out / "meta.json").read_text())["seeds"] == [0, 1]  # both recorded


def test_tpp_benchmark_trains_on_the_likelihood_alone_with_both_head_losses_off(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "NEURALTPP_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "tpp"
    command = [sys.executable, str(BENCHMARKS / "bench_tpp.py"), "--quick", "--quiet",
               "--datasets", "hawkes-sim", "--models", "thp", "--decoders", "decay",
               "--seeds", "0", "--sizes", "1", "--out", str(out)]
    proc = subprocess.run([*command, "--type-loss", "0", "--gap-loss", "0"],
                          capture_output=True, text=True, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    run = json.loads((out / "runs" / "hawkes-sim" / "thp-decay-x1-seed0.json").read_text())
    assert (run["train_config"]["type_loss_weight"], run["train_config"]["gap_loss_weight"]) == (
        0.0, 0.0)
    assert json.loads((out / "meta.json").read_text())["settings"]["type_loss"] == 0.0
    mixed = subprocess.run([*command, "--gap-loss", "0"], capture_output=True, text=True,
                           check=False, env=env)  # the default type-loss weight 1 differs
    assert mixed.returncode != 0 and "type_loss" in mixed.stderr
    negative = subprocess.run([*command, "--type-loss", "-1"], capture_output=True, text=True,
                              check=False, env=env)
    assert negative.returncode == 2 and "--type-loss must be >= 0" in negative.stderr
