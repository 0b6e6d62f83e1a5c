"""`ModelConfig`: the sizes and options every encoder is built from."""

from __future__ import annotations

from dataclasses import dataclass

DT_FUNCTIONS = ("authors", "affine-softplus", "raw")  # MHP step functions: see models.mhp
DECODERS = ("thp", "decay")  # intensity decoders: see models.heads
SCAN_WRITES = ("zoh", "impulse")  # Mamba input terms: see models.mamba.MambaBlock


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
    scan_write: str = "zoh"  # Mamba input term, delta-scaled or impulse: see models.mamba
    n_mamba_layers: int = 1  # mhpe only: Mamba layers before its n_layers attention layers
    decoder: str = "thp"  # intensity decoder of every encoder: see neuraltpp.models.heads

    def __post_init__(self) -> None:
        if self.dt_fn not in DT_FUNCTIONS:
            raise ValueError(f"ModelConfig.dt_fn must be one of {DT_FUNCTIONS}, got {self.dt_fn!r}")
        if self.scan_write not in SCAN_WRITES:
            raise ValueError(
                f"ModelConfig.scan_write must be one of {SCAN_WRITES}, got {self.scan_write!r}"
            )
        if self.decoder not in DECODERS:
            raise ValueError(f"ModelConfig.decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"ModelConfig: d_model={self.d_model} must split into n_heads={self.n_heads} "
                "heads of even width"
            )
