"""Classical multivariate exponential-kernel Hawkes baseline, fitted by maximum likelihood.

Same model and likelihood as :mod:`neuraltpp.simulate` (shared decay ``beta``). The likelihood
and its analytic gradient use the O(n) recursion, vectorised over sequences (one Python step per
position), so a fit on thousands of events takes seconds. Fitting maximises the total LL with
L-BFGS-B over log-parameters (bounded), with ``beta`` fixed or fitted.

Conventions shared with the neural models (``likelihood.LikelihoodOptions``, with the same
defaults): ``first_event="condition"`` (default) conditions on the first event (drops its
log-intensity and the compensator before it); ``"start-state"`` scores the first event from the
baseline on ``(window_start, t_1]`` (the full, true-process LL that
:func:`neuraltpp.simulate.simulate` reports, and what :func:`fit` maximises). ``include_tail``
(default on) adds the compensator on ``(t_n, window_end]``. Unknown windows default to the
first/last event times. :func:`evaluate` reports the same `Metrics` as the neural models.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from neuraltpp.data.batching import pad_sequences
from neuraltpp.data.containers import EventDataset
from neuraltpp.likelihood import CLOSED_FORM, FIRST_EVENT, LikelihoodOptions
from neuraltpp.metrics import GapErrors, LLMetric, Metrics, prediction_metric
from neuraltpp.simulate import HawkesParams

HAWKES_PREDICTION = "hawkes: expected next gap, argmax integrated P(type)"

_CHUNK = 4096  # rows per quadrature block in predict (bounds memory at ~nodes * _CHUNK floats)


@dataclass
class _Padded:
    times: np.ndarray  # [N, L]
    types: np.ndarray  # [N, L]
    mask: np.ndarray  # [N, L] real events
    start: np.ndarray  # [N]
    end: np.ndarray  # [N]


def _pad(ds: EventDataset) -> _Padded:
    b = pad_sequences(ds.sequences)
    return _Padded(
        b.times.numpy(),
        b.types.numpy(),
        b.mask.numpy(),
        b.window_start.numpy(),
        b.window_end.numpy(),
    )


def _excitations(
    beta: float, data: _Padded, num_types: int, *, with_derivative: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Excitation before each event: A[n, i, l] = sum_{j<i, k_j=l} beta exp(-beta (t_i - t_j)).

    With ``with_derivative`` also B[n, i, l] = sum_{j<i, k_j=l} beta (t_i - t_j) exp(...), so
    dA/dbeta = A/beta - B.
    """
    n, length = data.times.shape
    a_all = np.zeros((n, length, num_types))
    b_all = np.zeros((n, length, num_types)) if with_derivative else None
    a = np.zeros((n, num_types))
    b = np.zeros((n, num_types))
    rows = np.arange(n)
    for i in range(1, length):
        gap = (data.times[:, i] - data.times[:, i - 1])[:, None]
        decay = np.exp(-beta * gap)
        jump = np.zeros((n, num_types))
        jump[rows, data.types[:, i - 1]] = beta * data.mask[:, i - 1]
        if b_all is not None:
            b = decay * (b + gap * (a + jump))
            b_all[:, i] = b
        a = decay * (a + jump)
        a_all[:, i] = a
    return a_all, b_all


@dataclass
class HawkesLL:
    """Per-sequence log-likelihood parts (nats) and the number of scored events."""

    total: np.ndarray  # [N]
    event_term: np.ndarray  # [N]
    compensator: np.ndarray  # [N]
    n_events: np.ndarray  # [N] events whose log-intensity is in event_term
    first_event: str
    include_tail: bool

    @property
    def per_event(self) -> float:
        """Total LL divided by the total number of scored events (nats/event)."""
        return float(self.total.sum() / max(1, int(self.n_events.sum())))


