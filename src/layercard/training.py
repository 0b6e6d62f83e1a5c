"""peft LoRA on a chosen set of layers: config, short training runs, and dev loss."""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from peft import (
    LoraConfig,
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)
from torch import Tensor, nn
from tqdm import tqdm
from transformers.pytorch_utils import Conv1D

from layercard.config import ALL_LINEAR, LoraSettings
from layercard.data import n_target_tokens
from layercard.models import adaptable_sites, find_blocks, site_module
from layercard.sites import Site

Batch = Mapping[str, Tensor]


class LoraSettingsError(ValueError):
    """A LoRA setting (layer index or target module name) does not fit the model."""


@dataclass
class TrainResult:
    """Outcome of one LoRA run: per-step train losses and the trained adapter weights (CPU)."""

    config: LoraConfig
    losses: list[float]
    adapter_state: dict[str, Tensor]
    trainable_params: int
    seconds: float  # wall clock of the whole run (not reproducible, unlike the rest)


def _block_module_names(model: nn.Module) -> list[str]:
    names: list[str] = []
    for site in adaptable_sites(model):
        if site.module not in names:
            names.append(site.module)
    return names


def target_sites(model: nn.Module, layers: Sequence[int], settings: LoraSettings) -> list[Site]:
    """The sites a LoRA run with these settings adapts on these layers, in block order."""
    sites = adaptable_sites(model)
    n_layers = len(find_blocks(model)[1])
    bad_layers = sorted({i for i in layers if not 0 <= i < n_layers})
    if bad_layers or not layers:
        raise LoraSettingsError(
            f"layers {list(layers)}: need at least one layer index in [0, {n_layers - 1}]"
        )
    known = _block_module_names(model)
    if settings.target_modules == ALL_LINEAR:
        wanted = set(known)
    else:
        wanted = set(settings.target_modules)
        unknown = sorted(wanted - set(known))
        if unknown or not wanted:
            raise LoraSettingsError(
                f"target_modules {list(settings.target_modules)}: unknown {unknown}; "
                f"linear modules in a block are {known}"
            )
    chosen = set(layers)
    return [s for s in sites if s.layer in chosen and s.module in wanted]


def peft_lora_config(
    blocks_path: str,
    modules: Sequence[str],
    layers: Sequence[int],
    settings: LoraSettings,
    *,
    fan_in_fan_out: bool = False,
) -> LoraConfig:
    """A peft LoraConfig adapting `modules` (names relative to a block) on exactly `layers`.

    Uses layers_to_transform + layers_pattern (last component of the block path, e.g. "layers" for
    "model.layers", "h" for "transformer.h"); fan_in_fan_out is for GPT-2 style Conv1D (peft
    also sets it itself, with a warning, when it finds Conv1D targets).
    """
    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(modules),
        layers_to_transform=sorted(set(layers)),
        layers_pattern=blocks_path.split(".")[-1],
        fan_in_fan_out=fan_in_fan_out,
        bias="none",
        task_type="CAUSAL_LM",
    )


def lora_config(model: nn.Module, layers: Sequence[int], settings: LoraSettings) -> LoraConfig:
    """A peft LoraConfig adapting the settings' target modules of `model` on exactly `layers`;
    loads as is (fan_in_fan_out set when the targets are GPT-2 style Conv1D)."""
    path, blocks = find_blocks(model)
    sites = target_sites(model, layers, settings)
    names = [n for n in _block_module_names(model) if any(s.module == n for s in sites)]
    conv1d = [isinstance(site_module(model, s, blocks), Conv1D) for s in sites]
    return peft_lora_config(path, names, layers, settings, fan_in_fan_out=all(conv1d))


@contextmanager
def lora_adapter(
    model: nn.Module, config: LoraConfig, state: Mapping[str, Tensor] | None = None
) -> Iterator[PeftModel]:
    """Inject a LoRA adapter (fresh, or with `state` loaded) in place; remove it again on exit.

    The base model's weights, flags and structure are exactly as before once the block exits.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        peft_model = get_peft_model(model, copy.deepcopy(config))
    try:
        if state is not None:
            unexpected = set_peft_model_state_dict(peft_model, dict(state)).unexpected_keys
            if unexpected:
                raise ValueError(f"adapter state does not fit the LoRA config: {unexpected[:3]}")
        yield peft_model
    finally:
        peft_model.unload()


def _to_device(batch: Batch, device: torch.device) -> dict[str, Tensor]:
    return {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "labels")}


def causal_lm_loss(model: nn.Module, batch: Batch) -> Tensor:
    """transformers' causal-LM loss of a batch: mean over its completion (label != -100) tokens."""
    device = next(model.parameters()).device
    return model(**_to_device(batch, device), use_cache=False).loss


@torch.no_grad()
def dev_loss(model: nn.Module, batches: Sequence[Batch]) -> float:
    """Mean loss over every completion token of the whole set (not a mean of batch means)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for batch in batches:
            n = n_target_tokens(batch)
            if n:
                total += float(causal_lm_loss(model, batch)) * n
                count += n
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("dev_loss: the batches contain no completion tokens (all labels -100)")
    return total / count


def _rng_devices(model: nn.Module) -> list[torch.device]:
    device = next(model.parameters()).device
    return [device] if device.type == "cuda" else []


@contextmanager
def lora_training(
    model: nn.Module, config: LoraConfig, *, lr: float, seed: int
) -> Iterator[tuple[PeftModel, torch.optim.Optimizer]]:
    """A seeded fresh adapter in train mode with AdamW over its parameters only; undone on exit.

    The global RNG state, the model's train/eval mode and its weights are restored afterwards.
    """
    was_training = model.training
    with torch.random.fork_rng(devices=_rng_devices(model)):
        torch.manual_seed(seed)
        with lora_adapter(model, config) as peft_model:
            params = [p for p in peft_model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
            peft_model.train()
            try:
                yield peft_model, optimizer
            finally:
                model.train(was_training)


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch) -> float:
    """One training step (forward, causal-LM loss, backward, update, zero grads); the loss."""
    loss = causal_lm_loss(model, batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def train_lora(
    model: nn.Module,
    batches: Sequence[Batch],
    config: LoraConfig,
    *,
    steps: int,
    lr: float,
    seed: int,
    progress: bool = False,
) -> TrainResult:
    """Short LoRA run: AdamW on the adapter only, one batch per step (cycling), causal-LM loss.

    The model runs in train mode (as fine-tuning does) and is left unchanged and adapter-free.
    """
    if not batches:
        raise ValueError("train_lora: no training batches")
    start = time.perf_counter()
    with lora_training(model, config, lr=lr, seed=seed) as (peft_model, optimizer):
        losses = [
            optimizer_step(peft_model, optimizer, batches[step % len(batches)])
            for step in tqdm(range(steps), desc="lora", disable=not progress, leave=False)
        ]
        state = {
            k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(peft_model).items()
        }
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    return TrainResult(
        config=config,
        losses=losses,
        adapter_state=state,
        trainable_params=trainable,
        seconds=time.perf_counter() - start,
    )
