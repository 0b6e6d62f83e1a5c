"""Heads shared by every neural TPP, the `TPPModel` wrapper, and the encoders' time features.

On the hidden state h_j after event j (which has seen events 0..j only) an intensity decoder
gives lambda_k(t) for t in (t_j, t_{j+1}] (``ModelConfig.decoder``):

- ``thp`` (`THPHeads`, default): lambda_k(t) = softplus_{beta_k}(alpha_k (t - t_j) + w_k . h_j
  + b_k), softplus_beta(x) = log(1 + exp(beta x)) / beta (beta_k > 0, as in the THP code);
- ``decay`` (`DecayHeads`): lambda_k(t) = mu_k + (c_k - mu_k) exp(-beta_k (t - t_j)), with
  target level mu_k, start level c_k and rate beta_k computed from h_j; it contains the
  multivariate exponential Hawkes process exactly and has a closed-form compensator.

Both come with a type head (linear -> K logits) and a gap head (linear -> softplus -> positive
gap).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def relative_times(times: Tensor, mask: Tensor) -> Tensor:
    """Times relative to each sequence's first event, in float64, 0 at padding.

    Encoders start from these differences so that absolute offsets (e.g. 1e6) lose no precision.
    """
    times = times.to(torch.float64)
    return torch.where(mask, times - times[:, :1], torch.zeros_like(times))


def inter_event_gaps(times: Tensor, mask: Tensor) -> Tensor:
    """Float64 gaps t_i - t_{i-1}; 0 for the first event and at padding."""
    times = times.to(torch.float64)
    gaps = torch.zeros_like(times)
    gaps[:, 1:] = times[:, 1:] - times[:, :-1]
    return torch.where(mask, gaps, torch.zeros_like(gaps))


class Heads(nn.Module, ABC):
    """Output heads on a state of width ``d_model`` for K types: an intensity decoder (the
    subclass), a type head and a gap head."""

    type_proj: nn.Linear
    gap_proj: nn.Linear
    exact_compensator: ClassVar[bool] = False  # True: `compensator` integrates in closed form

    def __init__(self, d_model: int, num_types: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.num_types = num_types

    @abstractmethod
    def intensity(self, h: Tensor, dt: Tensor) -> Tensor:
        """lambda_k at times t_j + dt: h [..., d], dt [..., S] (any float dtype) -> [..., S, K]."""

    def compensator(self, h: Tensor, dt: Tensor) -> Tensor:
        """Exact int_0^dt lambda_k(s) ds, h [..., d], dt [...] -> [..., K], for decoders with a
        closed form (``exact_compensator``); the likelihood integrates the others numerically."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form compensator")

    def type_logits(self, h: Tensor) -> Tensor:
        """Logits of the next event's type: [..., d] -> [..., K]."""
        return self.type_proj(h)

    def gap(self, h: Tensor) -> Tensor:
        """Directly predicted (positive) time to the next event: [..., d] -> [...]."""
        return F.softplus(self.gap_proj(h)).squeeze(-1)


class THPHeads(Heads):
    """THP's intensity softplus_{beta_k}(alpha_k (t - t_j) + w_k . h_j + b_k) (module doc)."""

    def __init__(self, d_model: int, num_types: int) -> None:
        super().__init__(d_model, num_types)
        self.intensity_proj = nn.Linear(d_model, num_types)
        self.alpha = nn.Parameter(torch.full((num_types,), -0.1))  # THP's initial value
        self.log_beta = nn.Parameter(torch.zeros(num_types))  # beta = exp(log_beta) = 1 at init
        self.type_proj = nn.Linear(d_model, num_types)
        self.gap_proj = nn.Linear(d_model, 1)

    def intensity(self, h: Tensor, dt: Tensor) -> Tensor:
        """lambda_k at times t_j + dt: h [..., d], dt [..., S] (any float dtype) -> [..., S, K]."""
        base = self.intensity_proj(h).unsqueeze(-2)
        x = base + self.alpha * dt.to(h.dtype).unsqueeze(-1)
        beta = self.log_beta.exp()
        return F.softplus(beta * x) / beta


_FLOOR = 1e-12  # lower bound of mu and beta: float32 softplus can underflow to 0


