"""Training on the real pycsep UCERF3-ETAS catalogs (fetched into the cache at first use)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from neuraltpp.builtin import load_splits
from neuraltpp.data import EventDataset
from neuraltpp.evaluation import evaluate
from neuraltpp.training import TrainConfig, train


def _head(ds: EventDataset, n: int) -> EventDataset:
    return dataclasses.replace(ds, sequences=ds.sequences[:n])


@pytest.mark.integration
def test_mhp_learns_on_ucerf3(tmp_path: Path):
    splits = load_splits("ucerf3", seed=0)
    assert splits["train"].num_types == 4 and splits["train"].time_scale == 86400.0
    train_ds, dev_ds, test_ds = (
        _head(splits[s], n) for s, n in (("train", 400), ("dev", 100), ("test", 100))
    )
    config = TrainConfig(
        model="mhp",
        model_config={"d_model": 16, "n_layers": 1, "d_state": 8},
        epochs=2,
        batch_size=16,
        lr=5e-3,
        seed=0,
    )
    result = train(config, train_ds, dev_ds, tmp_path, progress=False)
    untrained = result.history[0].dev_ll_per_event
    assert all(math.isfinite(r.dev_ll_per_event) for r in result.history)
    assert result.best_epoch > 0 and result.best_dev_ll_per_event > untrained

    metrics = evaluate(result.model, test_ds, predictions=False)
    ll = metrics.likelihood
    assert math.isfinite(ll.ll_per_event) and ll.time_scale == 86400.0
    assert ll.n_events == test_ds.n_events - len(test_ds)
    assert ll.ll_per_event_original_units == pytest.approx(
        ll.ll_per_event - math.log(86400.0), rel=1e-12
    )
