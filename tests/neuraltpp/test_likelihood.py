"""The log-likelihood against closed forms, an independent quad reference, shift invariance,
padding, and the legacy mode."""

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy import integrate, special

from neuraltpp.data import Batch
from neuraltpp.likelihood import LikelihoodOptions, log_likelihood, quadrature_rule
from neuraltpp.models import TPPModel


def _softplus_integral(alpha: float, b: float, beta: float, T: float) -> float:
    """int_0^T log(1 + exp(beta (alpha s + b))) / beta ds in closed form, via the dilogarithm:
    int log(1 + e^x) dx = -Li2(-e^x), and Li2(z) = spence(1 - z)."""
    lo, hi = beta * b, beta * (alpha * T + b)
    return (special.spence(1 + math.exp(lo)) - special.spence(1 + math.exp(hi))) / (alpha * beta**2)


def _gaps(batch: Batch, first_event: str, include_tail: bool) -> float:
    """Total length of all integrated intervals under the conventions."""
    total = 0.0
    for times, mask, ws, we in zip(*batch[:1], batch.mask, *batch[3:], strict=True):
        t = times[mask]
        total += float(t[-1] - t[0])
        total += float(t[0] - ws) if first_event == "start-state" else 0.0
        total += float(we - t[-1]) if include_tail else 0.0
    return total


@pytest.mark.parametrize("first_event", ["condition", "start-state"])
@pytest.mark.parametrize("include_tail", [True, False])
@pytest.mark.parametrize("integration", ["gauss-legendre", "monte-carlo"])
def test_constant_intensity_closed_form(
    first_event,
    include_tail,
    integration,
    make_model: Callable[..., TPPModel],
    make_batch: Callable[..., Batch],
    set_heads: Callable[..., None],
) -> None:
    """lambda_k = c for all k: compensator = K c (total integrated time), event term = n log c."""
    k, c = 3, 0.7
    model = make_model(k=k, double=True, frozen=True)
    set_heads(model, [0.0] * k, [math.log(math.expm1(c))] * k, [1.0] * k)
    batch = make_batch(k=k)
    options = LikelihoodOptions(
        first_event=first_event, include_tail=include_tail, integration=integration
    )
    ll = log_likelihood(model, batch, options)
    n = int(batch.mask.sum()) - (batch.mask.shape[0] if first_event == "condition" else 0)
    assert ll.n_events == n and ll.mode == "correct"
    expected = k * c * _gaps(batch, first_event, include_tail)
    assert float(ll.compensator) == pytest.approx(expected, rel=1e-6)
    assert float(ll.event_term) == pytest.approx(n * math.log(c), rel=1e-6)
    assert float(ll.total) == pytest.approx(n * math.log(c) - expected, rel=1e-6)
    torch.testing.assert_close(ll.per_sequence.sum(), ll.total)
    assert int(ll.events_per_sequence.sum()) == n


