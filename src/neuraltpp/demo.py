"""The demo: simulated Hawkes data, the true process and a classical Hawkes MLE fit beside
briefly trained neural models, all scored on the test split under one likelihood.

Every row of the result is a `Metrics` LL per event under the same `LikelihoodOptions`
(default: correct likelihood, first event conditioned on, tail included).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuraltpp import hawkes
from neuraltpp.data.containers import EventDataset
from neuraltpp.evaluation import evaluate
from neuraltpp.likelihood import LikelihoodOptions
from neuraltpp.metrics import write_json
from neuraltpp.simulate import HAWKES_SIM, HawkesParams, SimSpec, simulated_splits
from neuraltpp.training import TrainConfig, train

RESULT_FILE = "demo.json"


@dataclass(frozen=True)
class DemoConfig:
    """What the demo simulates and trains; the defaults are ``neuraltpp demo``'s."""

    epochs: int = 30
    seed: int = 0
    data: SimSpec = HAWKES_SIM
    models: tuple[str, ...] = ("mhp", "rothp")
    model_config: dict[str, Any] = field(
        default_factory=lambda: {
            "d_model": 32,
            "n_layers": 1,
            "n_heads": 4,
            "d_ff": 64,
            "d_state": 8,
            "decoder": "decay",  # contains the exponential Hawkes process (docs/neuraltpp.md)
        }
    )
    batch_size: int = 16
    lr: float = 5e-3
    likelihood: LikelihoodOptions = field(default_factory=LikelihoodOptions)


@dataclass
class DemoData:
    """The simulated data: true parameters, train/dev/test splits and the seconds it took."""

    params: HawkesParams
    splits: dict[str, EventDataset]
    seconds: float


@dataclass
class DemoResult:
    """Test LL per event of each row (true process, Hawkes fit, each model), with its counts."""

    test_ll_per_event: dict[str, float]
    n_scored: int  # scored test events (events - sequences when the first event is conditioned)
    seconds: float  # the whole demo, simulation included
    results_file: Path


def simulate_data(config: DemoConfig) -> DemoData:
    """Simulate the demo's data (``config.data`` with ``config.seed``)."""
    start = time.perf_counter()
    params, splits = simulated_splits(config.data, config.seed)
    return DemoData(params, splits, time.perf_counter() - start)


def run_demo(config: DemoConfig, data: DemoData, out: Path, *, progress: bool = True) -> DemoResult:
    """Fit the Hawkes baseline, train each model into ``out/<model>``, score everything on the
    test split and write ``out/demo.json``."""
    start = time.perf_counter()
    options, test = config.likelihood, data.splits["test"]
    truth = hawkes.evaluate(data.params, test, options, predictions=False)
    fitted = hawkes.fit(data.splits["train"])
    rows = {
        "true process": truth.likelihood.ll_per_event,
        "Hawkes MLE fit": hawkes.evaluate(
            fitted, test, options, predictions=False
        ).likelihood.ll_per_event,
    }
    for name in config.models:
        train_config = TrainConfig(
            model=name,
            model_config=config.model_config,
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            seed=config.seed,
            likelihood=options,
        )
        result = train(
            train_config,
            data.splits["train"],
            data.splits["dev"],
            out / name,
            resume=False,
            progress=progress,
        )
        metrics = evaluate(result.model, test, options, predictions=False)
        rows[f"{name} (best epoch {result.best_epoch})"] = metrics.likelihood.ll_per_event
    n_scored = truth.likelihood.n_events
    seconds = data.seconds + time.perf_counter() - start
    write_json(
        {
            "likelihood": dataclasses.asdict(options),
            "n_test_events_scored": n_scored,
            "test_ll_per_event": rows,
            "seconds": seconds,
        },
        out / RESULT_FILE,
    )
    return DemoResult(rows, n_scored, seconds, out / RESULT_FILE)
