"""The TPP scaling benchmark (benchmarks/bench_tpp_scaling.py) on short lengths: runs, the
exponent of time in L, and resume."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "bench_tpp_scaling.py"


def test_short_lengths_give_an_exponent_and_a_rerun_skips_them(tmp_path: Path) -> None:
    out = tmp_path / "scaling"
    command = [sys.executable, str(SCRIPT), "--out", str(out), "--models", "thp", "mhp",
               "--lengths", "512", "2048", "--repeats", "1", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "tpp_scaling.json").read_text())
    assert sorted((r["model"], r["length"]) for r in result["runs"]) == [
        ("mhp", 512), ("mhp", 2048), ("thp", 512), ("thp", 2048)]
    for run in result["runs"]:
        assert run["seconds"] > 0 and run["peak_rss_bytes"] > 0 and len(run["all_seconds"]) == 2
    by = {(r["model"], r["length"]): r["seconds"] for r in result["runs"]}
    for model in ("thp", "mhp"):  # the slope of the recorded times; its size is the benchmark's
        slope = math.log(by[model, 2048] / by[model, 512]) / math.log(4)
        assert math.isclose(result["exponents"][model], slope, rel_tol=1e-9, abs_tol=1e-12)
    assert "| THP |" in (out / "tpp_scaling.md").read_text()
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    again = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()} == stamps
