"""Multivariate exponential-kernel Hawkes processes: simulation by Ogata thinning, exact LL.

Model (one decay ``beta`` shared by all type pairs)::

    lambda_k(t) = mu_k + sum_{i: t_i < t} alpha[k, k_i] * beta * exp(-beta * (t - t_i))

so ``alpha[k, l]`` is the expected number of type-``k`` children of one type-``l`` event (the
branching matrix); the process is stationary iff the spectral radius of ``alpha`` is < 1, with
stationary rates ``(I - alpha)^{-1} mu``. With tied times, earlier positions count as history.

`random_stable_params` draws a random stable preset; `simulated_splits` turns a `SimSpec` and a
seed into parameters plus 80/10/10 train/dev/test splits (the built-in ``hawkes-sim`` data is
``simulated_splits(HAWKES_SIM, seed)``).

The log-likelihood of a sequence on its window ``[w0, T]`` (no events before ``w0``) is
``sum_i log lambda_{k_i}(t_i) - sum_k int_{w0}^{T} lambda_k``, with the closed-form compensator
``sum(mu) (T - w0) + sum_i sum_k alpha[k, k_i] (1 - exp(-beta (T - t_i)))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neuraltpp.data.containers import EventDataset, EventSequence
from neuraltpp.data.splits import split_dataset


class HawkesParamError(ValueError):
    """Invalid Hawkes parameters (shapes, signs) or simulation settings."""


@dataclass
class HawkesParams:
    """Parameters ``mu`` [K] (> 0), ``alpha`` [K, K] (>= 0, branching matrix), ``beta`` (> 0)."""

    mu: np.ndarray
    alpha: np.ndarray
    beta: float

    def __post_init__(self) -> None:
        self.mu = np.asarray(self.mu, dtype=np.float64).reshape(-1)
        self.alpha = np.asarray(self.alpha, dtype=np.float64)
        self.beta = float(self.beta)
        k = self.mu.size
        if k == 0 or self.alpha.shape != (k, k):
            raise HawkesParamError(
                f"alpha must be [{k}, {k}] for {k} types, got {self.alpha.shape}"
            )
        if not (np.all(np.isfinite(self.mu)) and np.all(self.mu > 0)):
            raise HawkesParamError(f"mu must be finite and positive, got {self.mu}")
        if not (np.all(np.isfinite(self.alpha)) and np.all(self.alpha >= 0)):
            raise HawkesParamError(f"alpha must be finite and non-negative, got {self.alpha}")
        if not (np.isfinite(self.beta) and self.beta > 0):
            raise HawkesParamError(f"beta must be finite and positive, got {self.beta}")

    @property
    def num_types(self) -> int:
        """Number of event types K."""
        return int(self.mu.size)

    @property
    def spectral_radius(self) -> float:
        """Largest absolute eigenvalue of ``alpha``; < 1 means stationary."""
        return float(np.max(np.abs(np.linalg.eigvals(self.alpha))))

    def stationary_rates(self) -> np.ndarray:
        """Mean event rate per type ``(I - alpha)^{-1} mu``; requires stationarity."""
        check_stationary(self)
        return np.linalg.solve(np.eye(self.num_types) - self.alpha, self.mu)


def check_stationary(params: HawkesParams) -> None:
    """Raise :class:`HawkesParamError` unless the spectral radius of ``alpha`` is below 1."""
    rho = params.spectral_radius
    if rho >= 1:
        raise HawkesParamError(f"non-stationary Hawkes process: spectral radius of alpha {rho:.4g}")


@dataclass
class Simulation:
    """A simulated sequence with its window and the exact log-likelihood of the true process."""

    sequence: EventSequence
    log_likelihood: float


def simulate(
    params: HawkesParams,
    rng: np.random.Generator,
    *,
    T: float | None = None,
    max_events: int | None = None,
    seq_id: str = "0",
) -> Simulation:
    """Simulate on [0, T] and/or up to ``max_events`` by Ogata thinning.

    When ``max_events`` stops the run, the window ends at the last event (a stopping time, so
    the LL on [0, t_n] is still exact). A run without any event raises
    :class:`HawkesParamError` (empty sequences are not allowed): use a larger ``T``.
    """
    if T is None and max_events is None:
        raise HawkesParamError("give T and/or max_events")
    if T is not None and not T > 0:
        raise HawkesParamError(f"T must be positive, got {T}")
    if max_events is not None and max_events <= 0:
        raise HawkesParamError(f"max_events must be positive, got {max_events}")
    if T is None:
        check_stationary(params)
    horizon = np.inf if T is None else float(T)
    limit = np.iinfo(np.int64).max if max_events is None else int(max_events)
    mu, alpha, beta = params.mu, params.alpha, params.beta
    excite = np.zeros(params.num_types)  # sum_{past j of type l} beta * exp(-beta (t - t_j))
    t = 0.0
    times: list[float] = []
    types: list[int] = []
    log_intensity = 0.0
    while len(times) < limit:
        bound = float(np.sum(mu + alpha @ excite))  # intensity only decays until the next event
        wait = rng.exponential(1.0 / bound)
        if t + wait > horizon:
            break
        t += wait
        excite *= np.exp(-beta * wait)
        lam = mu + alpha @ excite
        total = float(np.sum(lam))
        if rng.random() * bound > total:
            continue
        k = int(np.searchsorted(np.cumsum(lam), rng.random() * total, side="right"))
        k = min(k, params.num_types - 1)
        times.append(t)
        types.append(k)
        log_intensity += float(np.log(lam[k]))
        excite[k] += beta
    if not times:
        raise HawkesParamError(f"simulation of sequence {seq_id!r} produced no event; increase T")
    end = horizon if len(times) < limit else times[-1]
    arr_t = np.asarray(times)
    arr_k = np.asarray(types, dtype=np.int64)
    compensator = float(np.sum(mu)) * end + float(
        np.sum(alpha[:, arr_k].sum(axis=0) * -np.expm1(-beta * (end - arr_t)))
    )
    seq = EventSequence(arr_t, arr_k, seq_id, window_start=0.0, window_end=float(end))
    return Simulation(sequence=seq, log_likelihood=log_intensity - compensator)


def simulate_dataset(
    params: HawkesParams,
    n_sequences: int,
    T: float | None = None,
    seed: int = 0,
    *,
    max_events: int | None = None,
) -> EventDataset:
    """Simulate ``n_sequences`` independent sequences on [0, T] (window_start 0, window_end T).

    The true-process log-likelihood of each sequence is in ``metadata["true_log_likelihood"]``,
    keyed by ``seq_id`` (so it stays valid for any split or subset of the sequences).
    Each sequence has its own generator spawned from ``seed`` (order-independent results).
    """
    if n_sequences <= 0:
        raise HawkesParamError(f"n_sequences must be positive, got {n_sequences}")
    children = np.random.SeedSequence(seed).spawn(n_sequences)
    sims = [
        simulate(params, np.random.default_rng(c), T=T, max_events=max_events, seq_id=str(i))
        for i, c in enumerate(children)
    ]
    return EventDataset(
        sequences=[s.sequence for s in sims],
        num_types=params.num_types,
        source=f"simulated-hawkes(seed={seed})",
        metadata={
            "simulator": "exponential Hawkes, Ogata thinning",
            "seed": seed,
            "T": T,
            "max_events": max_events,
            "mu": params.mu.tolist(),
            "alpha": params.alpha.tolist(),
            "beta": params.beta,
            "true_log_likelihood": {s.sequence.seq_id: s.log_likelihood for s in sims},
        },
    )


@dataclass(frozen=True)
class SimSpec:
    """A simulated Hawkes dataset: random stable parameters plus sequence count and horizon."""

    num_types: int = 5
    n_sequences: int = 300
    horizon: float = 20.0
    radius: float = 0.7
    beta: float = 2.0


HAWKES_SIM = SimSpec()  # the built-in ``hawkes-sim`` data and the ``neuraltpp simulate`` preset


def random_stable_params(spec: SimSpec, seed: int) -> HawkesParams:
    """Random Hawkes parameters: mu ~ U(0.1, 0.5), alpha >= 0 rescaled to spectral radius."""
    rng = np.random.default_rng(seed)
    k = spec.num_types
    mu = rng.uniform(0.1, 0.5, size=k)
    alpha = rng.uniform(0.0, 1.0, size=(k, k)) * (rng.random((k, k)) < 0.6)
    alpha += np.eye(k) * rng.uniform(0.2, 1.0, size=k)  # self-excitation keeps rho > 0
    alpha *= spec.radius / np.max(np.abs(np.linalg.eigvals(alpha)))
    return HawkesParams(mu, alpha, spec.beta)


def simulated_splits(spec: SimSpec, seed: int) -> tuple[HawkesParams, dict[str, EventDataset]]:
    """Parameters and 80/10/10 train/dev/test splits of a simulated dataset, both from seed."""
    params = random_stable_params(spec, seed)
    ds = simulate_dataset(params, spec.n_sequences, T=spec.horizon, seed=seed)
    return params, split_dataset(ds, seed=seed)
