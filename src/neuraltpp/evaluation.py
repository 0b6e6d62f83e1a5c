"""Metrics of a neural TPP on a dataset, each number labelled with what produced it; seed spread.

Reported per dataset:

* log-likelihood per scored event (nats) with the likelihood conventions (mode, first event,
  tail, compensator integration) and the dataset's ``time_scale``; the LL in the original time
  unit is ``ll_per_event - log(time_scale)``;
* next-event prediction from the model's density (expected time by the survival integral, type
  by the integrated type probability; ``neuraltpp.prediction``) and from the type/gap heads
  directly (what the papers report): type accuracy and RMSE of the next gap, in dataset time
  units, over events 1..n-1 of every sequence (event j+1 predicted from the state after event j).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from neuraltpp.data import EventDataset, atomic_write, batches
from neuraltpp.likelihood import FIRST_EVENT, INTEGRATIONS, MODES, log_likelihood
from neuraltpp.prediction import predict_next

METRICS_SCHEMA = "neuraltpp.metrics/1"
MODEL_PREDICTION = "model: expected next time (survival integral), argmax integrated P(type)"
HEAD_PREDICTION = "heads: gap head, argmax type head"


@dataclass(frozen=True)
class LikelihoodOptions:
    """Which likelihood is computed: mode and conventions (see ``neuraltpp.likelihood``)."""

    mode: str = "correct"
    first_event: str = "condition"
    include_tail: bool = True
    integration: str = "gauss-legendre"
    nodes: int = 16
    mc_samples: int = 32

    def __post_init__(self) -> None:
        for name, allowed in (
            ("mode", MODES),
            ("first_event", FIRST_EVENT),
            ("integration", INTEGRATIONS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"likelihood {name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        if self.nodes < 1 or self.mc_samples < 1:
            raise ValueError("likelihood nodes and mc_samples must be >= 1")

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``likelihood.log_likelihood`` and ``evaluate``."""
        return dataclasses.asdict(self)


@dataclass
class DatasetLL:
    """Summed log-likelihood of a dataset, its number of scored events and the mode."""

    total: float
    n_events: int
    mode: str

    @property
    def ll_per_event(self) -> float:
        """Nats per scored event."""
        return self.total / self.n_events


@dataclass
class LLMetric:
    """Log-likelihood per scored event, labelled with its conventions and time unit."""

    ll_per_event: float
    n_events: int
    mode: str
    first_event: str  # "condition" | "start-state" | "own-state" (legacy)
    include_tail: bool
    integration: str
    time_scale: float
    ll_per_event_original_units: float  # ll_per_event - log(time_scale)


@dataclass
class PredictionMetric:
    """Next-event type accuracy and gap RMSE (dataset time units) over ``n_events`` events."""

    method: str
    n_events: int
    type_accuracy: float | None  # None when no event is predicted
    gap_rmse: float | None  # inf if some predicted gap is infinite (stored as null in JSON)
    n_infinite_gap: int = 0  # predictions whose next-time distribution is defective (E = inf)


