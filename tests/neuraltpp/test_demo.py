"""The demo at a small size: every row is the LL its own definition gives, and the CLI prints it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from neuraltpp import cli
from neuraltpp.demo import DemoConfig, DemoResult, run_demo, simulate_data
from neuraltpp.evaluation import evaluate
from neuraltpp.simulate import SimSpec
from neuraltpp.training import load_checkpoint

SMALL = DemoConfig(
    epochs=2,
    seed=3,
    data=SimSpec(num_types=2, n_sequences=20, horizon=10.0),
    models=("mhp", "thp"),
    model_config={"d_model": 8, "n_layers": 1, "n_heads": 2, "d_ff": 16, "d_state": 4},
    batch_size=4,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoResult, Path]:
    out = tmp_path_factory.mktemp("demo")
    return run_demo(SMALL, simulate_data(SMALL), out, progress=False), out


def test_rows_are_their_definitions(demo: tuple[DemoResult, Path]) -> None:
    result, out = demo
    data = simulate_data(SMALL)  # deterministic: the same data again
    test = data.splits["test"]
    assert result.n_scored == test.n_events - len(test)  # first events conditioned on
    # the true process, conditioned on the first event: the simulator's full LL minus the
    # first event's log-intensity mu_k and the baseline compensator before it
    full = sum(test.metadata["true_log_likelihood"][s.seq_id] for s in test.sequences)
    first = sum(
        np.log(data.params.mu[s.types[0]]) - data.params.mu.sum() * s.times[0]
        for s in test.sequences
    )
    rows = result.test_ll_per_event
    assert rows["true process"] == pytest.approx((full - first) / result.n_scored, rel=1e-10)
    assert abs(rows["Hawkes MLE fit"] - rows["true process"]) < 0.5
    names = [name for name in rows if name not in ("true process", "Hawkes MLE fit")]
    assert [name.split()[0] for name in names] == list(SMALL.models)
    for name, model_name in zip(names, SMALL.models, strict=True):
        summary = json.loads((out / model_name / "train_result.json").read_text())
        assert name == f"{model_name} (best epoch {summary['best_epoch']})"
        model, _, _ = load_checkpoint(out / model_name / "best.pt")
        metrics = evaluate(model, test, SMALL.likelihood, predictions=False)
        assert rows[name] == metrics.likelihood.ll_per_event
    saved = json.loads(result.results_file.read_text())
    assert saved["test_ll_per_event"] == rows and saved["n_test_events_scored"] == result.n_scored
    assert saved["likelihood"] == dataclasses.asdict(SMALL.likelihood)
    assert saved["seconds"] == result.seconds > 0


def test_cli_prints_every_row(
    demo: tuple[DemoResult, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    @dataclasses.dataclass(frozen=True)
    class SmallDemo(DemoConfig):
        """SMALL's sizes as the defaults (the CLI sets epochs and seed)."""

        data: SimSpec = SMALL.data
        models: tuple[str, ...] = SMALL.models
        model_config: dict[str, Any] = dataclasses.field(
            default_factory=lambda: dict(SMALL.model_config)
        )
        batch_size: int = SMALL.batch_size

    monkeypatch.setattr(cli, "DemoConfig", SmallDemo)
    argv = ["demo", "--out", str(tmp_path), "--epochs", "2", "--seed", "3", "--quiet"]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("simulated 2-type Hawkes (spectral radius 0.70)")
    rows = demo[0].test_ll_per_event
    truth = rows["true process"]
    assert lines[3 : 3 + len(rows)] == [
        f"  {k:<24} {v:8.4f}   ({v - truth:+.4f} vs true)" for k, v in rows.items()
    ]  # the same numbers as the library run
    assert lines[-1].endswith(f"results in {tmp_path / 'demo.json'}")
