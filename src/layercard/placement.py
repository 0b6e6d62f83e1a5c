"""A placement as files: peft's adapter_config.json, placement.json / .md and the Pareto plot.

`layercard place` writes these; `find_layer_targets` is the one-call Python entry point in the
style of `peft.helpers.find_kappa_target_modules`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path

from peft import LoraConfig
from torch import nn
from transformers import PreTrainedTokenizerBase

from commonio.atomic import replace_dir
from layercard.build import build_card
from layercard.config import BuildConfig
from layercard.data import TaskData
from layercard.decide import Objective, Placement, place
from layercard.models import frozen_model
from layercard.output import check_replaceable
from layercard.plots import plot_pareto
from layercard.schema import Card
from layercard.training import peft_lora_config


def placement_lora_config(card: Card, placement: Placement) -> LoraConfig:
    """The peft LoraConfig of a placement: the card's LoRA settings on the chosen layers, for
    the model the card was built on."""
    config = peft_lora_config(
        card.provenance.model.blocks_path,
        placement.modules,
        placement.chosen.layers,
        card.provenance.settings.lora,
    )
    config.base_model_name_or_path = card.provenance.model.source
    return config


def placement_markdown(card: Card, placement: Placement) -> str:
    """placement.md: the chosen layers and modules, predicted gain and cost, and why."""
    c, a = placement.chosen, placement.all_layers
    rows = [("gain", c.gain, a.gain), ("LoRA parameters", c.params, a.params)]
    if c.seconds is not None:
        rows += [("step seconds", c.seconds, a.seconds), ("training bytes", c.memory, a.memory)]
    table = "\n".join(
        f"| {name} | {mine:.4g} | {full:.4g} | {mine / full:.2f} |" for name, mine, full in rows
    )
    p = card.provenance
    return (
        f"# Placement: {p.model.id} on {p.task.name} ({placement.objective.describe()})\n\n"
        f"Layers: {', '.join(map(str, c.layers))}\n\nModules: {', '.join(placement.modules)}\n\n"
        f"{placement.reason}\n\n| predicted | chosen | all layers | ratio |\n|---|---|---|---|\n"
        f"{table}\n\n![Pareto front](pareto.png)\n"
    )


def write_placement(card: Card, placement: Placement, out: str | os.PathLike[str]) -> Path:
    """Write adapter_config.json (peft's `save_pretrained`), placement.json, placement.md and
    pareto.png into `out` in one move (a previous placement there is replaced)."""
    out = Path(out)
    check_replaceable(out, "placement.json", "card_schema", "layercard/card@", "placement",
                      others=("adapter_config.json",))

    def fill(staging: Path) -> None:
        placement_lora_config(card, placement).save_pretrained(staging)
        record = {"card_schema": card.schema, **asdict(placement)}
        (staging / "placement.json").write_text(json.dumps(record, indent=2) + "\n")
        (staging / "placement.md").write_text(placement_markdown(card, placement))
        plot_pareto(placement, staging / "pareto.png")

    return replace_dir(out, fill)


def find_layer_targets(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    task: str | TaskData,
    objective: Objective,
    *,
    config: BuildConfig | None = None,
) -> LoraConfig:
    """Build a card of `model` on `task` (a built-in name, a file, or TaskData) and return the
    LoraConfig of the placement for `objective`. `config`: card build settings (the defaults
    otherwise; its model and task fields are ignored)."""
    name = task if isinstance(task, str) else task.name
    config = replace(config or BuildConfig(model="in-memory", task=name), task=name)
    model_id = getattr(model, "name_or_path", "") or type(model).__name__
    loaded = frozen_model(model, tokenizer, model_id)
    card = build_card(
        config, loaded=loaded, task=None if isinstance(task, str) else task
    )
    return placement_lora_config(card, place(card, objective))
