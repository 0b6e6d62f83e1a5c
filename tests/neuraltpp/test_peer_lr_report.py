"""The per-library learning-rate choice (benchmarks/peer_lr_report.py) on hand-made result
folders: each side picks its rate by dev LL, not test; incomplete rates and mixed settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "peer_lr_report.py"
SETTINGS = {"epochs": 40, "batch_size": 16, "data_seed": 0}


def _ours(root: Path, lr: float, runs: dict[int, tuple[float, float]]) -> Path:
    """A bench_tpp.py folder at rate ``lr`` with runs {seed: (dev LL, test LL)}."""
    folder = root / f"ours-{lr:g}"
    (folder / "runs" / "hawkes-sim").mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"settings": SETTINGS | {"lr": lr}}))
    for seed, (dev, test) in runs.items():
        run = {"seed": seed, "best_dev_ll_per_event": dev,
               "test": {"likelihood": {"ll_per_event": test}}}
        path = folder / "runs" / "hawkes-sim" / f"mhp-exact-decay-x1-seed{seed}.json"
        path.write_text(json.dumps(run))
    return folder


def _theirs(root: Path, lr: float, seed: int, dev: float, test: float,
            epochs: int = 40) -> Path:
    """An easytpp_peer.py folder with NHP at rate ``lr`` and ``seed``."""
    folder = root / f"theirs-{lr:g}-{seed}-{epochs}"
    folder.mkdir()
    nhp = {"best_dev_ll_per_event": dev,
           "test_conventions": {"neuraltpp": {"ll_per_event": test}}}
    settings = SETTINGS | {"lr": lr, "seed": seed, "epochs": epochs}
    (folder / "easytpp_peer.json").write_text(json.dumps({"settings": settings,
                                                          "models": {"NHP": nhp}}))
    return folder


def _run(out: Path, ours: list[Path], theirs: list[Path]) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), "--out", str(out), "--neuraltpp", *map(str, ours),
               "--easytpp", *map(str, theirs)]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_each_library_picks_its_rate_on_dev_and_the_choices_are_compared_on_test(
    tmp_path: Path,
) -> None:
    # ours: 1e-3 is better on dev (and worse on test: the choice must not look at test);
    # 1e-4 has one seed only, so it is shown but not chosen despite the best dev LL
    ours = [_ours(tmp_path, 1e-3, {0: (-0.60, -0.95), 1: (-0.62, -0.93)}),
            _ours(tmp_path, 3e-3, {0: (-0.70, -0.90), 1: (-0.70, -0.90)}),
            _ours(tmp_path, 1e-4, {0: (-0.50, -0.80)})]
    theirs = [_theirs(tmp_path, 3e-3, s, -0.65, -0.91 - 0.01 * s) for s in (0, 1)]
    theirs += [_theirs(tmp_path, 1e-3, s, -0.66, -0.85) for s in (0, 1)]
    proc = _run(tmp_path / "out", ours, theirs)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "out" / "peer_lr_report.json").read_text())
    assert result["neuraltpp"]["chosen_lr"] == 1e-3 and result["easytpp"]["chosen_lr"] == 3e-3
    comparison = result["comparison"]
    assert comparison["seeds"] == [0, 1]
    assert comparison["difference_per_seed"] == pytest.approx([-0.95 + 0.91, -0.93 + 0.92])
    assert comparison["ours_at_least_theirs"] is False
    assert comparison["same_rate_difference"] == pytest.approx(  # JSON keys are strings
        {"0.001": -0.94 + 0.85, "0.003": -0.90 + 0.915})
    markdown = (tmp_path / "out" / "peer_lr_report.md").read_text()
    assert "seeds missing" in markdown and "**MISSED**" in markdown
    assert (tmp_path / "out" / "peer_lr_report.png").stat().st_size > 0


def test_duplicate_runs_and_mixed_settings_are_refused_with_status_2(tmp_path: Path) -> None:
    ours = [_ours(tmp_path, 1e-3, {0: (-0.6, -0.9)})]
    twice = [_theirs(tmp_path, 1e-3, 0, -0.6, -0.9), _theirs(tmp_path, 1e-3, 0, -0.6, -0.9, 39)]
    proc = _run(tmp_path / "out", ours, twice)
    assert proc.returncode == 2 and "different epochs" in proc.stderr
    same = tmp_path / "copy"
    same.mkdir()
    (same / "easytpp_peer.json").write_text((twice[0] / "easytpp_peer.json").read_text())
    proc = _run(tmp_path / "out", ours, [twice[0], same])
    assert proc.returncode == 2 and "seed 0 twice" in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing written