def _score_window(
    data: _Padded, first_event: str, include_tail: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scored-event mask and the integration window [lo, hi] per sequence."""
    scored = data.mask.copy()
    lo = data.start.copy()
    if first_event == "condition":
        scored[:, 0] = False
        lo = data.times[:, 0].copy()
    last = data.times[np.arange(len(data.times)), data.mask.sum(axis=1) - 1]
    hi = data.end if include_tail else last
    return scored, lo, hi


def _ll_and_grad(
    params: HawkesParams,
    data: _Padded,
    *,
    first_event: str,
    include_tail: bool,
    with_grad: bool,
) -> tuple[HawkesLL, tuple[np.ndarray, np.ndarray, float] | None]:
    """Log-likelihood per sequence and, optionally, the gradient of its sum in (mu, alpha, beta)."""
    mu, alpha, beta = params.mu, params.alpha, params.beta
    k_types = params.num_types
    a, b = _excitations(beta, data, k_types, with_derivative=with_grad)
    scored, lo, hi = _score_window(data, first_event, include_tail)
    types = data.types
    alpha_rows = alpha[types]  # [N, L, K]: alpha[k_i, :]
    lam = mu[types] + np.einsum("nil,nil->ni", alpha_rows, a)
    event_term = np.where(scored, np.log(np.where(scored, lam, 1.0)), 0.0).sum(axis=1)
    rest = np.clip(hi[:, None] - data.times, 0.0, None)  # time from each event to window end
    kept = -np.expm1(-beta * rest) * data.mask  # [N, L]
    col = alpha.sum(axis=0)  # sum_k alpha[k, l]
    compensator = mu.sum() * (hi - lo) + (col[types] * kept).sum(axis=1)
    ll = HawkesLL(
        total=event_term - compensator,
        event_term=event_term,
        compensator=compensator,
        n_events=scored.sum(axis=1),
        first_event=first_event,
        include_tail=include_tail,
    )
    if not with_grad:
        return ll, None
    assert b is not None
    inv = np.where(scored, 1.0 / np.where(scored, lam, 1.0), 0.0)  # [N, L]
    onehot = np.eye(k_types)[types] * data.mask[..., None]  # [N, L, K]
    scored_onehot = onehot * scored[..., None]
    g_mu = np.einsum("ni,nik->k", inv, scored_onehot) - (hi - lo).sum()
    g_alpha = (
        np.einsum("ni,nik,nil->kl", inv, scored_onehot, a)
        - np.einsum("ni,nil->l", kept, onehot)[None, :]
    )
    d_lam = np.einsum("nil,nil->ni", alpha_rows, a / beta - b)
    d_kept = rest * np.exp(-beta * rest) * data.mask
    g_beta = float((inv * d_lam).sum() - (col[types] * d_kept).sum())
    return ll, (g_mu, g_alpha, g_beta)


def log_likelihood(
    params: HawkesParams, dataset: EventDataset, options: LikelihoodOptions | None = None
) -> HawkesLL:
    """Exact per-sequence log-likelihood of ``dataset`` under ``params`` (O(n) recursion).

    ``options`` defaults to ``LikelihoodOptions()``, as for the neural models. Only the correct
    mode exists here (legacy describes the neural codes); the compensator is exact, so the
    integration options do not apply.
    """
    options = LikelihoodOptions() if options is None else options
    if options.mode != "correct":
        raise ValueError(
            f"the classical Hawkes likelihood has the correct mode only, got {options.mode!r}"
        )
    _check_types(params, dataset)
    ll, _ = _ll_and_grad(
        params,
        _pad(dataset),
        first_event=options.first_event,
        include_tail=options.include_tail,
        with_grad=False,
    )
    return ll


def _check_types(params: HawkesParams, dataset: EventDataset) -> None:
    if params.num_types != dataset.num_types:
        raise ValueError(
            f"{dataset.source}: dataset has {dataset.num_types} types, parameters have "
            f"{params.num_types}"
        )


_LOG_BOUNDS = {"mu": (-30.0, 20.0), "alpha": (-30.0, 3.0), "beta": (-20.0, 20.0)}


def fit(
    dataset: EventDataset,
    *,
    beta: float | None = None,
    max_iter: int = 500,
    tol: float = 1e-9,
) -> HawkesParams:
    """Maximum-likelihood fit (full LL, tail included); ``beta`` fixed if given, else fitted.

    Optimises log-parameters with L-BFGS-B and the analytic gradient; starts from half the
    empirical rate as ``mu``, ``alpha = 0.5 / K`` and ``beta`` = 1 / mean inter-event gap.
    Warns if the optimiser does not report convergence.
    """
    data = _pad(dataset)
    k_types = dataset.num_types
    counts = np.bincount(data.types[data.mask], minlength=k_types).astype(np.float64)
    duration = float((data.end - data.start).sum())
    if duration <= 0:
        raise ValueError(f"{dataset.source}: total observation time is zero; cannot fit")
    gaps = np.diff(data.times, axis=1)[data.mask[:, 1:]]
    mean_gap = float(gaps.mean()) if gaps.size and gaps.mean() > 0 else duration / counts.sum()
    beta0 = beta if beta is not None else 1.0 / mean_gap
    mu0 = np.maximum(0.5 * counts / duration, 1e-8)
    theta0 = np.concatenate([np.log(mu0), np.full(k_types * k_types, np.log(0.5 / k_types))])
    bounds = [_LOG_BOUNDS["mu"]] * k_types + [_LOG_BOUNDS["alpha"]] * k_types**2
    if beta is None:
        theta0 = np.append(theta0, np.log(beta0))
        bounds.append(_LOG_BOUNDS["beta"])
    n_events = max(1.0, counts.sum())

    def unpack(theta: np.ndarray) -> HawkesParams:
        mu = np.exp(theta[:k_types])
        alpha = np.exp(theta[k_types : k_types + k_types**2]).reshape(k_types, k_types)
        return HawkesParams(mu, alpha, np.exp(theta[-1]) if beta is None else beta)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        p = unpack(theta)
        ll, grad = _ll_and_grad(
            p, data, first_event="start-state", include_tail=True, with_grad=True
        )
        assert grad is not None
        g_mu, g_alpha, g_beta = grad
        g = np.concatenate([g_mu * p.mu, (g_alpha * p.alpha).ravel()])
        if beta is None:
            g = np.append(g, g_beta * p.beta)
        return -float(ll.total.sum()) / n_events, -g / n_events

    result = minimize(
        objective,
        theta0,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": max_iter, "ftol": tol, "gtol": 1e-7},
    )
    if not result.success:
        warnings.warn(
            f"{dataset.source}: Hawkes fit did not converge: {result.message}", stacklevel=2
        )
    return unpack(result.x)


@dataclass
class HawkesPredictions:
    """Next-event predictions after each event j (for event j+1), flattened over sequences."""

    type_probs: np.ndarray  # [M, K] probability that the next event has type k
    expected_gap: np.ndarray  # [M] E[t_{j+1} - t_j]
    true_type: np.ndarray  # [M]
    true_gap: np.ndarray  # [M]


def _survival_integrals(
    total_mu: float, excite: np.ndarray, beta: float, nodes: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """E1 = int_0^inf S(s) ds and E2 = int_0^inf exp(-beta s) S(s) ds per row of ``excite``.

    S(s) = exp(-M s - C (1 - exp(-beta s)) / beta) with M = sum(mu) and C the summed excitation
    just after the event. Trapezoid rule in log s on [lo, 50 / M] plus lo * f(0) below lo.
    """
    c = excite[:, None]
    lo = 1e-7 / (total_mu + excite + beta)
    y = np.linspace(0.0, 1.0, nodes)[None, :]
    log_s = np.log(lo)[:, None] + y * (np.log(50.0 / total_mu) - np.log(lo))[:, None]
    s = np.exp(log_s)
    survival = np.exp(-total_mu * s + c * np.expm1(-beta * s) / beta)
    e1 = np.trapezoid(survival * s, log_s, axis=1) + lo
    e2 = np.trapezoid(np.exp(-beta * s) * survival * s, log_s, axis=1) + lo
    return e1, e2


def predict(params: HawkesParams, dataset: EventDataset) -> HawkesPredictions:
    """Next type probabilities (integrated over the next time) and expected gap after each event.

    P(next type k) = mu_k E1 + c_k E2 with c_k the type-k excitation just after event j.
    """
    _check_types(params, dataset)
    data = _pad(dataset)
    a, _ = _excitations(params.beta, data, params.num_types, with_derivative=False)
    onehot = np.eye(params.num_types)[data.types]
    after = a + params.beta * onehot  # excitation by types just after event i
    has_next = data.mask[:, 1:]
    c = (after[:, :-1] @ params.alpha.T)[has_next]  # [M, K]
    chunks = [
        _survival_integrals(float(params.mu.sum()), part.sum(axis=1), params.beta)
        for part in np.array_split(c, max(1, -(-len(c) // _CHUNK)))
    ]
    e1 = np.concatenate([e for e, _ in chunks])
    e2 = np.concatenate([e for _, e in chunks])
    probs = params.mu[None, :] * e1[:, None] + c * e2[:, None]
    return HawkesPredictions(
        type_probs=probs / probs.sum(axis=1, keepdims=True),
        expected_gap=e1,
        true_type=data.types[:, 1:][has_next],
        true_gap=np.diff(data.times, axis=1)[has_next],
    )


def evaluate(
    params: HawkesParams,
    dataset: EventDataset,
    options: LikelihoodOptions | None = None,
    *,
    predictions: bool = True,
) -> Metrics:
    """LL per event under ``options`` (default ``LikelihoodOptions()``, as the neural models),
    and next-type accuracy and RMSE of the expected next gap (``predictions=False`` skips them).
    """
    options = LikelihoodOptions() if options is None else options
    ll = log_likelihood(params, dataset, options)
    per_event = ll.per_event
    metrics = Metrics(
        dataset=dataset.source,
        n_sequences=len(dataset),
        n_events=dataset.n_events,
        likelihood=LLMetric(
            ll_per_event=per_event,
            n_events=int(ll.n_events.sum()),
            mode=options.mode,
            first_event=options.first_event,
            include_tail=options.include_tail,
            integration=CLOSED_FORM,
            time_scale=dataset.time_scale,
            ll_per_event_original_units=per_event - math.log(dataset.time_scale),
        ),
    )
    if predictions:
        pred = predict(params, dataset)
        correct = int((pred.type_probs.argmax(axis=1) == pred.true_type).sum())
        errors = GapErrors()
        errors.add(pred.expected_gap - pred.true_gap)
        metrics.model_prediction = prediction_metric(HAWKES_PREDICTION, correct, errors)
    return metrics


def true_ll_per_event(params: HawkesParams, dataset: EventDataset) -> dict[str, float]:
    """The LL per event of ``params`` under both first-event conventions (tail included)."""
    return {
        fe: log_likelihood(params, dataset, LikelihoodOptions(first_event=fe)).per_event
        for fe in FIRST_EVENT
    }
