"""layercard: per-layer diagnostics that decide which layers of a causal LM to LoRA-tune."""

__version__ = "0.1.0"
