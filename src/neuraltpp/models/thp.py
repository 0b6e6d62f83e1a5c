"""Transformer Hawkes Process encoder (Zuo et al., ICML 2020).

Type embedding, plus an absolute sinusoidal encoding of the timestamp added before every
attention layer (as in the THP code), through a causal self-attention stack. Layers are
pre-norm (LayerNorm before attention / MLP, final LayerNorm) for stable training; the original
code is post-norm. The time encoding uses the absolute timestamp, so THP is not shift-invariant.
The attention `Block` here is reused by RoTHP and MHP-E with rotary angles.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuraltpp.models.config import ModelConfig


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate interleaved pairs (x_{2i}, x_{2i+1}) of x [B, H, L, dh]; cos, sin: [B, 1, L, dh/2]."""
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


class Block(nn.Module):
    """Pre-norm causal self-attention + MLP block; optional rotary angles on queries and keys."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.dropout = dropout
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x [B, L, d] -> [B, L, d]; position j attends to positions 0..j only."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (t.view(b, n, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v))
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        y = y.transpose(1, 2).reshape(b, n, d)
        x = x + F.dropout(self.proj(y), p, self.training)
        return x + self.mlp(self.ln2(x))


def temporal_encoding(times: Tensor, d_model: int) -> Tensor:
    """THP's sinusoidal encoding of absolute times [B, L] -> float64 [B, L, d].

    Entry 2i is sin(t w_i), entry 2i+1 is cos(t w_i), with w_i = 10000^(-2i/d).
    """
    i = torch.arange(d_model // 2, dtype=torch.float64, device=times.device)
    angle = times.to(torch.float64).unsqueeze(-1) * 10000.0 ** (-2.0 * i / d_model)
    enc = torch.zeros(*times.shape, d_model, dtype=torch.float64, device=times.device)
    enc[..., 0 : 2 * len(i) : 2] = torch.sin(angle)
    enc[..., 1 : 2 * len(i) : 2] = torch.cos(angle)
    return enc


class THPEncoder(nn.Module):
    """THP: type embedding + absolute sinusoidal time encoding before each attention layer."""

    def __init__(self, num_types: int, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.d_model = c.d_model
        self.type_emb = nn.Embedding(num_types, c.d_model)
        self.blocks = nn.ModuleList(
            Block(c.d_model, c.n_heads, c.d_ff, c.dropout) for _ in range(c.n_layers)
        )
        self.ln_f = nn.LayerNorm(c.d_model)

    def forward(self, times: Tensor, types: Tensor, mask: Tensor) -> Tensor:
        """(times [B, L] float64 absolute, types [B, L], mask [B, L]) -> h [B, L, d]."""
        x = self.type_emb(types)
        tenc = temporal_encoding(times, self.d_model).to(x.dtype) * mask.unsqueeze(-1)
        for block in self.blocks:
            x = block(x + tenc)
        return self.ln_f(x)