class DecayHeads(Heads):
    """Exponential decay from a start level to a target level (Neural-Hawkes style), per type:

        lambda_k(t_j + s) = mu_k + (c_k - mu_k) exp(-beta_k s),
        mu_k = softplus(u_k . h_j + a_k),  beta_k = softplus(r_k . h_j + g_k),
        c_k = mu_k + x_k if x_k >= 0, else mu_k^2 / (mu_k - x_k),  x_k = w_k . h_j + b_k.

    The start link is the identity on the excess x >= 0 and maps inhibition x < 0 into (0, mu)
    (C^1 at 0; rational, so it neither underflows nor loses its gradient for strong
    inhibition): the start level and the intensity (between c_k and mu_k) stay > 0, evaluated
    as mu (1 - e^{-beta s}) + c e^{-beta s}, a sum of two non-negative terms. An exponential
    Hawkes process with baseline mu, branching matrix alpha and decay beta is the case u = r = 0,
    a = softplus^-1(mu), g = softplus^-1(beta), b = 0, w = alpha on the excitation state
    S_l(t_j) = sum_{i <= j, k_i = l} beta exp(-beta (t_j - t_i)) (x = alpha S >= 0). The
    compensator is mu_k s + (c_k - mu_k) (1 - exp(-beta_k s)) / beta_k.
    """

    exact_compensator = True

    def __init__(self, d_model: int, num_types: int) -> None:
        super().__init__(d_model, num_types)
        self.level_proj = nn.Linear(d_model, num_types)
        self.start_proj = nn.Linear(d_model, num_types)
        self.rate_proj = nn.Linear(d_model, num_types)
        self.type_proj = nn.Linear(d_model, num_types)
        self.gap_proj = nn.Linear(d_model, 1)

    def levels(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Target level mu, start level c (at t_j) and decay rate beta, each [..., K]."""
        mu = F.softplus(self.level_proj(h)).clamp_min(_FLOOR)
        x = self.start_proj(h)
        start = torch.where(x >= 0, mu + x, mu * mu / (mu - x.clamp_max(0.0)))
        beta = F.softplus(self.rate_proj(h)).clamp_min(_FLOOR)
        return mu, start, beta

    def intensity(self, h: Tensor, dt: Tensor) -> Tensor:
        """lambda_k at times t_j + dt: h [..., d], dt [..., S] (any float dtype) -> [..., S, K]."""
        mu, start, beta = (p.unsqueeze(-2) for p in self.levels(h))
        decay = -beta * dt.to(h.dtype).unsqueeze(-1)
        return -mu * torch.expm1(decay) + start * torch.exp(decay)

    def compensator(self, h: Tensor, dt: Tensor) -> Tensor:
        """Exact int_0^dt lambda_k(s) ds: h [..., d], dt [...] -> [..., K]."""
        mu, start, beta = self.levels(h)
        dt = dt.to(h.dtype).unsqueeze(-1)
        return mu * dt - (start - mu) * torch.expm1(-beta * dt) / beta


class TPPModel(nn.Module):
    """A neural TPP: an encoder giving causal states h_j, the shared heads, a learned start state.

    ``h_start`` is the state before the first event, used when the first event is scored
    (``first_event="start-state"`` in the likelihood).
    """

    def __init__(self, encoder: nn.Module, heads: Heads) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = heads
        self.num_types = heads.num_types
        self.h_start = nn.Parameter(torch.zeros(heads.d_model))

    def hidden(self, batch: Any) -> Tensor:
        """States after each event, [B, L, d]; ``batch`` has times, types and mask."""
        return self.encoder(batch.times, batch.types, batch.mask)

    def intensity(self, h: Tensor, dt: Tensor) -> Tensor:
        """Per-type intensity at t_j + dt from state h: h [..., d], dt [..., S] -> [..., S, K]."""
        return self.heads.intensity(h, dt)

    @property
    def exact_compensator(self) -> bool:
        """Whether the heads integrate the intensity in closed form (`compensator`)."""
        return self.heads.exact_compensator

    def compensator(self, h: Tensor, dt: Tensor) -> Tensor:
        """Exact int_0^dt lambda_k: h [..., d], dt [...] -> [..., K] (if exact_compensator)."""
        return self.heads.compensator(h, dt)

    def type_logits(self, h: Tensor) -> Tensor:
        """Type-head logits, [..., d] -> [..., K]."""
        return self.heads.type_logits(h)

    def gap(self, h: Tensor) -> Tensor:
        """Gap-head prediction of the time to the next event, [..., d] -> [...]."""
        return self.heads.gap(h)
