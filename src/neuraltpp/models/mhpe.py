"""MHP-E: the authors' hybrid of Mamba layers feeding Transformer layers (arXiv 2407.05302).

The Mamba part is an `MHPEncoder` (time enters through the step f(gap)); the attention part
uses RoTHP's rotary continuous-time angles on queries and keys (no additive time encoding), so
the whole encoder depends on times only through differences.
"""

from __future__ import annotations

from torch import Tensor, nn

from neuraltpp.models.mhp import MHPEncoder
from neuraltpp.models.rothp import rotary_angles
from neuraltpp.models.thp import Block


class MHPEEncoder(nn.Module):
    """``n_mamba`` MHP Mamba blocks, then ``n_attn`` causal attention blocks with rotary time."""

    def __init__(
        self,
        num_types: int,
        d_model: int,
        n_mamba: int,
        n_attn: int,
        n_heads: int,
        d_ff: int,
        dropout: float,
        d_state: int,
        d_conv: int,
        expand: int,
        chunk_size: int,
        dt_fn: str,
    ) -> None:
        super().__init__()
        self.d_head = d_model // n_heads
        self.mamba = MHPEncoder(
            num_types, d_model, n_mamba, d_state, d_conv, expand, chunk_size, dt_fn
        )
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_ff, dropout) for _ in range(n_attn))
        self.ln_f = nn.LayerNorm(d_model)

    def forward(self, times: Tensor, types: Tensor, mask: Tensor) -> Tensor:
        """(times [B, L] float64 absolute, types [B, L], mask [B, L]) -> h [B, L, d]."""
        x = self.mamba(times, types, mask)
        rotary = rotary_angles(times, mask, self.d_head, x.dtype)
        for block in self.blocks:
            x = block(x, rotary)
        return self.ln_f(x)
