"""Build a Layer Card: load → measure → cost → probe → Card (and write it with its plots)."""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy
import peft
import torch
import transformers

import layercard
from layercard import data, distributed, memory
from layercard.config import BuildConfig, BuildConfigError
from layercard.cost import lora_param_counts, measure_cost
from layercard.measure import Measurements, measure
from layercard.models import LoadedModel, load_model
from layercard.output import check_out_dir, write_card_dir
from layercard.plots import write_plots
from layercard.probe import probe_gains, spearman
from layercard.schema import (
    SCHEMA,
    BuildSettings,
    Card,
    CostSection,
    Coupling,
    LayerEntry,
    Machine,
    ModelInfo,
    ProbeSection,
    Provenance,
    SiteEntry,
    TaskInfo,
    Timings,
)
from layercard.training import Batch, dev_loss


def library_versions() -> dict[str, str]:
    """Versions of layercard, numpy, peft, python, torch and transformers."""
    return {
        "layercard": layercard.__version__,
        "numpy": numpy.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine_info(device: str = "cpu") -> Machine:
    """Platform, CPU model, cores, torch threads and RAM of this machine."""
    return Machine(
        platform=f"{platform.system()} {platform.machine()}",
        processor=_cpu_name(),
        cpu_count=os.cpu_count() or 1,
        torch_threads=torch.get_num_threads(),
        memory_bytes=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        device=device,
    )


def _layer_entries(
    measurements: Measurements, n_layers: int, params_per_layer: dict[int, int]
) -> list[LayerEntry]:
    entries = []
    for layer in range(n_layers):
        diags = [d for s, d in measurements.stats.items() if s.layer == layer]
        resnorm2 = sum(d.resnorm2 for d in diags)
        energy = sum(d.residual_energy for d in diags)
        entries.append(LayerEntry(
            layer=layer,
            resnorm2=resnorm2,
            resnorm2_rank=sum(d.resnorm2_rank for d in diags),
            rel_resnorm=resnorm2 / energy if energy > 0 else 0.0,
            grad_norm=math.sqrt(sum(d.grad_norm**2 for d in diags)),
            max_condition_number=max(d.condition_number for d in diags),
            max_noise_amplification=max(d.noise_amplification for d in diags),
            predicted_gain=0.5 * resnorm2,
            lora_params=params_per_layer[layer],
        ))
    return entries


def _probe_section(
    config: BuildConfig,
    loaded: LoadedModel,
    task: data.TaskData,
    train_batches: list[Batch],
    layers: list[LayerEntry],
) -> ProbeSection:
    """Single-layer LoRA probes on every layer, scored on the first dev examples."""
    dev = task.dev[: config.probe_dev_examples]
    dev_batches = data.task_batches(
        dev,
        loaded.tokenizer,
        kind=task.kind,
        max_length=config.max_length,
        batch_size=config.batch_size,
    )
    base = dev_loss(loaded.model, dev_batches)
    gains = probe_gains(
        loaded.model,
        train_batches,
        dev_batches,
        range(loaded.n_layers),
        steps=config.probe_steps,
        settings=config.lora_settings(),
        seed=config.seed,
        progress=config.progress,
        base_dev_loss=base,
    )
    return ProbeSection(
        steps=config.probe_steps,
        n_dev_examples=len(dev),
        base_dev_loss=base,
        gains=[gains[layer] for layer in range(loaded.n_layers)],
        spearman=spearman({e.layer: e.predicted_gain for e in layers}, gains),
    )


def _provenance(
    config: BuildConfig, loaded: LoadedModel, task: data.TaskData, measurements: Measurements
) -> Provenance:
    model = loaded.model
    return Provenance(
        model=ModelInfo(
            id=loaded.model_id,
            source=loaded.source,
            weights_hash=loaded.weights_hash,
            architecture=type(model).__name__,
            blocks_path=loaded.blocks_path,
            n_layers=loaded.n_layers,
            n_params=sum(p.numel() for p in model.parameters()),
        ),
        task=TaskInfo(**{f.name: getattr(task, f.name) for f in fields(TaskInfo)}),
        settings=BuildSettings(
            seed=config.seed,
            probe_examples=measurements.n_probe_examples,
            n_probe_tokens=measurements.n_probe_tokens,
            n_loss_tokens=measurements.n_loss_tokens,
            batch_size=config.batch_size,
            max_length=config.max_length,
            rank=config.rank,
            ridge_eps=config.ridge_eps,
            coupling_examples=config.coupling_examples,
            coupling_method=measurements.coupling_method,
            probe_steps=config.probe_steps,
            lora=config.lora_settings(),
        ),
        versions=library_versions(),
        machine=machine_info(str(next(model.parameters()).device)),
    )


def build_card(
    config: BuildConfig, *, loaded: LoadedModel | None = None, task: data.TaskData | None = None
) -> Card:
    """Measure the model on the task and assemble the card (nothing is written).

    `loaded` / `task`: a model (see `models.frozen_model`) or task data the caller already has,
    used instead of loading `config.model` / `config.task`.
    """
    config.validate()
    distributed.init()  # under torchrun: each process measures its share of the probe batches
    start, cpu_start = time.perf_counter(), time.process_time()
    stages: dict[str, float] = {}

    def stage(name: str, since: float) -> float:
        now = time.perf_counter()
        stages[name] = now - since
        return now

    if task is None:
        task = data.load_task(config.task, seed=config.seed)  # cheap: a bad --task fails fast
    if loaded is None:
        loaded = load_model(config.model)
    data.check_lengths(task, loaded.tokenizer, config.max_length)
    probe_examples = task.train[: config.probe_examples]
    shape = {"kind": task.kind, "max_length": config.max_length, "batch_size": config.batch_size}
    probe_batches = data.task_batches(probe_examples, loaded.tokenizer, **shape)  # training order
    measure_batches = data.measurement_batches(
        probe_examples, loaded.tokenizer, head=config.coupling_examples, **shape
    )
    if config.memory_budget > 0:
        try:
            groups, needed = memory.groups_for_budget(loaded.model, config.memory_budget)
        except ValueError as exc:
            raise BuildConfigError(f"--memory-budget: {exc}") from exc
        config = replace(config, layer_groups=groups)
        if config.progress:
            print(f"layer groups: {groups} (statistics {needed / memory.GIB:.3g} GiB per group "
                  f"at most; --memory-budget {config.memory_budget:g})", file=sys.stderr)
    if config.layer_groups > loaded.n_layers:
        raise BuildConfigError(
            f"--layer-groups must be at most the model's {loaded.n_layers} layers, "
            f"got {config.layer_groups}"
        )
    t = stage("load", start)

    measurements = measure(
        loaded,
        measure_batches,
        rank=config.rank,
        ridge_eps=config.ridge_eps,
        coupling_examples=config.coupling_examples,
        layer_groups=config.layer_groups,
        progress=config.progress,
    )
    t = stage("measure", t)

    settings = config.lora_settings()
    params_per_layer = lora_param_counts(loaded.model, settings)
    cost_section, cost_timing = None, None
    main = distributed.is_main()  # cost and probes: the main process alone, the others wait
    if config.cost and main:
        cost = measure_cost(
            loaded.model,
            probe_batches,
            settings,
            cost_settings=config.cost_settings,
            seed=config.seed,
            progress=config.progress,
        )
        t = stage("cost", t)
        cost_section = CostSection(
            params_per_layer=params_per_layer,
            fit_sets=cost.fit_sets,
            check_sets=cost.check_sets,
            memory=cost.memory,
        )
        cost_timing = cost.timing

    layers = _layer_entries(measurements, loaded.n_layers, params_per_layer)
    probe_section = None
    if config.probe_steps > 0 and main:
        probe_section = _probe_section(config, loaded, task, probe_batches, layers)
        stage("probe", t)
    distributed.barrier()
    stage("total", start)
    stages["total_cpu"] = time.process_time() - cpu_start  # unlike wall time, not shared cores
    return Card(
        schema=SCHEMA,
        provenance=_provenance(config, loaded, task, measurements),
        base_loss=measurements.base_loss,
        layers=layers,
        sites=[
            SiteEntry.of(site, measurements.stats[site]) for site in measurements.sites
        ],
        coupling=Coupling(
            method=measurements.coupling_method,
            n_examples=measurements.n_coupling_examples,
            matrix=measurements.coupling.double().tolist(),
        ),
        cost=cost_section,
        probe=probe_section,
        timings=Timings(stages=stages, cost=cost_timing),
    )


def build(config: BuildConfig, out: str | os.PathLike[str]) -> tuple[Card, Path]:
    """Build the card and write card.json, card.md and the plots into `out` in one move."""
    check_out_dir(Path(out))
    card = build_card(config)
    if not distributed.is_main():  # a multi-process build is written once, by rank 0
        return card, Path(out)
    directory = write_card_dir(card, out, extra=lambda staging: write_plots(card, staging))
    return card, directory

