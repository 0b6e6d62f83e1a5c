"""LoRA fine-tuning on chosen layers through `transformers.Trainer`, resumable, with its cost.

`train(config, out)` resolves the layer choice (`strategies`, a card, or peft's KappaTune),
trains the identical LoRA config on it with Trainer (torchrun gives multi-process data-parallel
runs; only the main process writes files), checkpoints every `save_steps` and resumes from the
last checkpoint when rerun on the same --out after a kill. It saves the adapter with
`save_pretrained` and records wall time, peak memory and trainable parameters in train.json.

Layout of --out: train_config.json (written first: what this run is), checkpoints/ (Trainer's),
adapter/ (the finished adapter), train.json (written last: the run is complete).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from peft.helpers import KappaTuneSelector
from transformers import (
    PreTrainedTokenizerBase,
    PrinterCallback,
    Trainer,
    TrainingArguments,
)

from commonio.atomic import write_text
from layercard import data
from layercard.codec import read_card
from layercard.config import (
    BuildConfig,
    BuildConfigError,
    LoraSettings,
    TrainConfig,
    parse_budget,
)
from layercard.decide import Objective, place
from layercard.models import LoadedModel, adaptable_sites, load_model
from layercard.schema import Card
from layercard.strategies import (
    FIXED,
    FROM_CARD,
    LayerSpecError,
    card_layers,
    fixed_layers,
    parse_layer_list,
)
from layercard.training import lora_config


class TrainDirError(ValueError):
    """--out holds something other than an unfinished run with the same settings."""


def budget_objective(text: str) -> Objective:
    """--budget KIND=SHARE as a placement objective."""
    try:
        return Objective(budget=parse_budget(text))
    except ValueError as err:
        raise BuildConfigError(f"--budget {text!r}: {err}") from None


@dataclass
class LayerChoice:
    """What a run adapts: layers, and the exact peft target modules when a strategy picks
    modules (KappaTune) rather than whole layers."""

    strategy: str
    layers: list[int]
    modules: list[str] | None  # full module names (kappa), else None: every target module
    detail: str


@dataclass
class TrainSummary:
    """train.json: the run's choice, cost and losses (wall time and memory are this machine's)."""

    config: TrainConfig
    choice: LayerChoice
    trainable_params: int
    steps: int
    train_seconds: float  # Trainer's train_runtime of the invocation that finished the run
    resumed: bool
    peak_memory_bytes: int
    memory_method: str  # "cuda-max-allocated" | "process-max-rss"
    train_losses: list[float]
    card_seconds: float | None  # the card build auto did itself, if any
    # this process's CPU time (all its threads) in that invocation's trainer.train: less
    # changed than the wall time by other processes sharing the machine's cores, not unchanged
    train_cpu_seconds: float | None = None


def _card(config: TrainConfig, loaded: LoadedModel, out: Path) -> tuple[Card, float | None]:
    """The card of --card, or (auto) the one in OUT/card, built there on first use; with the
    build time of a card this run built (from the card's timings, also when resuming)."""
    if config.card:
        path = Path(config.card)
        return read_card(path / "card.json" if path.is_dir() else path), None
    if config.layers != "auto":
        raise LayerSpecError(f"--layers {config.layers} needs --card")
    if world_size() > 1:
        raise LayerSpecError("--layers auto in a multi-process run needs --card: build the card "
                             "once first (layercard build)")
    own = out / "card" / "card.json"
    if not own.exists():
        from layercard.build import build_card
        from layercard.output import write_card_dir

        build_config = BuildConfig(model=config.model, task=config.task, seed=config.seed,
                                   rank=config.rank, max_length=config.max_length,
                                   progress=config.progress)
        write_card_dir(build_card(build_config, loaded=loaded), own.parent)
    card = read_card(own)
    return card, card.timings.stages["total"]


def kappa_modules(loaded: LoadedModel, n_modules: int) -> list[str]:
    """peft's KappaTune choice: the `n_modules` block linear modules whose weights have the
    lowest condition number (`peft.helpers.KappaTuneSelector`), as full module names."""
    prefix = loaded.blocks_path
    in_blocks = {f"{prefix}.{s.layer}.{s.module}" for s in adaptable_sites(loaded.model)}
    ranked = KappaTuneSelector(loaded.model, show_progress=False).get_best_targets()
    return [name for name in ranked if name in in_blocks][:n_modules]


def choose(config: TrainConfig, loaded: LoadedModel, out: Path) -> tuple[LayerChoice, float | None]:
    """Resolve --layers (and --k, --budget, --card) into the layers and modules to adapt."""
    spec, n, k = config.layers, loaded.n_layers, config.k
    if spec == "all":
        return LayerChoice("all", list(range(n)), None, f"all {n} layers"), None
    if spec in FIXED:
        layers = fixed_layers(spec, n, k, seed=config.seed)
        return LayerChoice(spec, layers, None, f"{spec}-{k}"), None
    if spec == "kappa":
        per_layer = len(adaptable_sites(loaded.model)) // n
        modules = kappa_modules(loaded, k * per_layer)
        start = len(loaded.blocks_path) + 1
        layers = sorted({int(m[start:].split(".")[0]) for m in modules})
        return LayerChoice("kappa", layers, modules,
                           f"KappaTune: {len(modules)} modules of lowest condition number"), None
    if spec == "auto" or spec in FROM_CARD:
        card, seconds = _card(config, loaded, out)
        if card.n_layers != n:
            raise LayerSpecError(f"--card has {card.n_layers} layers, the model {n}")
        if spec == "auto":
            objective = (budget_objective(config.budget) if config.budget
                         else Objective(max_layers=k))
            placement = place(card, objective)
            return LayerChoice("auto", placement.chosen.layers, None, placement.reason), seconds
        return LayerChoice(spec, card_layers(spec, card, k), None, f"{spec}-{k}"), seconds
    return LayerChoice("list", parse_layer_list(spec, n), None, f"layers {spec}"), None


def _lora(loaded: LoadedModel, choice: LayerChoice, settings: LoraSettings) -> LoraConfig:
    config = lora_config(loaded.model, choice.layers, settings)
    if choice.modules is not None:
        config = replace(config, target_modules=list(choice.modules), layers_to_transform=None,
                         layers_pattern=None)
    return config


def _check_out(out: Path, record: dict) -> bool:
    """True when --out holds an unfinished run of exactly these settings (resume), False when
    it is absent or empty; otherwise TrainDirError."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return False
    previous = out / "train_config.json"
    if not out.is_dir() or not previous.is_file():
        raise TrainDirError(f"--out {out}: exists and is not a layercard train run")
    if (out / "train.json").exists():
        raise TrainDirError(f"--out {out}: holds a finished run; choose another --out")
    if json.loads(previous.read_text()) != record:
        raise TrainDirError(
            f"--out {out}: holds an unfinished run with other settings; rerun with those "
            f"(see {previous}) to resume, or choose another --out"
        )
    return True


def world_size() -> int:
    """Processes of this run: torchrun / accelerate set WORLD_SIZE (1 when launched alone)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def peak_memory() -> tuple[int, str]:
    """(peak bytes, method): CUDA's max allocated on a GPU, else the process's peak RSS."""
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated()), "cuda-max-allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "process-max-rss"


