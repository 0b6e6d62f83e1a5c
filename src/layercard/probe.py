"""Measured performance per layer: short single-layer LoRA runs and their rank agreement."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from scipy.stats import spearmanr
from torch import nn
from tqdm import tqdm

from layercard.config import LoraSettings
from layercard.training import Batch, dev_loss, lora_adapter, lora_config, train_lora


def probe_gains(
    model: nn.Module,
    train_batches: Sequence[Batch],
    dev_batches: Sequence[Batch],
    layers: Sequence[int],
    *,
    steps: int,
    settings: LoraSettings,
    seed: int,
    progress: bool = True,
    base_dev_loss: float | None = None,
) -> dict[int, float]:
    """Per layer: dev-loss drop (base − adapted) after `steps` of LoRA on that layer alone.

    Every probe starts from the same frozen base model with the same seed and LoRA settings.
    `base_dev_loss`: the frozen model's dev loss if the caller has it (computed otherwise).
    """
    base = dev_loss(model, dev_batches) if base_dev_loss is None else base_dev_loss
    gains: dict[int, float] = {}
    for layer in tqdm(layers, desc="probe layers", disable=not progress):
        config = lora_config(model, [layer], settings)
        result = train_lora(model, train_batches, config, steps=steps, lr=settings.lr, seed=seed)
        with lora_adapter(model, config, result.adapter_state) as adapted:
            gains[layer] = base - dev_loss(adapted, dev_batches)
    return gains


def spearman(predicted: Mapping[int, float], probed: Mapping[int, float]) -> float:
    """Spearman rank correlation over the layers in both maps (nan if either side is constant)."""
    keys = sorted(set(predicted) & set(probed))
    if len(keys) < 2:
        raise ValueError(f"spearman: need at least 2 common layers, got {keys}")
    x = [predicted[k] for k in keys]
    y = [probed[k] for k in keys]
    if len(set(x)) == 1 or len(set(y)) == 1:
        return math.nan
    return float(spearmanr(x, y).statistic)
