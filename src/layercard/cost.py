"""Measuring the cost of LoRA on layer sets: training step time and memory, serving latency.

The measurements feed the cost model of `layercard.costmodel` (fitted and checked there).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from layercard.config import CostSettings, LoraSettings
from layercard.costmodel import (
    CostModel,
    MemoryMeasurements,
    TimingMeasurements,
    check_layer_sets,
    depth_layer_sets,
    fit_cost,
    relative_errors,
)
from layercard.models import find_blocks
from layercard.training import (
    Batch,
    lora_adapter,
    lora_config,
    lora_training,
    optimizer_step,
    target_sites,
)

# Bytes kept per adapter parameter during training: weight, gradient, AdamW exp_avg, exp_avg_sq.
_ADAM_COPIES = 4


def lora_param_counts(model: nn.Module, settings: LoraSettings) -> dict[int, int]:
    """LoRA parameters per layer, analytic: rank·(d_in + d_out) summed over the targeted modules."""
    n_layers = len(find_blocks(model)[1])
    counts = dict.fromkeys(range(n_layers), 0)
    for site in target_sites(model, range(n_layers), settings):
        counts[site.layer] += settings.rank * (site.d_in + site.d_out)
    return counts


def step_clock(device: torch.device) -> Callable[[], float]:
    """The clock of step and serving costs: wall time on an accelerator (synchronised), the
    process's CPU time on CPU, which other processes taking turns on the cores do not inflate
    (its threads' spin-waits do: measure on a quiet machine or with one thread)."""
    return time.perf_counter if device.type == "cuda" else time.process_time


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def _saved_tensor_storages(model: nn.Module) -> Iterator[dict[int, int]]:
    """Collect {storage pointer: bytes} of every non-parameter tensor autograd saves meanwhile."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield storages


def _train_step_cost(
    model: nn.Module,
    batches: Sequence[Batch],
    layers: Sequence[int],
    settings: LoraSettings,
    cost_settings: CostSettings,
    seed: int,
) -> tuple[float, int]:
    """(fastest timed step in seconds of `step_clock`, memory bytes of the first step) of LoRA
    on `layers`."""
    config = lora_config(model, layers, settings)
    device = next(model.parameters()).device
    with lora_training(model, config, lr=settings.lr, seed=seed) as (peft_model, optimizer):
        adapter_bytes = sum(
            p.numel() * p.element_size() for p in peft_model.parameters() if p.requires_grad
        )
        if device.type == "cuda":
            _sync(device)
            resident = torch.cuda.memory_allocated(device) - adapter_bytes
            torch.cuda.reset_peak_memory_stats(device)
            optimizer_step(peft_model, optimizer, batches[0])
            _sync(device)
            memory = torch.cuda.max_memory_allocated(device) - resident
        else:
            with _saved_tensor_storages(peft_model) as storages:
                optimizer_step(peft_model, optimizer, batches[0])
            memory = sum(storages.values()) + _ADAM_COPIES * adapter_bytes
        for step in range(1, cost_settings.warmup_steps):
            optimizer_step(peft_model, optimizer, batches[step % len(batches)])
        seconds, clock = [], step_clock(device)
        for step in range(cost_settings.timed_steps):
            batch = batches[(max(cost_settings.warmup_steps, 1) + step) % len(batches)]
            _sync(device)
            start = clock()
            optimizer_step(peft_model, optimizer, batch)
            _sync(device)
            seconds.append(clock() - start)
    return min(seconds), int(memory)


@torch.no_grad()
def _decode_seconds_per_token(model: nn.Module, prompt: Tensor, n_tokens: int) -> float:
    """Seconds per greedily generated token after the prompt (batch 1, KV cache)."""
    out = model(input_ids=prompt, use_cache=True)
    _sync(prompt.device)
    clock = step_clock(prompt.device)
    start = clock()
    for _ in range(n_tokens):
        token = out.logits[:, -1:].argmax(-1)
        out = model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
    _sync(prompt.device)
    return (clock() - start) / n_tokens


def _serving_latency(
    model: nn.Module, batch: Batch, settings: LoraSettings, cost_settings: CostSettings
) -> tuple[list[int], list[float]]:
    """Decode latency per token with unmerged adapters on k = 0, about half, and all layers."""
    n_layers = len(find_blocks(model)[1])
    device = next(model.parameters()).device
    prompt = batch["input_ids"][:1, : cost_settings.serving_prompt_tokens].to(device)
    was_training = model.training
    model.eval()
    _decode_seconds_per_token(model, prompt, 2)  # warm-up
    ks = sorted({0, (n_layers + 1) // 2, n_layers})
    latencies = []
    try:
        for k in ks:
            spread = [layer for (layer,) in depth_layer_sets(n_layers, k)]
            context = lora_adapter(model, lora_config(model, spread, settings)) if k else None
            with context or nullcontext(model) as served:
                served.eval()
                latencies.append(
                    _decode_seconds_per_token(served, prompt, cost_settings.serving_tokens)
                )
    finally:
        model.train(was_training)
    return ks, latencies


def measure_cost(
    model: nn.Module,
    batches: Sequence[Batch],
    settings: LoraSettings,
    *,
    cost_settings: CostSettings | None = None,
    seed: int = 0,
    progress: bool = True,
) -> CostModel:
    """Measure LoRA training cost on a few layer sets, fit the cost model, check it, time serving.

    Steps use `batches` (cycling) so shapes match the real run; the model is left unchanged.
    """
    if not batches:
        raise ValueError("measure_cost: no batches")
    cost_settings = cost_settings or CostSettings()
    n_layers = len(find_blocks(model)[1])
    all_layers = tuple(range(n_layers))
    fit_sets = [*depth_layer_sets(n_layers, cost_settings.depths), all_layers]
    check_sets = check_layer_sets(n_layers)
    runs = fit_sets + check_sets
    measured = [
        _train_step_cost(model, batches, s, settings, cost_settings, seed)
        for s in tqdm(runs, desc="cost", disable=not progress, leave=False)
    ]
    seconds = [m[0] for m in measured]
    memory = [m[1] for m in measured]
    n_fit = len(fit_sets)
    time_fit = fit_cost(fit_sets, seconds[:n_fit], n_layers)
    memory_fit = fit_cost(fit_sets, memory[:n_fit], n_layers)
    ks, latencies = _serving_latency(model, batches[0], settings, cost_settings)
    per_layer, base = np.polyfit(ks, latencies, 1)
    device = next(model.parameters()).device
    return CostModel(
        n_layers=n_layers,
        params_per_layer=lora_param_counts(model, settings),
        fit_sets=fit_sets,
        check_sets=check_sets,
        memory=MemoryMeasurements(
            method="cuda-peak" if device.type == "cuda" else "saved-tensors",
            fit_bytes=memory[:n_fit],
            check_bytes=memory[n_fit:],
            all_layers_bytes=memory[n_fit - 1],
            fit=memory_fit,
            check_errors=relative_errors(memory_fit, check_sets, memory[n_fit:], n_layers),
        ),
        timing=TimingMeasurements(
            device=str(device),
            threads=torch.get_num_threads(),
            fit_seconds=seconds[:n_fit],
            check_seconds=seconds[n_fit:],
            all_layers_seconds=seconds[n_fit - 1],
            fit=time_fit,
            check_errors=relative_errors(time_fit, check_sets, seconds[n_fit:], n_layers),
            serving_layers=ks,
            serving_seconds_per_token=latencies,
            serving_base_seconds=float(base),
            serving_seconds_per_layer=float(per_layer),
        ),
    )
