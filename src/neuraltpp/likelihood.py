"""Exact log-likelihood of a neural TPP on a padded batch, and the published codes' `legacy` one.

Correct mode (default), for a sequence with events (t_0, k_0), ..., (t_{n-1}, k_{n-1}) and states
h_j that have seen events 0..j only:

    log L = sum_j log lambda_{k_{j+1}}(t_{j+1} | h_j)
            - sum_j int_{t_j}^{t_{j+1}} sum_k lambda_k(s | h_j) ds

Event j+1 is scored from h_j (history strictly before it); the compensator runs over all K
types. Conventions:

- ``first_event="condition"`` (default, as EasyTPP): event 0 is given and not scored.
  ``"start-state"``: event 0 is scored from the learned ``model.h_start`` on
  (window_start, t_0], compensator included.
- ``include_tail=True`` (default): the compensator on (t_{n-1}, window_end] from h_{n-1} is
  subtracted (the probability of seeing no further event in the window). It is 0 when
  window_end equals the last time (window unknown).
- Compensator: Gauss-Legendre quadrature with ``nodes`` points per interval (default 16;
  deterministic, exact for polynomials of degree 31) or Monte Carlo with ``mc_samples`` uniform
  points per interval drawn from a generator seeded with ``seed``. A model whose intensity
  decoder has a closed form (``model.exact_compensator``: the ``decay`` decoder) is integrated
  exactly instead, whatever the option, and the result says ``closed-form``.

All of these choices travel together as one `LikelihoodOptions` (training, evaluation and the
classical Hawkes baseline take it as one object, with the same defaults).

Legacy mode (off by default) reproduces the published THP/RoTHP/MHP code: event j is scored
from h_j, the state that has already seen it, at t_j (dt = 0), every event including the first
is scored, and the integral over (t_{j-1}, t_j] uses h_j and only the observed type k_j. It
overstates the likelihood; use it only to compare with published numbers. (The THP code also
divides the elapsed time by t_{j-1} + 1 inside the intensity; the shared heads here do not.)

Report nats per event (`LogLikelihood.per_event`; `dataset_log_likelihood` sums a dataset).
Units matter: with times multiplied by c, densities per event are divided by c, so the LL
changes by -log(c) per scored event; record the scale (`EventDataset.time_scale`) with every
number.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from neuraltpp.data.batching import batches
from neuraltpp.data.containers import EventDataset

MODES = ("correct", "legacy")
INTEGRATIONS = ("gauss-legendre", "monte-carlo")
FIRST_EVENT = ("condition", "start-state")
CLOSED_FORM = "closed-form"  # the integration label of an exact compensator: no quadrature


@dataclass(frozen=True)
class LikelihoodOptions:
    """Which likelihood is computed: mode and conventions (see the module docstring)."""

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


@dataclass
class LogLikelihood:
    """Log-likelihood of a batch (nats) with its parts and the conventions that produced it.

    ``total = event_term - compensator`` (sums over the batch); ``per_sequence`` [B] and
    ``events_per_sequence`` [B] give the same per sequence.
    """

    total: Tensor
    event_term: Tensor
    compensator: Tensor
    n_events: int
    mode: str
    per_sequence: Tensor
    events_per_sequence: Tensor
    first_event: str
    include_tail: bool
    integration: str

    @property
    def per_event(self) -> float:
        """Nats per scored event (0 when no event is scored)."""
        return float(self.total.detach()) / max(self.n_events, 1)


@functools.lru_cache(maxsize=16)
def gauss_legendre(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre nodes and weights on [-1, 1] (cached: reused by every batch)."""
    return np.polynomial.legendre.leggauss(nodes)


