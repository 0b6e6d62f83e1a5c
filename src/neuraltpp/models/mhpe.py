"""MHP-E: the authors' hybrid of Mamba layers feeding Transformer layers (arXiv 2407.05302).

The Mamba part is an `MHPEncoder` (time enters through the step f(gap)); the attention part
uses RoTHP's rotary continuous-time angles on queries and keys (no additive time encoding), so
the whole encoder depends on times only through differences.
"""

from __future__ import annotations

import dataclasses

from torch import Tensor, nn

from neuraltpp.models.config import ModelConfig
from neuraltpp.models.mhp import MHPEncoder
from neuraltpp.models.rothp import rotary_angles
from neuraltpp.models.thp import Block


class MHPEEncoder(nn.Module):
    """``n_mamba_layers`` MHP Mamba blocks, then ``n_layers`` causal attention blocks with rotary
    time."""

    def __init__(self, num_types: int, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.d_head = c.d_model // c.n_heads
        # the Mamba part is an MHP encoder whose layer count is this model's n_mamba_layers
        self.mamba = MHPEncoder(num_types, dataclasses.replace(c, n_layers=c.n_mamba_layers))
        self.blocks = nn.ModuleList(
            Block(c.d_model, c.n_heads, c.d_ff, c.dropout) for _ in range(c.n_layers)
        )
        self.ln_f = nn.LayerNorm(c.d_model)

    def forward(self, times: Tensor, types: Tensor, mask: Tensor) -> Tensor:
        """(times [B, L] float64 absolute, types [B, L], mask [B, L]) -> h [B, L, d]."""
        x = self.mamba(times, types, mask)
        rotary = rotary_angles(times, mask, self.d_head, x.dtype)
        for block in self.blocks:
            x = block(x, rotary)
        return self.ln_f(x)
