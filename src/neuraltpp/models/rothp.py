"""Rotary Temporal Hawkes Process encoder (RoTHP, arXiv 2405.06985).

No additive time encoding: in every attention layer the per-head queries and keys are rotated
by angles t * theta_j, theta_j = 10000^(-2(j-1)/d_head), on interleaved pairs, so a score
q_i . k_l depends on the times only through t_i - t_l. Angles use times relative to each
sequence's first event, computed in float64, which makes the encoder shift-invariant to
float64 rounding (|error| ~ 1e-10 for shifts of 1e6) instead of float32 rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neuraltpp.models.config import ModelConfig
from neuraltpp.models.heads import relative_times
from neuraltpp.models.thp import Block


def rotary_angles(
    times: Tensor, mask: Tensor, d_head: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """cos and sin [B, 1, L, d_head/2] of the rotary angles (t - t_first) * theta_j."""
    if d_head % 2:
        raise ValueError(f"rotary time encoding needs an even head width, got d_head={d_head}")
    j = torch.arange(d_head // 2, dtype=torch.float64, device=times.device)
    theta = 10000.0 ** (-2.0 * j / d_head)
    angle = relative_times(times, mask).unsqueeze(-1) * theta
    return torch.cos(angle).to(dtype).unsqueeze(1), torch.sin(angle).to(dtype).unsqueeze(1)


class RoTHPEncoder(nn.Module):
    """RoTHP: type embedding through causal attention layers with rotary continuous-time angles."""

    def __init__(self, num_types: int, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.d_head = c.d_model // c.n_heads
        self.type_emb = nn.Embedding(num_types, c.d_model)
        self.blocks = nn.ModuleList(
            Block(c.d_model, c.n_heads, c.d_ff, c.dropout) for _ in range(c.n_layers)
        )
        self.ln_f = nn.LayerNorm(c.d_model)

    def forward(self, times: Tensor, types: Tensor, mask: Tensor) -> Tensor:
        """(times [B, L] float64 absolute, types [B, L], mask [B, L]) -> h [B, L, d]."""
        x = self.type_emb(types)
        rotary = rotary_angles(times, mask, self.d_head, x.dtype)
        for block in self.blocks:
            x = block(x, rotary)
        return self.ln_f(x)
