"""Metrics of a model on a dataset, each number labelled with what produced it; seed spread;
strict JSON files.

Reported per dataset, by the neural models (``neuraltpp.evaluation``) and the classical Hawkes
baseline (``neuraltpp.hawkes``) alike:

* log-likelihood per scored event (nats) with the likelihood conventions (mode, first event,
  tail, compensator integration) and the dataset's ``time_scale``; the LL in the original time
  unit is ``ll_per_event - log(time_scale)``;
* next-event prediction: type accuracy and RMSE of the next gap, in dataset time units, over
  events 1..n-1 of every sequence (event j+1 predicted from the history up to event j).
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

from commonio.atomic import write_text

METRICS_SCHEMA = "neuraltpp.metrics/1"


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
    gap_rmse: float | None  # inf iff n_infinite_gap > 0 (stored as null in JSON)
    n_infinite_gap: int = 0  # non-finite predicted gaps (model: a defective next-time law)


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


@dataclass
class GapErrors:
    """Running next-gap errors: their number, the non-finite ones, and the finite ones' sum of
    squares kept as ``scale**2 * scaled_sum`` (``scale`` the largest |error| so far), so that
    errors near the largest float (the gaps of a dying intensity) do not overflow to inf."""

    n: int = 0
    n_non_finite: int = 0
    scale: float = 0.0
    scaled_sum: float = 0.0

    def add(self, errors: np.ndarray) -> None:
        """Add the errors (predicted minus true gap) of some predictions."""
        errors = np.abs(np.asarray(errors, dtype=np.float64))
        finite = errors[np.isfinite(errors)]
        self.n += errors.size
        self.n_non_finite += errors.size - finite.size
        top = float(finite.max(initial=0.0))
        if top > self.scale:
            self.scaled_sum *= (self.scale / top) ** 2
            self.scale = top
        if self.scale > 0:
            self.scaled_sum += float(np.sum((finite / self.scale) ** 2))

    @property
    def rmse(self) -> float | None:
        """Root mean squared error; inf when an error is non-finite, None without errors."""
        if self.n == 0:
            return None
        if self.n_non_finite:
            return math.inf
        return self.scale * math.sqrt(self.scaled_sum / self.n)


def prediction_metric(method: str, correct: int, errors: GapErrors) -> PredictionMetric:
    """Type accuracy and gap RMSE of ``errors.n`` predictions, ``correct`` of them typed right."""
    if errors.n == 0:
        return PredictionMetric(method, 0, None, None)
    return PredictionMetric(method, errors.n, correct / errors.n, errors.rmse, errors.n_non_finite)


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
    write_text(path, json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n")


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


def describe(m: Metrics) -> str:
    """Metrics as the CLI prints them: the LL with its conventions, then each prediction."""
    ll = m.likelihood
    lines = [
        f"LL/event {ll.ll_per_event:.4f} nats over {ll.n_events} events "
        f"(mode {ll.mode}, first event {ll.first_event}, tail {'on' if ll.include_tail else 'off'},"
        f" time scale {ll.time_scale:g})"
    ]
    for p in (m.model_prediction, m.head_prediction):
        if p is not None and p.n_events:
            infinite = f" ({p.n_infinite_gap} infinite expected gaps)" if p.n_infinite_gap else ""
            lines.append(
                f"{p.method}: type accuracy {p.type_accuracy:.4f}, gap RMSE {p.gap_rmse:.4f}"
                f"{infinite} over {p.n_events} events"
            )
    return "\n".join(lines)
