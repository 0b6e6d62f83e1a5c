"""The scale benchmark (benchmarks/bench_scale.py) in its quick setting: runs, resume, report,
and the exactness of the statistics it extrapolates (counted from a shape on the meta device,
against the real model's count)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from layercard.memory import group_bytes
from layercard.models import load_model

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "bench_scale.py"


def _bench() -> object:
    """The benchmark script, imported as a module."""
    spec = importlib.util.spec_from_file_location("bench_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_scale"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.integration
def test_quick_run_resumes_and_extrapolates_exact_statistics(tmp_path: Path) -> None:
    out = tmp_path / "scale"
    command = [sys.executable, str(SCRIPT), "--out", str(out), "--quick", "--quiet"]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "scale.json").read_text())
    assert [r["group"] for r in result["runs"]] == ["width", "width", "depth", "tokens"]
    for run in result["runs"]:
        assert run["seconds"] > 0 and run["peak_above_start_bytes"] > run["statistics_bytes"] > 0
    assert {"time", "memory"} <= set(result["fit"])
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    again = subprocess.run(command, capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()} == stamps
    smollm2 = next(r for r in result["extrapolation"] if r["model"] == "SmolLM2-135M")
    assert smollm2["statistics_bytes"] == group_bytes(load_model("smollm2-135m").model, 1)


def test_a_published_shape_shares_inputs_as_its_architecture_does() -> None:
    bench = _bench()
    sites, sharing = bench.target_sites(bench.TARGETS[2])  # Llama-3-8B, on the meta device
    assert len(sites) == 32 * 7 and len(set(sharing.values())) == 32 * 4
    layer0 = {s.module: sharing[s] for s in sites if s.layer == 0}
    assert layer0["self_attn.q_proj"] == layer0["self_attn.k_proj"] == layer0["self_attn.v_proj"]
    assert layer0["mlp.gate_proj"] == layer0["mlp.up_proj"] != layer0["mlp.down_proj"]
