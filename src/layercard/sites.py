"""Where an adapter can go (`Site`) and what the card measured there (`SiteDiagnostics`).

Plain dataclasses, no torch: measurement produces them and the card schema stores them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Site:
    """One adaptable linear module: block index plus its name relative to the block."""

    layer: int
    module: str
    d_in: int
    d_out: int


@dataclass(frozen=True)
class SiteDiagnostics:
    """Per-site Layer Card quantities (see `layercard.statistics.site_diagnostics`)."""

    resnorm2: float
    resnorm2_rank: float
    rel_resnorm: float
    grad_norm: float
    act_energy: float
    condition_number: float
    effective_rank: float
    noise_amplification: float
    ridge: float
    rank: int
    residual_energy: float
