"""Heads shared by every neural TPP, the `TPPModel` wrapper, and the encoders' time features.

On the hidden state h_j after event j (which has seen events 0..j only) the heads give, for
t in (t_j, t_{j+1}]:

    lambda_k(t) = softplus_{beta_k}(alpha_k (t - t_j) + w_k . h_j + b_k),
    softplus_beta(x) = log(1 + exp(beta x)) / beta            (beta_k > 0, as in the THP code)

plus a type head (linear -> K logits) and a gap head (linear -> softplus -> positive gap).
"""

from __future__ import annotations

from typing import Any

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


class Heads(nn.Module):
    """Intensity, type and gap heads on a hidden state of width ``d_model`` for K event types."""

    def __init__(self, d_model: int, num_types: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.num_types = num_types
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

    def type_logits(self, h: Tensor) -> Tensor:
        """Logits of the next event's type: [..., d] -> [..., K]."""
        return self.type_proj(h)

    def gap(self, h: Tensor) -> Tensor:
        """Directly predicted (positive) time to the next event: [..., d] -> [...]."""
        return F.softplus(self.gap_proj(h)).squeeze(-1)


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

    def type_logits(self, h: Tensor) -> Tensor:
        """Type-head logits, [..., d] -> [..., K]."""
        return self.heads.type_logits(h)

    def gap(self, h: Tensor) -> Tensor:
        """Gap-head prediction of the time to the next event, [..., d] -> [...]."""
        return self.heads.gap(h)
