"""Build a Layer Card: load → measure → cost → probe → Card (and write it with its plots)."""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy
import peft
import torch
import transformers

import layercard
from layercard import data
from layercard.card import (
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
    check_out_dir,
    write_card_dir,
)
from layercard.cost import CostSettings, lora_param_counts, measure_cost
from layercard.measure import Measurements, measure
from layercard.models import LoadedModel, load_model
from layercard.plots import write_plots
from layercard.probe import probe_gains, spearman
from layercard.training import Batch, LoraSettings, dev_loss


class BuildConfigError(ValueError):
    """A build setting is out of range (the message names the CLI option)."""


@dataclass(frozen=True)
class BuildConfig:
    """What to measure and how; the defaults build the smollm2-135m card in minutes on 2 cores."""

    model: str
    task: str
    probe_examples: int = 256
    batch_size: int = 8
    max_length: int = 256
    rank: int = 8
    ridge_eps: float = 1e-3
    coupling_examples: int = 64
    layer_groups: int = 2
    probe_steps: int = 0
    probe_dev_examples: int = 128
    seed: int = 0
    cost: bool = True
    cost_settings: CostSettings = field(default_factory=CostSettings)
    progress: bool = True

    def validate(self) -> None:
        """Raise BuildConfigError naming the option of the first setting out of range."""
        positive = {
            "--probe-examples": self.probe_examples,
            "--batch-size": self.batch_size,
            "--rank": self.rank,
            "--coupling-examples": self.coupling_examples,
            "--layer-groups": self.layer_groups,
            "--probe-dev-examples": self.probe_dev_examples,
            "--cost-depths": self.cost_settings.depths,
            "--cost-steps": self.cost_settings.timed_steps,
        }
        for option, value in positive.items():
            if value < 1:
                raise BuildConfigError(f"{option} must be at least 1, got {value}")
        if self.max_length < 2:
            raise BuildConfigError(f"--max-length must be at least 2, got {self.max_length}")
        if not (math.isfinite(self.ridge_eps) and self.ridge_eps > 0):
            raise BuildConfigError(f"--ridge must be a positive number, got {self.ridge_eps}")
        if self.probe_steps < 0:
            raise BuildConfigError(f"--probe-steps must be 0 or more, got {self.probe_steps}")
        if self.seed < 0:
            raise BuildConfigError(f"--seed must be 0 or more, got {self.seed}")


def lora_settings(config: BuildConfig) -> LoraSettings:
    """The LoRA settings shared by cost measurement and probes (rank from the config)."""
    return LoraSettings(rank=config.rank, alpha=2.0 * config.rank)


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
        settings=lora_settings(config),
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
        task=TaskInfo(
            name=task.name,
            kind=task.kind,
            source=task.source,
            data_hash=task.data_hash,
            split_seed=task.split_seed,
            split_sizes=task.split_sizes,
        ),
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
            lora=lora_settings(config),
        ),
        versions=library_versions(),
        machine=machine_info(str(next(model.parameters()).device)),
    )


def build_card(config: BuildConfig) -> Card:
    """Measure the model on the task and assemble the card (nothing is written)."""
    config.validate()
    start = time.perf_counter()
    stages: dict[str, float] = {}

    def stage(name: str, since: float) -> float:
        now = time.perf_counter()
        stages[name] = now - since
        return now

    task = data.load_task(config.task, seed=config.seed)  # cheap: a bad --task fails fast
    loaded = load_model(config.model)
    probe_examples = task.train[: config.probe_examples]
    shape = {"kind": task.kind, "max_length": config.max_length, "batch_size": config.batch_size}
    probe_batches = data.task_batches(probe_examples, loaded.tokenizer, **shape)  # training order
    measure_batches = data.measurement_batches(
        probe_examples, loaded.tokenizer, head=config.coupling_examples, **shape
    )
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

    settings = lora_settings(config)
    params_per_layer = lora_param_counts(loaded.model, settings)
    cost_section, cost_timing = None, None
    if config.cost:
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
    if config.probe_steps > 0:
        probe_section = _probe_section(config, loaded, task, probe_batches, layers)
        stage("probe", t)
    stage("total", start)
    return Card(
        schema=SCHEMA,
        provenance=_provenance(config, loaded, task, measurements),
        base_loss=measurements.base_loss,
        layers=layers,
        sites=[
            SiteEntry(**vars(site), **vars(measurements.stats[site]))
            for site in measurements.sites
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
    directory = write_card_dir(card, out, extra=lambda staging: write_plots(card, staging))
    return card, directory

