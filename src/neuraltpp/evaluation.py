"""Metrics of a neural TPP on a dataset: the likelihood and next-event predictions.

Next-event prediction comes from the model's density (expected time by the survival integral,
type by the integrated type probability; ``neuraltpp.prediction``) and from the type/gap heads
directly (what the papers report); see ``neuraltpp.metrics`` for what each number means.
"""

from __future__ import annotations

import math

import torch
from tqdm import tqdm

from neuraltpp.data.batching import batches
from neuraltpp.data.containers import EventDataset
from neuraltpp.likelihood import LikelihoodOptions, log_likelihood
from neuraltpp.metrics import GapErrors, LLMetric, Metrics, prediction_metric
from neuraltpp.prediction import predict_next

MODEL_PREDICTION = "model: expected next time (survival integral), argmax integrated P(type)"
HEAD_PREDICTION = "heads: gap head, argmax type head"


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    ds: EventDataset,
    options: LikelihoodOptions | None = None,
    *,
    batch_size: int = 64,
    predictions: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> Metrics:
    """LL per event under ``options`` (default ``LikelihoodOptions()``); type accuracy and gap
    RMSE from the model's expected time/type and from the heads (``predictions=False`` skips
    both)."""
    if len(ds) == 0:
        raise ValueError(f"{ds.source}: no sequences to evaluate")
    options = LikelihoodOptions() if options is None else options
    model.eval()
    total, n_ll = 0.0, 0
    model_correct, head_correct, model_errors, head_errors = 0, 0, GapErrors(), GapErrors()
    n_batches = math.ceil(len(ds) / batch_size)
    it = batches(ds, batch_size, shuffle=False, seed=0, sort_by_length=True)
    for i, batch in enumerate(tqdm(it, total=n_batches, desc="evaluate", disable=not progress)):
        h = model.hidden(batch)
        ll = log_likelihood(model, batch, options, seed=seed + i, h=h)
        total += float(ll.total)
        n_ll += ll.n_events
        if not predictions:
            continue
        pred = predict_next(model, batch, h=h)
        valid = pred.mask
        true_types = batch.types[:, 1:][valid]
        true_gaps = (batch.times[:, 1:] - batch.times[:, :-1])[valid]
        model_correct += int((pred.type_integrated[valid] == true_types).sum())
        head_correct += int((pred.head_type[valid] == true_types).sum())
        model_errors.add((pred.expected_gap[valid] - true_gaps).cpu().numpy())
        head_errors.add((pred.head_gap[valid].double() - true_gaps).cpu().numpy())
    ll_per_event = total / n_ll if n_ll else float("nan")
    metrics = Metrics(
        dataset=ds.source,
        n_sequences=len(ds),
        n_events=ds.n_events,
        likelihood=LLMetric(
            ll_per_event=ll_per_event,
            n_events=n_ll,
            mode=options.mode,
            first_event=ll.first_event,  # legacy mode reports its own conventions
            include_tail=ll.include_tail,
            integration=ll.integration,  # closed-form for the decay decoder
            time_scale=ds.time_scale,
            ll_per_event_original_units=ll_per_event - math.log(ds.time_scale),
        ),
    )
    if predictions:
        metrics.model_prediction = prediction_metric(MODEL_PREDICTION, model_correct, model_errors)
        metrics.head_prediction = prediction_metric(HEAD_PREDICTION, head_correct, head_errors)
    return metrics