def training_rows(task: data.TaskData, tokenizer: PreTrainedTokenizerBase,
                  config: TrainConfig) -> list[dict[str, Any]]:
    """The tokenized rows a run trains on: the first `config.train_examples` of the training
    split (eos appended for generation tasks, so the model learns to stop)."""
    return data.tokenize(task.train[: config.train_examples], tokenizer,
                         max_length=config.max_length, add_eos=task.kind == "generation")


def train(config: TrainConfig, out: str | Path) -> TrainSummary:
    """Fine-tune `config.model` on `config.task` with LoRA on the chosen layers (see module doc)."""
    config.validate()
    if config.budget:
        budget_objective(config.budget)  # a bad objective fails before any long work
    out = Path(out)
    record = {"train_config": asdict(config)}
    resuming = _check_out(out, record)
    task = data.load_task(config.task, seed=config.seed)
    loaded = load_model(config.model)
    data.check_lengths(task, loaded.tokenizer, config.max_length)
    rows = training_rows(task, loaded.tokenizer, config)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "train_config.json", json.dumps(record, indent=2) + "\n")
    choice, card_seconds = choose(config, loaded, out)
    settings = config.lora_settings()
    torch.manual_seed(config.seed)  # the LoRA A initialisation
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        model = get_peft_model(loaded.model, _lora(loaded, choice, settings))
    pad_id = loaded.tokenizer.pad_token_id
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"), per_device_train_batch_size=config.batch_size,
        num_train_epochs=config.epochs, learning_rate=config.lr, weight_decay=0.0,
        lr_scheduler_type="linear", warmup_steps=0, logging_steps=1, save_strategy="steps",
        save_steps=config.save_steps, save_total_limit=1, report_to="none", seed=config.seed,
        data_seed=config.seed, use_cpu=not torch.cuda.is_available(),
        disable_tqdm=not config.progress, remove_unused_columns=False,
        dataloader_num_workers=0, ddp_find_unused_parameters=False,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=rows,
        data_collator=lambda batch: data.pad_rows(batch, pad_id),
    )
    if not config.progress:
        trainer.remove_callback(PrinterCallback)  # it prints every log line
    resume = resuming and any((out / "checkpoints").glob("checkpoint-*"))
    cpu_start = time.process_time()
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    cpu_seconds = time.process_time() - cpu_start
    main = trainer.is_world_process_zero()  # in a multi-process run only it writes files
    if main:
        model.save_pretrained(out / "adapter")
    memory, method = peak_memory()
    summary = TrainSummary(
        config=config, choice=choice,
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        steps=result.global_step, train_seconds=float(result.metrics["train_runtime"]),
        resumed=bool(resume), peak_memory_bytes=memory, memory_method=method,
        train_losses=[e["loss"] for e in trainer.state.log_history if "loss" in e],
        card_seconds=card_seconds, train_cpu_seconds=cpu_seconds,
    )
    if main:
        write_text(out / "train.json", json.dumps(asdict(summary), indent=2) + "\n")
    return summary


def read_summary(run: str | Path) -> TrainSummary:
    """train.json of a finished run, as a TrainSummary."""
    path = Path(run) / "train.json"
    if not path.is_file():
        raise TrainDirError(f"{run}: no train.json (not a finished layercard train run)")
    raw = json.loads(path.read_text())
    return TrainSummary(**{**raw, "config": TrainConfig(**raw["config"]),
                           "choice": LayerChoice(**raw["choice"])})