def test_softplus_intensity_gauss_legendre_and_monte_carlo() -> None:
    """lambda = softplus_beta(alpha s + b): GL matches the dilogarithm closed form; MC is within
    4 of its own standard errors."""
    alpha, b, beta, T = -1.3, 0.4, 2.0, 3.0
    exact = _softplus_integral(alpha, b, beta, T)
    ref, _ = integrate.quad(lambda s: np.logaddexp(0, beta * (alpha * s + b)) / beta, 0, T)
    assert exact == pytest.approx(ref, rel=1e-10)

    def f(s: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softplus(beta * (alpha * s + b)) / beta

    dt = torch.tensor(T, dtype=torch.float64)
    pts, w = quadrature_rule(dt, LikelihoodOptions(nodes=16))
    assert float((f(pts) * w).sum()) == pytest.approx(exact, rel=1e-9)

    gen = torch.Generator().manual_seed(3)
    mc = LikelihoodOptions(integration="monte-carlo", mc_samples=4000)
    pts, w = quadrature_rule(dt, mc, generator=gen)
    values = f(pts) * T
    stderr = float(values.std()) / math.sqrt(len(values))
    assert abs(float((f(pts) * w).sum()) - exact) < 4 * stderr


def test_softplus_intensity_in_the_model(
    make_model: Callable[..., TPPModel],
    make_batch: Callable[..., Batch],
    set_heads: Callable[..., None],
) -> None:
    """Per-type alpha, b, beta: the model's compensator equals the closed form summed over types."""
    alpha, bias, beta = [-1.0, 0.5, 2.0], [0.3, -1.0, 0.1], [1.0, 0.5, 3.0]
    model = make_model(double=True, frozen=True)
    set_heads(model, alpha, bias, beta)
    batch = make_batch()
    ll = log_likelihood(model, batch, LikelihoodOptions(include_tail=False))
    expected = 0.0
    for times, mask in zip(batch.times, batch.mask, strict=True):
        for dt in np.diff(times[mask].numpy()):
            expected += sum(
                _softplus_integral(a, b, be, dt) for a, b, be in zip(alpha, bias, beta, strict=True)
            )
    assert float(ll.compensator) == pytest.approx(expected, rel=1e-7)  # kinks: beta = 3


def test_hawkes_exponential_compensator_between_events() -> None:
    """The quadrature rule integrates mu + sum_i a e^{-b (t - t_i)} over (t_j, t_{j+1}] to the
    closed form mu dt + sum_i (a/b)(e^{-b(t_j - t_i)} - e^{-b(t_{j+1} - t_i)})."""
    mu, a, b = 0.2, 0.8, 1.5
    events = np.array([0.0, 0.3, 1.1, 1.2, 2.9, 4.0])
    for j in range(len(events) - 1):
        past, t0, t1 = events[: j + 1], events[j], events[j + 1]
        closed = mu * (t1 - t0) + (a / b) * np.sum(
            np.exp(-b * (t0 - past)) - np.exp(-b * (t1 - past))
        )
        pts, w = quadrature_rule(torch.tensor(t1 - t0, dtype=torch.float64), LikelihoodOptions())
        s = t0 + pts.numpy()
        lam = mu + a * np.exp(-b * (s[:, None] - past[None, :])).sum(-1)
        assert float((lam * w.numpy()).sum()) == pytest.approx(closed, rel=1e-12)


@pytest.mark.parametrize("name", ["thp", "mhp"])
def test_against_independent_reference(
    name: str, make_model: Callable[..., TPPModel], make_batch: Callable[..., Batch]
) -> None:
    """Event j+1 scored from h_j at t_{j+1}; compensator over all types by scipy quad; start
    state and tail; padded sequences contribute only their real events."""
    model = make_model(name, double=True, frozen=True)
    batch = make_batch()
    ll = log_likelihood(model, batch, LikelihoodOptions(first_event="start-state"))
    with torch.no_grad():
        h = model.hidden(batch)
    for i in range(len(batch.times)):
        t = batch.times[i][batch.mask[i]].tolist()
        k = batch.types[i][batch.mask[i]].tolist()
        states = [model.h_start, *h[i, : len(t)]]
        starts = [float(batch.window_start[i]), *t]
        ends = [*t, float(batch.window_end[i])]
        total = 0.0
        for j, (state, t0, t1) in enumerate(zip(states, starts, ends, strict=True)):

            def lam_total(s: float, state: torch.Tensor = state) -> float:
                dt = torch.tensor([s], dtype=torch.float64)
                return float(model.intensity(state, dt).detach().sum())

            total -= integrate.quad(lam_total, 0.0, t1 - t0, epsabs=1e-12, epsrel=1e-12)[0]
            if j < len(t):
                lam = model.intensity(state, torch.tensor([t1 - t0], dtype=torch.float64))
                total += math.log(float(lam[0, k[j]]))
        assert float(ll.per_sequence[i]) == pytest.approx(total, rel=1e-9, abs=1e-9)


def test_padding_does_not_change_a_sequence(
    make_model: Callable[..., TPPModel], make_batch: Callable[..., Batch]
) -> None:
    model = make_model("mhpe", frozen=True)
    batch = make_batch()
    ll = log_likelihood(model, batch)
    n = int(batch.mask[1].sum())
    alone = Batch(
        batch.times[1:2, :n], batch.types[1:2, :n], batch.mask[1:2, :n],
        batch.window_start[1:2], batch.window_end[1:2],
    )  # fmt: skip
    assert float(log_likelihood(model, alone).total) == pytest.approx(
        float(ll.per_sequence[1]), abs=1e-5
    )


@pytest.mark.parametrize("shift", [10.0, 1e3, 1e6])
def test_rothp_ll_is_shift_invariant_thp_is_not(
    shift: float, make_model: Callable[..., TPPModel], make_batch: Callable[..., Batch]
) -> None:
    """float32 models; window shifted with the events; start state and tail included."""
    batch, shifted = make_batch(), make_batch(shift=shift)
    kw = LikelihoodOptions(first_event="start-state", include_tail=True)
    for name in ("rothp", "mhp", "mhpe"):
        model = make_model(name, frozen=True)
        a, b = log_likelihood(model, batch, kw), log_likelihood(model, shifted, kw)
        assert abs(a.per_event - b.per_event) < 1e-5, name
    thp = make_model("thp", frozen=True)
    a, b = log_likelihood(thp, batch, kw), log_likelihood(thp, shifted, kw)
    assert abs(a.per_event - b.per_event) > 1e-3


def test_legacy_formula_on_constant_intensity(
    make_model: Callable[..., TPPModel],
    make_batch: Callable[..., Batch],
    set_heads: Callable[..., None],
) -> None:
    """Legacy scores all n events, integrates only the observed type: compensator c (t_n - t_1)."""
    k, c = 4, 0.7
    model = make_model(k=k, double=True, frozen=True)
    set_heads(model, [0.0] * k, [math.log(math.expm1(c))] * k, [1.0] * k)
    batch = make_batch(k=k)
    ll = log_likelihood(model, batch, LikelihoodOptions(mode="legacy", first_event="start-state"))
    n = int(batch.mask.sum())
    assert (ll.mode, ll.first_event, ll.include_tail, ll.n_events) == (
        "legacy",
        "own-state",
        False,
        n,
    )
    assert float(ll.compensator) == pytest.approx(c * _gaps(batch, "condition", False), rel=1e-9)
    assert float(ll.event_term) == pytest.approx(n * math.log(c), rel=1e-9)


def test_legacy_is_higher_on_typical_data(
    make_model: Callable[..., TPPModel], make_batch: Callable[..., Batch]
) -> None:
    """Legacy exceeds the correct LL: its compensator counts one of K types instead of all K
    (about 1/K of the mass), and after training its event term is read off a state that has
    already seen the event being scored (here: type and time of event j are in h_j)."""
    model = make_model("rothp", k=5, frozen=True)
    batch = make_batch(seed=4, b=4, n=20, k=5)
    correct = log_likelihood(model, batch)
    legacy = log_likelihood(model, batch, LikelihoodOptions(mode="legacy"))
    assert legacy.per_event > correct.per_event + 0.5
    assert (
        float(legacy.compensator) / legacy.n_events < float(correct.compensator) / correct.n_events
    )


def test_monte_carlo_is_seeded(
    make_model: Callable[..., TPPModel], make_batch: Callable[..., Batch]
) -> None:
    model, batch = make_model(frozen=True), make_batch()
    mc = LikelihoodOptions(integration="monte-carlo", mc_samples=8)
    a = log_likelihood(model, batch, mc, seed=1)
    assert float(a.total) == float(log_likelihood(model, batch, mc, seed=1).total)
    assert float(a.total) != float(log_likelihood(model, batch, mc, seed=2).total)


def test_bad_window_and_options_raise(
    make_model: Callable[..., TPPModel], make_batch: Callable[..., Batch]
) -> None:
    model, batch = make_model(frozen=True), make_batch()
    with pytest.raises(ValueError, match=r"sequence 0 .*window_end"):
        log_likelihood(model, batch._replace(window_end=batch.window_end - 10.0))
    with pytest.raises(ValueError, match=r"sequence 2 .*window_start"):
        start = batch.window_start.clone()
        start[2] += 10.0
        start_state = LikelihoodOptions(first_event="start-state")
        log_likelihood(model, batch._replace(window_start=start), start_state)
    with pytest.raises(ValueError, match="mode"):
        LikelihoodOptions(mode="published")
    with pytest.raises(ValueError, match="integration"):
        LikelihoodOptions(integration="trapezoid")
    with pytest.raises(ValueError, match="nodes"):
        LikelihoodOptions(nodes=0)
