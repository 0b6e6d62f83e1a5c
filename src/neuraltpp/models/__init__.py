"""Neural TPP models: THP, RoTHP, MHP, MHP-E encoders with shared heads, built by name.

``build_model(name, num_types, config)`` returns a `TPPModel` (encoder + heads + start state);
``config.decoder`` picks the intensity decoder (`HEADS`) for any encoder.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from neuraltpp.models.config import ModelConfig
from neuraltpp.models.heads import DecayHeads, THPHeads, TPPModel
from neuraltpp.models.mhp import MHPEncoder
from neuraltpp.models.mhpe import MHPEEncoder
from neuraltpp.models.rothp import RoTHPEncoder
from neuraltpp.models.thp import THPEncoder

__all__ = ["MODEL_NAMES", "ModelConfig", "TPPModel", "build_model"]

ENCODERS = {"thp": THPEncoder, "rothp": RoTHPEncoder, "mhp": MHPEncoder, "mhpe": MHPEEncoder}
MODEL_NAMES = tuple(ENCODERS)
HEADS = {"thp": THPHeads, "decay": DecayHeads}  # keys: models.config.DECODERS


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
    encoder = ENCODERS[name](num_types, config)  # before the heads: the seeded init order
    return TPPModel(encoder, HEADS[config.decoder](config.d_model, num_types))