def quadrature_rule(
    dt: Tensor, options: LikelihoodOptions, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Points and weights [..., S] (float64) with int_0^dt f(s) ds ~ sum_i w_i f(s_i), dt [...].

    Gauss-Legendre maps the ``options.nodes`` Legendre nodes to [0, dt]; Monte Carlo draws
    ``options.mc_samples`` uniform points on [0, dt] with weight dt / mc_samples (unbiased).
    """
    dt = dt.to(torch.float64).unsqueeze(-1)
    if options.integration == "gauss-legendre":
        x, w = (
            torch.as_tensor(a, dtype=torch.float64, device=dt.device)
            for a in gauss_legendre(options.nodes)
        )
        return dt * (x + 1) / 2, dt * w / 2
    u = torch.rand(
        (*dt.shape[:-1], options.mc_samples),
        generator=generator,
        dtype=torch.float64,
        device=dt.device,
    )
    return dt * u, (dt / options.mc_samples).expand_as(u)


def _log(x: Tensor) -> Tensor:
    """log, floored at the smallest normal float so that masked entries never give inf * 0."""
    return torch.log(x.clamp_min(torch.finfo(x.dtype).tiny))


def _check_order(lo: Tensor, hi: Tensor, valid: Tensor, what: str) -> None:
    bad = valid & (hi < lo)
    if bool(bad.any()):
        b = int(bad.nonzero()[0, 0])
        raise ValueError(f"sequence {b} of the batch: {what} (times must be non-decreasing)")


def log_likelihood(
    model: Any,
    batch: Any,
    options: LikelihoodOptions | None = None,
    *,
    seed: int = 0,
    h: Tensor | None = None,
) -> LogLikelihood:
    """Log-likelihood of ``batch`` (times, types, mask, window_start, window_end) under ``model``.

    ``options`` defaults to ``LikelihoodOptions()``; ``seed`` seeds the Monte Carlo points.
    ``h``: the states ``model.hidden(batch)`` if the caller already has them (one encoder pass
    shared with prediction or auxiliary losses).

    ``model`` is a `TPPModel` (hidden, intensity, exact_compensator, h_start). See the module
    docstring for the conventions; ``first_event`` and ``include_tail`` are ignored in legacy
    mode, whose result records ``first_event="own-state"`` and ``include_tail=False``.
    """
    options = LikelihoodOptions() if options is None else options
    first_event, include_tail = options.first_event, options.include_tail
    times = batch.times.to(torch.float64)
    _check_order(times[:, :-1], times[:, 1:], batch.mask[:, 1:], "event times decrease")
    gen = torch.Generator(device=times.device).manual_seed(seed)

    def rule(dt: Tensor) -> tuple[Tensor, Tensor]:
        return quadrature_rule(dt, options, generator=gen)

    if h is None:
        h = model.hidden(batch)
    exact = model.exact_compensator
    integration = CLOSED_FORM if exact else options.integration
    if options.mode == "legacy":
        return _legacy(model, h, times, batch.types, batch.mask, rule, integration)

    states, types, valid = h[:, :-1], batch.types[:, 1:], batch.mask[:, 1:]
    dts = times[:, 1:] - times[:, :-1]
    if first_event == "start-state":
        start = batch.window_start.to(torch.float64)
        _check_order(start, times[:, 0], batch.mask[:, 0], "window_start after the first event")
        states = torch.cat([model.h_start.expand(h.shape[0], 1, -1), states], dim=1)
        types = torch.cat([batch.types[:, :1], types], dim=1)
        valid = torch.cat([batch.mask[:, :1], valid], dim=1)
        dts = torch.cat([(times[:, 0] - start).unsqueeze(1), dts], dim=1)
    dts = torch.where(valid, dts, torch.zeros_like(dts))

    if exact:
        lam_event = model.intensity(states, dts.unsqueeze(-1)).double()[..., 0, :]
        comp = torch.where(valid, model.compensator(states, dts).double().sum(-1), 0.0)
    else:
        points, weights = rule(dts)
        lam = model.intensity(states, torch.cat([points, dts.unsqueeze(-1)], dim=-1)).double()
        comp = torch.where(valid, (lam[..., :-1, :].sum(-1) * weights).sum(-1), 0.0)
        lam_event = lam[..., -1, :]
    lam_event = lam_event.gather(-1, types.unsqueeze(-1)).squeeze(-1)
    event = torch.where(valid, _log(lam_event), 0.0)
    comp_seq, event_seq = comp.sum(1), event.sum(1)

    if include_tail:
        rows = torch.arange(h.shape[0], device=h.device)
        count = batch.mask.sum(1)
        last = (count - 1).clamp_min(0)
        has = count > 0
        t_last = times[rows, last]
        end = batch.window_end.to(torch.float64)
        _check_order(t_last, end, has, "window_end before the last event")
        dt_tail = torch.where(has, end - t_last, torch.zeros_like(end))
        if exact:
            tail = model.compensator(h[rows, last], dt_tail).double().sum(-1)
        else:
            points, weights = rule(dt_tail)
            tail = (model.intensity(h[rows, last], points).double().sum(-1) * weights).sum(-1)
        comp_seq = comp_seq + torch.where(has, tail, 0.0)

    n_seq = valid.sum(1)
    return LogLikelihood(
        total=(event_seq - comp_seq).sum(),
        event_term=event_seq.sum(),
        compensator=comp_seq.sum(),
        n_events=int(n_seq.sum()),
        mode=options.mode,
        per_sequence=event_seq - comp_seq,
        events_per_sequence=n_seq,
        first_event=first_event,
        include_tail=include_tail,
        integration=integration,
    )


def _legacy(
    model: Any, h: Tensor, times: Tensor, types: Tensor, mask: Tensor, rule: Any, integration: str
) -> LogLikelihood:
    """The published codes' likelihood: own-state event term, one-type next-state compensator
    (closed form when ``integration`` is ``CLOSED_FORM``)."""
    lam0 = model.intensity(h, h.new_zeros(*h.shape[:2], 1)).double()[..., 0, :]
    event = torch.where(mask, _log(lam0.gather(-1, types.unsqueeze(-1)).squeeze(-1)), 0.0)
    valid = mask[:, 1:]
    gaps = torch.where(valid, times[:, 1:] - times[:, :-1], 0.0)
    if integration == CLOSED_FORM:
        own = model.compensator(h[:, 1:], gaps).double()
        comp = torch.where(valid, own.gather(-1, types[:, 1:, None]).squeeze(-1), 0.0)
    else:
        points, weights = rule(gaps)
        lam = model.intensity(h[:, 1:], points).double()
        idx = types[:, 1:, None, None].expand(*points.shape, 1)
        lam_k = lam.gather(-1, idx).squeeze(-1)
        comp = torch.where(valid, (lam_k * weights).sum(-1), 0.0)
    event_seq, comp_seq = event.sum(1), comp.sum(1)
    n_seq = mask.sum(1)
    return LogLikelihood(
        total=(event_seq - comp_seq).sum(),
        event_term=event_seq.sum(),
        compensator=comp_seq.sum(),
        n_events=int(n_seq.sum()),
        mode="legacy",
        per_sequence=event_seq - comp_seq,
        events_per_sequence=n_seq,
        first_event="own-state",
        include_tail=False,
        integration=integration,
    )


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
    check_scored(ds, options)
    model.eval()
    total, n = 0.0, 0
    for i, batch in enumerate(batches(ds, batch_size, shuffle=False, seed=0, sort_by_length=True)):
        ll = log_likelihood(model, batch, options, seed=seed + i)
        total += float(ll.total)
        n += ll.n_events
    return DatasetLL(total=total, n_events=n, mode=options.mode)


def scored_events(ds: EventDataset, options: LikelihoodOptions) -> int:
    """How many events of ``ds`` the likelihood scores: all, less each sequence's first when
    it is conditioned on (correct mode, ``first_event="condition"``)."""
    conditioned = options.mode == "correct" and options.first_event == "condition"
    return ds.n_events - (len(ds) if conditioned else 0)


def check_scored(ds: EventDataset, options: LikelihoodOptions) -> None:
    """ValueError naming ``ds`` when the likelihood scores none of its events (so training
    or selection on it would be meaningless)."""
    if scored_events(ds, options) == 0:
        raise ValueError(
            f"{ds.source}: no event is scored (every sequence has one event and the first event "
            "is conditioned on)"
        )
