"""Neural TPP models: THP, RoTHP, MHP, MHP-E encoders with shared heads, built by name.

``build_model(name, num_types, config)`` returns a `TPPModel` (encoder + heads + start state).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import nn

from neuraltpp.models.heads import Heads, TPPModel
from neuraltpp.models.mhp import DT_FUNCTIONS, MHPEncoder
from neuraltpp.models.mhpe import MHPEEncoder
from neuraltpp.models.rothp import RoTHPEncoder
from neuraltpp.models.thp import THPEncoder

__all__ = ["MODEL_NAMES", "ModelConfig", "TPPModel", "build_model"]

MODEL_NAMES = ("thp", "rothp", "mhp", "mhpe")


@dataclass
class ModelConfig:
    """Sizes and options of every model; fields a model does not use are ignored by it."""

    d_model: int = 64
    n_layers: int = 2  # attention layers (thp, rothp, mhpe) or Mamba layers (mhp)
    n_heads: int = 4
    d_ff: int = 128
    dropout: float = 0.1
    d_state: int = 16  # Mamba state size N
    d_conv: int = 4
    expand: int = 2
    chunk_size: int = 16  # selective-scan chunk (memory ~ chunk^2)
    dt_fn: str = "affine-softplus"  # MHP step function f(gap): see neuraltpp.models.mhp
    n_mamba_layers: int = 1  # mhpe only: Mamba layers before its n_layers attention layers

    def __post_init__(self) -> None:
        if self.dt_fn not in DT_FUNCTIONS:
            raise ValueError(f"ModelConfig.dt_fn must be one of {DT_FUNCTIONS}, got {self.dt_fn!r}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"ModelConfig: d_model={self.d_model} must split into n_heads={self.n_heads} "
                "heads of even width"
            )


def _encoder(name: str, num_types: int, c: ModelConfig) -> nn.Module:
    if name == "thp":
        return THPEncoder(num_types, c.d_model, c.n_layers, c.n_heads, c.d_ff, c.dropout)
    if name == "rothp":
        return RoTHPEncoder(num_types, c.d_model, c.n_layers, c.n_heads, c.d_ff, c.dropout)
    if name == "mhp":
        return MHPEncoder(
            num_types, c.d_model, c.n_layers, c.d_state, c.d_conv, c.expand, c.chunk_size, c.dt_fn
        )
    return MHPEEncoder(
        num_types, c.d_model, c.n_mamba_layers, c.n_layers, c.n_heads, c.d_ff, c.dropout,
        c.d_state, c.d_conv, c.expand, c.chunk_size, c.dt_fn,
    )  # fmt: skip


def build_model(
    name: str, num_types: int, config: ModelConfig | dict[str, Any] | None = None
) -> TPPModel:
    """Model ``name`` (one of MODEL_NAMES) for ``num_types`` event types; config may be a dict."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of {MODEL_NAMES}")
    if num_types < 1:
        raise ValueError(f"num_types must be >= 1, got {num_types}")
    if config is None:
        config = ModelConfig()
    elif isinstance(config, dict):
        unknown = set(config) - {f.name for f in dataclasses.fields(ModelConfig)}
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        config = ModelConfig(**config)
    return TPPModel(_encoder(name, num_types, config), Heads(config.d_model, num_types))
