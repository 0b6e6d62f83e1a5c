"""Neural TPP models: THP, RoTHP, MHP, MHP-E encoders with shared heads, built by name.

``build_model(name, num_types, config)`` returns a `TPPModel` (encoder + heads + start state);
``config.decoder`` picks the intensity decoder (`HEADS`) for any encoder. ``mhp-exact`` is MHP
with the three `ModelConfig` fields under which its scan can hold the exponential-Hawkes
excitation exactly (`VARIANTS`; see docs/neuraltpp.md).
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

__all__ = ["MODEL_NAMES", "ModelConfig", "TPPModel", "build_model", "resolve_config"]

ENCODERS = {"thp": THPEncoder, "rothp": RoTHPEncoder, "mhp": MHPEncoder, "mhpe": MHPEEncoder}
# name -> (encoder, the ModelConfig fields it fixes): events written as impulses, decay by the
# gap itself, no time-blind convolution across neighbouring events
VARIANTS = {"mhp-exact": ("mhp", {"scan_write": "impulse", "dt_fn": "raw", "d_conv": 1})}
MODEL_NAMES = (*ENCODERS, *VARIANTS)
HEADS = {"thp": THPHeads, "decay": DecayHeads}  # keys: models.config.DECODERS


def _explicit(config: ModelConfig | dict[str, Any] | None) -> dict[str, Any]:
    """The fields a caller set: a dict's keys, or a ModelConfig's fields that differ from the
    defaults."""
    if config is None:
        return {}
    if isinstance(config, dict):
        unknown = set(config) - {f.name for f in dataclasses.fields(ModelConfig)}
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return dict(config)
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(ModelConfig)
            if getattr(config, f.name) != f.default}


def build_model(
    name: str, num_types: int, config: ModelConfig | dict[str, Any] | None = None
) -> TPPModel:
    """Model ``name`` (one of MODEL_NAMES) for ``num_types`` event types; config may be a dict
    (`resolve_config` says how a variant's fields combine with it)."""
    if num_types < 1:
        raise ValueError(f"num_types must be >= 1, got {num_types}")
    config = resolve_config(name, config)
    encoder = ENCODERS[VARIANTS.get(name, (name,))[0]](num_types, config)  # before the heads
    return TPPModel(encoder, HEADS[config.decoder](config.d_model, num_types))


def resolve_config(name: str, config: ModelConfig | dict[str, Any] | None = None) -> ModelConfig:
    """The validated config model ``name`` is built from: ``config`` with a variant's fixed
    fields, which the caller may leave unset or set to those values, not to others."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of {MODEL_NAMES}")
    given = _explicit(config)
    encoder_name, fixed = VARIANTS.get(name, (name, {}))
    clash = {k: given[k] for k, v in fixed.items() if k in given and given[k] != v}
    if clash:
        raise ValueError(f"model {name!r} fixes {fixed}; got {clash} (use {encoder_name!r})")
    return ModelConfig(**(given | fixed))
