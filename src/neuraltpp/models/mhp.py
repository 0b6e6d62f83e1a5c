"""Mamba Hawkes Process encoder (MHP, arXiv 2407.05302).

A stack of Mamba blocks over type embeddings in which the discretization step depends on the
inter-event time: delta_{i,c} = softplus(dt_proj(x_i))_c * f(t_i - t_{i-1}). The input-dependent
part (Mamba's per-channel step) sets the rate, the time gap sets how far the continuous-time state
moves between events, so long silences decay the state more. Gaps are float64 differences, which
makes the encoder shift-invariant. Choices of f (`GapStep`):

- "authors": clamp(softplus(gap), 1e-3, 1) as in the published code; it saturates at 1 for
  gaps above log(e - 1) ~ 0.54 and is >= 0.69 for every gap >= 0, so it hardly sees time.
- "affine-softplus" (default): softplus(a * gap + b) with learnable a = exp(log_a) > 0 and b
  (init a = 1, b = 0). Monotone, never saturates (linear for long gaps), learns the time unit,
  and stays > 0 at gap 0, so simultaneous events and the first event still write to the state.
- "raw": the gap itself, clamped at 1e-6: the exact zero-order-hold discretization of a
  continuous-time SSM, but under Mamba's write (``scan_write="zoh"``) events at the same time
  (and the first event) barely write; the impulse write (`MambaBlock`) does not scale the write
  by the gap, and with it and ``d_conv=1`` the scan can hold the Hawkes excitation
  (``mhp-exact`` in `neuraltpp.models`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuraltpp.models.config import DT_FUNCTIONS, ModelConfig
from neuraltpp.models.heads import inter_event_gaps
from neuraltpp.models.mamba import MambaBlock


class GapStep(nn.Module):
    """f(gap): the factor the inter-event time contributes to Mamba's discretization step."""

    def __init__(self, kind: str = "affine-softplus") -> None:
        super().__init__()
        if kind not in DT_FUNCTIONS:
            raise ValueError(f"dt_fn must be one of {DT_FUNCTIONS}, got {kind!r}")
        self.kind = kind
        if kind == "affine-softplus":
            self.log_a = nn.Parameter(torch.zeros(()))
            self.b = nn.Parameter(torch.zeros(()))

    def forward(self, gaps: Tensor) -> Tensor:
        """Float64 gaps [B, L] -> positive step factors [B, L] (float64)."""
        if self.kind == "authors":
            return F.softplus(gaps).clamp(1e-3, 1.0)
        if self.kind == "affine-softplus":
            return F.softplus(self.log_a.exp() * gaps + self.b)
        return gaps.clamp_min(1e-6)


class MHPEncoder(nn.Module):
    """MHP: type embedding through Mamba blocks whose step is scaled by f(inter-event time)."""

    def __init__(self, num_types: int, config: ModelConfig) -> None:
        """``config.n_layers`` Mamba blocks of width ``config.d_model``."""
        super().__init__()
        c = config
        self.type_emb = nn.Embedding(num_types, c.d_model)
        self.step = GapStep(c.dt_fn)
        self.layers = nn.ModuleList(
            MambaBlock(
                c.d_model,
                d_state=c.d_state,
                d_conv=c.d_conv,
                expand=c.expand,
                chunk_size=c.chunk_size,
                write=c.scan_write,
            )
            for _ in range(c.n_layers)
        )
        self.norm_f = nn.RMSNorm(c.d_model)

    def forward(self, times: Tensor, types: Tensor, mask: Tensor) -> Tensor:
        """(times [B, L] float64 absolute, types [B, L], mask [B, L]) -> h [B, L, d]."""
        x = self.type_emb(types)
        scale = self.step(inter_event_gaps(times, mask)).to(x.dtype)
        for layer in self.layers:
            x = layer(x, mask, scale)
        return self.norm_f(x)