@dataclass
class Metrics:
    """All metrics of one model on one dataset."""

    dataset: str
    n_sequences: int
    n_events: int
    likelihood: LLMetric
    model_prediction: PredictionMetric | None = None
    head_prediction: PredictionMetric | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (inverse: ``Metrics.from_dict``)."""
        return {"schema": METRICS_SCHEMA, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Metrics:
        """Rebuild metrics from ``to_dict`` output."""
        d = {k: v for k, v in d.items() if k != "schema"}
        d["likelihood"] = LLMetric(**d["likelihood"])
        for key in ("model_prediction", "head_prediction"):
            if d.get(key) is not None:
                d[key] = PredictionMetric(**d[key])
        return cls(**d)


@dataclass
class AggregateMetrics:
    """Mean and sample standard deviation (ddof 1; 0 for one run) of each number over runs.

    Keys are dotted paths into ``Metrics`` (e.g. ``likelihood.ll_per_event``); ``labels`` holds
    the non-numeric fields (modes, methods), which must agree across the runs.
    """

    n_runs: int
    mean: dict[str, float]
    std: dict[str, float]
    labels: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dataclasses.asdict(self)


@torch.no_grad()
def dataset_log_likelihood(
    model: torch.nn.Module,
    ds: EventDataset,
    options: LikelihoodOptions,
    batch_size: int = 64,
    *,
    seed: int = 0,
) -> DatasetLL:
    """Summed LL of ``ds`` under ``model`` (eval mode, no gradients); ValueError if none scored."""
    model.eval()
    total, n = 0.0, 0
    for i, batch in enumerate(batches(ds, batch_size, shuffle=False, seed=0, sort_by_length=True)):
        ll = log_likelihood(model, batch, **options.kwargs(), seed=seed + i)
        total += float(ll.total)
        n += ll.n_events
    if n == 0:
        raise ValueError(
            f"{ds.source}: no event is scored (every sequence has one event and the first event "
            "is conditioned on)"
        )
    return DatasetLL(total=total, n_events=n, mode=options.mode)


def _prediction_metric(
    method: str, n: int, correct: int, sq_err: float, n_inf: int
) -> PredictionMetric:
    if n == 0:
        return PredictionMetric(method, 0, None, None)
    return PredictionMetric(method, n, correct / n, math.sqrt(sq_err / n), n_inf)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    ds: EventDataset,
    *,
    mode: str = "correct",
    first_event: str = "condition",
    include_tail: bool = True,
    integration: str = "gauss-legendre",
    nodes: int = 16,
    mc_samples: int = 32,
    batch_size: int = 64,
    predictions: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> Metrics:
    """LL per event under the given likelihood ``mode``/conventions; type accuracy and gap RMSE
    from the model's expected time/type and from the heads (``predictions=False`` skips both)."""
    if len(ds) == 0:
        raise ValueError(f"{ds.source}: no sequences to evaluate")
    options = LikelihoodOptions(mode, first_event, include_tail, integration, nodes, mc_samples)
    model.eval()
    total, n_ll = 0.0, 0
    n_pred, model_correct, head_correct, model_se, head_se, n_inf = 0, 0, 0, 0.0, 0.0, 0
    n_batches = math.ceil(len(ds) / batch_size)
    it = batches(ds, batch_size, shuffle=False, seed=0, sort_by_length=True)
    for i, batch in enumerate(tqdm(it, total=n_batches, desc="evaluate", disable=not progress)):
        h = model.hidden(batch)
        ll = log_likelihood(model, batch, **options.kwargs(), seed=seed + i, h=h)
        total += float(ll.total)
        n_ll += ll.n_events
        if not predictions:
            continue
        pred = predict_next(model, batch, h=h)
        valid = pred.mask
        true_types = batch.types[:, 1:][valid]
        true_gaps = (batch.times[:, 1:] - batch.times[:, :-1])[valid]
        n_pred += int(valid.sum())
        model_correct += int((pred.type_integrated[valid] == true_types).sum())
        head_correct += int((pred.head_type[valid] == true_types).sum())
        model_se += float(((pred.expected_gap[valid] - true_gaps) ** 2).sum())
        n_inf += int((~torch.isfinite(pred.expected_gap[valid])).sum())
        head_se += float(((pred.head_gap[valid].double() - true_gaps) ** 2).sum())
    ll_per_event = total / n_ll if n_ll else float("nan")
    metrics = Metrics(
        dataset=ds.source,
        n_sequences=len(ds),
        n_events=ds.n_events,
        likelihood=LLMetric(
            ll_per_event=ll_per_event,
            n_events=n_ll,
            mode=mode,
            first_event=ll.first_event,  # legacy mode reports its own conventions
            include_tail=ll.include_tail,
            integration=integration,
            time_scale=ds.time_scale,
            ll_per_event_original_units=ll_per_event - math.log(ds.time_scale),
        ),
    )
    if predictions:
        metrics.model_prediction = _prediction_metric(
            MODEL_PREDICTION, n_pred, model_correct, model_se, n_inf
        )
        metrics.head_prediction = _prediction_metric(
            HEAD_PREDICTION, n_pred, head_correct, head_se, 0
        )
    return metrics


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def aggregate(runs: Sequence[Metrics]) -> AggregateMetrics:
    """Mean and spread over runs (e.g. seeds) of every number; labels must agree across runs."""
    if not runs:
        raise ValueError("aggregate needs at least one Metrics")
    flat = [_flatten(dataclasses.asdict(m)) for m in runs]
    keys = flat[0].keys()
    if any(f.keys() != keys for f in flat):
        raise ValueError("aggregate: runs report different metrics (predictions on in some only)")
    mean, std, labels = {}, {}, {}
    for key in keys:
        values = [f[key] for f in flat]
        numeric = all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values
        ) and key not in ("likelihood.time_scale",)
        if numeric:
            arr = np.asarray(values, dtype=np.float64)
            with np.errstate(invalid="ignore"):  # inf values give inf mean, nan spread
                mean[key] = float(arr.mean())
                std[key] = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
        elif any(v != values[0] for v in values):
            raise ValueError(f"aggregate: runs disagree on {key} ({sorted(map(str, set(values)))})")
        else:
            labels[key] = values[0]
    return AggregateMetrics(n_runs=len(runs), mean=mean, std=std, labels=labels)


def _json_safe(obj: Any) -> Any:
    """Replace non-finite floats by None (null) so the file is strict JSON."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(obj: dict[str, Any], path: str | Path) -> None:
    """Write ``obj`` as indented strict JSON, atomically."""
    text = json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n"
    atomic_write(Path(path), lambda p: p.write_text(text, encoding="utf-8"))


def save_metrics(metrics: Metrics, path: str | Path, **extra: Any) -> None:
    """Write metrics JSON (plus provenance ``extra`` keys such as the checkpoint) atomically."""
    write_json({**metrics.to_dict(), **extra}, path)


def load_metrics(path: str | Path) -> Metrics:
    """Read a metrics JSON written by ``save_metrics``; ValueError naming the file if invalid."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("schema") != METRICS_SCHEMA:
            raise ValueError(f"schema is {d.get('schema')!r}, expected {METRICS_SCHEMA!r}")
        fields = {f.name for f in dataclasses.fields(Metrics)}
        return Metrics.from_dict({k: v for k, v in d.items() if k in fields or k == "schema"})
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"metrics file {path}: {exc}") from exc
