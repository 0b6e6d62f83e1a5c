"""Training loop (selection, checkpoints, exact resume), evaluation metrics and intensity plots."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from neuraltpp import training
from neuraltpp.data import EventDataset, EventSequence, batches, rescale, split_dataset
from neuraltpp.evaluation import evaluate
from neuraltpp.likelihood import DatasetLL, LikelihoodOptions, log_likelihood
from neuraltpp.metrics import GapErrors, aggregate, load_metrics, prediction_metric, save_metrics
from neuraltpp.models import TPPModel
from neuraltpp.plotting import intensity_curve, plot_intensity
from neuraltpp.simulate import HawkesParams, simulate_dataset
from neuraltpp.training import TrainConfig, load_checkpoint, train

TINY = {"d_model": 8, "n_layers": 1, "n_heads": 2, "d_ff": 16, "d_state": 4, "dropout": 0.1}
Builder = Callable[..., TPPModel]


@pytest.fixture(scope="module")
def splits() -> dict[str, EventDataset]:
    params = HawkesParams(
        mu=np.array([0.4, 0.2]), alpha=np.array([[0.5, 0.1], [0.3, 0.4]]), beta=2.0
    )
    return split_dataset(simulate_dataset(params, 40, T=15.0, seed=1), (0.6, 0.2, 0.2), seed=0)


def _config(model: str = "thp", epochs: int = 2, **kw: object) -> TrainConfig:
    settings: dict = {"batch_size": 4, "lr": 1e-2, **kw}
    return TrainConfig(model=model, model_config=TINY, epochs=epochs, **settings)


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_training_improves_dev_ll_and_loss(splits: dict[str, EventDataset], tmp_path: Path):
    result = train(
        _config("mhp", epochs=4), splits["train"], splits["dev"], tmp_path, False, progress=False
    )
    history = result.history
    assert [r.epoch for r in history] == [0, 1, 2, 3, 4]
    assert history[0].train_loss is None  # epoch 0 is the untrained model
    assert history[-1].train_loss < history[1].train_loss
    assert result.best_dev_ll_per_event > history[0].dev_ll_per_event
    assert result.best_dev_ll_per_event == max(r.dev_ll_per_event for r in history)
    assert all(r.seconds > 0 and r.cpu_seconds > 0 for r in history)  # every epoch timed
    # the selected model is the one saved in best.pt and scores what the history says
    model, config, payload = load_checkpoint(result.best_checkpoint)
    assert payload["epoch"] == result.best_epoch and config == _config("mhp", epochs=4)
    dev = evaluate(model, splits["dev"], predictions=False)
    assert dev.likelihood.ll_per_event == pytest.approx(result.best_dev_ll_per_event, rel=1e-9)
    assert dev.likelihood.n_events == history[0].dev_n_events
    summary = json.loads((tmp_path / training.RESULT_FILE).read_text())
    assert summary["best_epoch"] == result.best_epoch and summary["likelihood_mode"] == "correct"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries


@pytest.mark.parametrize("model", ["thp", "mhp"])
def test_resume_after_interruption_matches_uninterrupted(
    splits: dict[str, EventDataset], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str
):
    straight = train(
        _config(model, epochs=4), splits["train"], splits["dev"], tmp_path / "a", progress=False
    )

    # run 1: stops cleanly after 2 epochs; run 2: killed during epoch 3's dev pass
    train(_config(model, epochs=2), splits["train"], splits["dev"], tmp_path / "b", progress=False)
    real = training.dataset_log_likelihood
    calls = {"n": 0}

    def dies_on_first_call(*args: object, **kwargs: object) -> DatasetLL:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "dataset_log_likelihood", dies_on_first_call)
    with pytest.raises(KeyboardInterrupt):
        train(
            _config(model, epochs=4), splits["train"], splits["dev"], tmp_path / "b", progress=False
        )
    assert training.read_checkpoint(tmp_path / "b" / "last.pt")["state"]["epoch"] == 2
    resumed = train(
        _config(model, epochs=4), splits["train"], splits["dev"], tmp_path / "b", progress=False
    )

    last_a = training.read_checkpoint(tmp_path / "a" / "last.pt")
    last_b = training.read_checkpoint(tmp_path / "b" / "last.pt")
    for key, value in last_a["model_state"].items():
        assert torch.equal(value, last_b["model_state"][key]), key
    assert resumed.history == straight.history
    assert resumed.best_epoch == straight.best_epoch
    for key, value in _params(straight.model).items():
        assert torch.equal(value, _params(resumed.model)[key]), key


def test_resume_rejects_a_different_config_or_data(splits: dict[str, EventDataset], tmp_path: Path):
    train(_config(epochs=1), splits["train"], splits["dev"], tmp_path, progress=False)
    with pytest.raises(ValueError, match="different configuration"):
        train(_config(epochs=2, lr=0.5), splits["train"], splits["dev"], tmp_path, progress=False)
    with pytest.raises(ValueError, match="different train/dev data"):
        train(_config(epochs=2), splits["test"], splits["dev"], tmp_path, progress=False)


def test_same_seed_same_model_and_seed_matters(splits: dict[str, EventDataset], tmp_path: Path):
    runs = [
        train(
            _config(epochs=1, seed=s),
            splits["train"],
            splits["dev"],
            tmp_path / str(i),
            resume=False,
            progress=False,
        )
        for i, s in enumerate([3, 3, 4])
    ]
    a, b, c = (_params(r.model) for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_patience_stops_and_selection_keeps_the_best_epoch(
    splits: dict[str, EventDataset], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    scores = iter([-2.0, -1.0, -1.5, -1.2, -0.5])  # epoch 1 is best; 2 and 3 do not improve

    def fake(model: object, ds: EventDataset, *args: object, **kwargs: object) -> DatasetLL:
        return DatasetLL(total=next(scores) * 10, n_events=10, mode="correct")

    monkeypatch.setattr(training, "dataset_log_likelihood", fake)
    result = train(
        _config(epochs=10, patience=2), splits["train"], splits["dev"], tmp_path, progress=False
    )
    assert result.stopped_early and [r.epoch for r in result.history] == [0, 1, 2, 3]
    assert result.best_epoch == 1 and result.best_dev_ll_per_event == -1.0
    assert load_checkpoint(result.best_checkpoint)[2]["epoch"] == 1


def test_auxiliary_losses_are_explicit(splits: dict[str, EventDataset], make_model: Builder):
    batch = next(batches(splits["train"], 4, shuffle=False, seed=0))
    model = make_model("mhp", 2, size="tiny")
    nll_only = TrainConfig(type_loss_weight=0.0, gap_loss_weight=0.0)
    loss, ll, n = training.batch_loss(model, batch, nll_only)
    assert loss.item() == pytest.approx(-ll / n, rel=1e-9)
    assert n == int(batch.mask.sum()) - batch.times.shape[0]
    with_type, _, _ = training.batch_loss(model, batch, TrainConfig(type_loss_weight=1.0))
    assert with_type.item() > loss.item()  # a cross-entropy is positive


def test_evaluate_counts_and_labels(splits: dict[str, EventDataset], make_model: Builder):
    ds = splits["test"]
    model = make_model("rothp", 2, size="tiny")
    m = evaluate(model, ds)
    assert m.n_events == ds.n_events and m.n_sequences == len(ds)
    assert m.likelihood.n_events == ds.n_events - len(ds)  # first events conditioned on
    assert (m.likelihood.mode, m.likelihood.first_event, m.likelihood.include_tail) == (
        "correct",
        "condition",
        True,
    )
    for p in (m.model_prediction, m.head_prediction):
        assert p is not None and p.n_events == ds.n_events - len(ds)
        assert 0 <= p.type_accuracy <= 1 and p.gap_rmse > 0
    # the LL is the likelihood module's on one batch holding everything
    whole = log_likelihood(model.eval(), next(batches(ds, len(ds), shuffle=False, seed=0)))
    assert m.likelihood.ll_per_event == pytest.approx(whole.per_event, rel=1e-9)

    start = evaluate(model, ds, LikelihoodOptions(first_event="start-state"), predictions=False)
    assert start.likelihood.n_events == ds.n_events and start.model_prediction is None
    legacy = evaluate(model, ds, LikelihoodOptions(mode="legacy"), predictions=False)
    assert (legacy.likelihood.mode, legacy.likelihood.first_event) == ("legacy", "own-state")
    scaled = evaluate(model, rescale(ds, 60.0), predictions=False).likelihood
    assert scaled.time_scale == 60.0
    assert scaled.ll_per_event_original_units == pytest.approx(
        scaled.ll_per_event - math.log(60.0), rel=1e-12
    )


def test_metrics_json_round_trip(
    splits: dict[str, EventDataset], tmp_path: Path, make_model: Builder
):
    m = evaluate(make_model("thp", 2, size="tiny"), splits["dev"])
    path = tmp_path / "m.json"
    save_metrics(m, path, checkpoint="x.pt")
    raw = json.loads(path.read_text())
    assert raw["checkpoint"] == "x.pt" and raw["likelihood"]["mode"] == "correct"
    assert load_metrics(path) == m
    path.write_text("{}")
    with pytest.raises(ValueError, match=r"m\.json"):
        load_metrics(path)


def test_aggregate_over_seeds(splits: dict[str, EventDataset], make_model: Builder):
    runs = [
        evaluate(make_model("mhp", 2, size="tiny", seed=seed), splits["dev"]) for seed in (0, 1, 2)
    ]
    agg = aggregate(runs)
    values = [r.likelihood.ll_per_event for r in runs]
    assert agg.n_runs == 3
    assert agg.mean["likelihood.ll_per_event"] == pytest.approx(np.mean(values))
    assert agg.std["likelihood.ll_per_event"] == pytest.approx(np.std(values, ddof=1))
    assert agg.std["likelihood.n_events"] == 0
    assert agg.labels["likelihood.mode"] == "correct"
    legacy = evaluate(
        make_model("mhp", 2, size="tiny"), splits["dev"], LikelihoodOptions(mode="legacy")
    )
    with pytest.raises(ValueError, match=r"likelihood\.mode"):
        aggregate([*runs, legacy])


def test_likelihood_options_validate():
    with pytest.raises(ValueError, match="mode"):
        LikelihoodOptions(mode="inflated")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)


def test_intensity_curve_and_png(
    splits: dict[str, EventDataset], tmp_path: Path, make_model: Builder
):
    model = make_model("mhp", 2, size="tiny")
    seq = splits["test"].sequences[0]
    curve = intensity_curve(model, seq, points_per_interval=5)
    n = len(seq)
    tail = seq.window_end > seq.times[-1]
    assert curve.intensity.shape == (5 * (n - 1 + tail), 2)
    assert np.all(np.diff(curve.times) >= 0) and np.all(curve.intensity > 0)
    # the right end of interval j is the intensity scoring event j+1 from h_j
    batch = next(batches(EventDataset([seq], 2, "x"), 1, shuffle=False, seed=0))
    with torch.no_grad():
        h = model.hidden(batch)[0]
        lam = model.intensity(h[0], torch.tensor([seq.times[1] - seq.times[0]]))[0]
    np.testing.assert_allclose(curve.intensity[4], lam.numpy(), rtol=1e-6)
    out = plot_intensity(model, seq, tmp_path / "i.png", type_names=["a", "b"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["i.png"]


def _reference_ll(
    model: TPPModel, ds: EventDataset, options: LikelihoodOptions
) -> tuple[float, int]:
    """Summed LL and scored events of ``ds``, sequence by sequence, straight from the
    definitions (scipy quad for every compensator, in float64; see docs/neuraltpp.md)."""
    model = copy.deepcopy(model).double()
    total, scored = 0.0, 0
    with torch.no_grad():
        for seq in ds.sequences:
            h = model.hidden(
                next(batches(EventDataset([seq], ds.num_types, "x"), 1, shuffle=False, seed=0))
            )[0]
            t, k = seq.times, seq.types

            def lam(state: torch.Tensor, s: float) -> np.ndarray:
                dt = torch.tensor([s], dtype=torch.float64)
                return model.intensity(state, dt)[0].double().numpy()

            def integral(state: torch.Tensor, length: float, only: int | None = None) -> float:
                def f(s: float) -> float:
                    values = lam(state, s)
                    return float(values.sum() if only is None else values[only])

                return quad(f, 0.0, length, epsabs=1e-12, epsrel=1e-10)[0]

            if options.mode == "legacy":  # event j scored from h_j itself, one-type integral
                total += sum(math.log(lam(h[j], 0.0)[k[j]]) for j in range(len(t)))
                total -= sum(integral(h[j], t[j] - t[j - 1], int(k[j])) for j in range(1, len(t)))
                scored += len(t)
                continue
            for j in range(len(t) - 1):  # event j+1 from h_j, all types integrated
                total += math.log(lam(h[j], t[j + 1] - t[j])[k[j + 1]])
                total -= integral(h[j], t[j + 1] - t[j])
            scored += len(t) - 1
            if options.first_event == "start-state":
                total += math.log(lam(model.h_start, t[0] - seq.window_start)[k[0]])
                total -= integral(model.h_start, t[0] - seq.window_start)
                scored += 1
            if options.include_tail:
                total -= integral(h[-1], seq.window_end - t[-1])
    return total, scored


@pytest.mark.parametrize(
    "options",
    [
        LikelihoodOptions(first_event="start-state"),
        LikelihoodOptions(include_tail=False, integration="monte-carlo", mc_samples=256),
        LikelihoodOptions(mode="legacy"),
    ],
)
def test_every_likelihood_option_trains(
    splits: dict[str, EventDataset], tmp_path: Path, options: LikelihoodOptions
):
    """The dev LL recorded for the last epoch is the LL of the saved final model under exactly
    these options (the Monte Carlo one within its sampling error)."""
    result = train(
        _config("mhp", epochs=1, likelihood=options),
        splits["train"],
        splits["dev"],
        tmp_path,
        progress=False,
    )
    assert all(math.isfinite(r.dev_ll_per_event) for r in result.history)
    model, config, _ = load_checkpoint(tmp_path / training.LAST_CHECKPOINT)
    assert config.likelihood == options
    total, scored = _reference_ll(model, splits["dev"], options)
    last = result.history[-1]
    assert last.dev_n_events == scored
    tolerance = 2e-3 if options.integration == "monte-carlo" else 1e-5
    assert last.dev_ll_per_event == pytest.approx(total / scored, abs=tolerance)


def test_gap_loss_adds_its_weighted_mean_squared_error(
    splits: dict[str, EventDataset], make_model: Builder
):
    """gap_loss_weight w adds w * mean_j (gap head(h_j) - (t_{j+1} - t_j))^2 over the predicted
    events, computed here sequence by sequence, and trains the gap head."""
    ds = splits["train"]
    batch = next(batches(ds, 4, shuffle=False, seed=0))
    model = make_model("mhp", 2, size="tiny")
    errors = []
    with torch.no_grad():
        for seq in ds.sequences[:4]:
            alone = next(batches(EventDataset([seq], 2, "x"), 1, shuffle=False, seed=0))
            predicted = model.gap(model.hidden(alone)[0, :-1]).double().numpy()
            errors.extend((predicted - np.diff(seq.times)) ** 2)
    weight = 0.3
    nll_only = TrainConfig(type_loss_weight=0.0, gap_loss_weight=0.0)
    with_gap = TrainConfig(type_loss_weight=0.0, gap_loss_weight=weight)
    base, ll, n = training.batch_loss(model, batch, nll_only)
    loss, ll_gap, _ = training.batch_loss(model, batch, with_gap)
    assert ll_gap == ll and n == len(errors)
    assert loss.item() - base.item() == pytest.approx(weight * np.mean(errors), rel=1e-5)
    loss.backward()
    assert model.heads.gap_proj.weight.grad is not None
    assert float(model.heads.gap_proj.weight.grad.abs().sum()) > 0
    model.zero_grad(set_to_none=True)
    base.backward()
    assert model.heads.gap_proj.weight.grad is None  # without the gap loss it is untrained


def test_a_diverging_run_names_the_epoch_and_step(splits: dict[str, EventDataset], tmp_path: Path):
    with pytest.raises(training.TrainingDiverged, match=r"at epoch 1, step \d+: ") as info:
        train(_config(epochs=2, lr=1e6), splits["train"], splits["dev"], tmp_path, progress=False)
    assert isinstance(info.value, FloatingPointError) and info.value.epoch == 1
    assert load_checkpoint(tmp_path / "last.pt")[2]["state"]["epoch"] == 0  # the last good one


def test_a_non_finite_dev_ll_is_a_divergence(
    splits: dict[str, EventDataset], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    scores = iter([-2.0, float("nan")])

    def fake(model: object, ds: EventDataset, *args: object, **kwargs: object) -> DatasetLL:
        return DatasetLL(total=next(scores) * 10, n_events=10, mode="correct")

    monkeypatch.setattr(training, "dataset_log_likelihood", fake)
    with pytest.raises(training.TrainingDiverged, match="at epoch 1: dev log-likelihood nan"):
        train(_config(epochs=3), splits["train"], splits["dev"], tmp_path, progress=False)


def test_inputs_are_checked_before_anything_is_written(
    splits: dict[str, EventDataset], tmp_path: Path
):
    singles = dataclasses.replace(
        splits["dev"], sequences=[_first_event(s) for s in splits["dev"].sequences]
    )
    with pytest.raises(ValueError, match="no event is scored"):
        train(_config(), splits["train"], singles, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def _first_event(seq: EventSequence) -> EventSequence:
    """The sequence cut to its first event."""
    return EventSequence(seq.times[:1], seq.types[:1], seq.seq_id)


def test_gap_rmse_of_huge_finite_errors_does_not_overflow():
    errors = GapErrors()
    errors.add(np.array([4e307, -4e307]))
    errors.add(np.array([0.0]))
    assert errors.rmse == pytest.approx(4e307 * math.sqrt(2 / 3), rel=1e-12)
    metric = prediction_metric("m", 2, errors)
    assert (metric.n_events, metric.type_accuracy, metric.n_infinite_gap) == (3, 2 / 3, 0)
    errors.add(np.array([np.inf, 1.0]))
    metric = prediction_metric("m", 2, errors)
    assert (metric.gap_rmse, metric.n_infinite_gap, metric.n_events) == (math.inf, 1, 5)
