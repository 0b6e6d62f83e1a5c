"""Settings of a card build, as dataclasses whose field metadata also defines the CLI options.

Each field that a user can set carries `metadata=option(...)`: its flag, help text and lower
bound. `add_config_arguments` turns those into argparse options (the `layercard build` CLI and
the benchmark share them), `config_from_args` reads them back, and `validate` names the flag of
a setting out of range. No torch here: `layercard --help` and `layercard show` stay fast.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from typing import Any

ALL_LINEAR = "all-linear"


class BuildConfigError(ValueError):
    """A build setting is out of range (the message names the CLI option)."""


def option(
    flag: str,
    help: str,
    *,
    metavar: str | None = "N",
    minimum: float | None = None,
    positive: bool = False,
    negate: bool = False,
) -> dict[str, Any]:
    """Field metadata of a CLI option: `minimum` is an inclusive bound, `positive` means a finite
    number > 0, `negate` a store-true flag that sets the field to False (e.g. --quiet)."""
    return {
        "flag": flag,
        "help": help,
        "metavar": metavar,
        "minimum": minimum,
        "positive": positive,
        "negate": negate,
    }


def _options(cls: type) -> list[tuple[tuple[str, ...], Any, dict[str, Any]]]:
    """(path of field names, field, metadata) of every option of `cls`, nested ones included."""
    found = []
    for f in fields(cls):
        if "flag" in f.metadata:
            found.append(((f.name,), f, dict(f.metadata)))
        elif f.default_factory is not MISSING and is_dataclass(f.default_factory):
            found += [((f.name, *path), g, m) for path, g, m in _options(f.default_factory)]
    return found


# the model and task options of every command that loads them (build, train)
MODEL_OPTION = option("--model", "smollm2-135m, a local checkpoint directory, or a hub id",
                      metavar="MODEL")
TASK_OPTION = option("--task", "sentiment | dialog | FILE.jsonl | FILE.csv | datasets directory",
                     metavar="TASK")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters shared by every run that must be comparable (probe, cost, placement).

    target_modules: module names relative to a block (e.g. "self_attn.q_proj", "mlp.c_fc"), or
    "all-linear" for every nn.Linear / GPT-2 Conv1D inside a block.
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | str = ALL_LINEAR
    lr: float = 1e-3


@dataclass(frozen=True)
class CostSettings:
    """How much to measure: single-layer depths, steps per configuration, serving decode length."""

    depths: int = field(default=5, metadata=option(
        "--cost-depths", "single-layer depths timed for the cost-vs-depth fit", minimum=1))
    warmup_steps: int = 1  # untimed steps per configuration; at least one runs (it gives memory)
    timed_steps: int = field(default=3, metadata=option(
        "--cost-steps", "timed optimizer steps per measured layer set (the fastest is kept)",
        minimum=1))
    serving_prompt_tokens: int = 8
    serving_tokens: int = 16


@dataclass(frozen=True)
class BuildConfig:
    """What to measure and how; the defaults build the smollm2-135m card in minutes on 2 cores."""

    model: str = field(metadata=MODEL_OPTION)
    task: str = field(metadata=TASK_OPTION)
    probe_examples: int = field(default=256, metadata=option(
        "--probe-examples", "training examples the statistics are measured on", minimum=1))
    batch_size: int = field(default=8, metadata=option(
        "--batch-size", "examples per forward/backward (also for cost and probes)", minimum=1))
    max_length: int = field(default=256, metadata=option(
        "--max-length", "longest example in tokens; longer ones are an error, not truncated",
        minimum=2))
    rank: int = field(default=8, metadata=option(
        "--rank", "LoRA rank r: rank-r resnorm, cost and probe adapters", minimum=1))
    ridge_eps: float = field(default=1e-3, metadata=option(
        "--ridge", "ridge ε: Σ+λI with λ = ε·tr(Σ)/d_in", metavar="EPS", positive=True))
    coupling_examples: int = field(default=64, metadata=option(
        "--coupling-examples", "probe examples whose per-example gains give the coupling matrix",
        minimum=1))
    layer_groups: int = field(default=2, metadata=option(
        "--layer-groups", "measure the layers in N contiguous groups, one after the other: "
        "memory holds one group's statistics and activations, time grows by a forward through "
        "the layers below each group; the numbers do not change", minimum=1))
    memory_budget: float = field(default=0.0, metadata=option(
        "--memory-budget", "if > 0: GiB for the statistics of one layer group; replaces "
        "--layer-groups with the fewest groups whose largest group's statistics (the float64 "
        "sums of G and Σ, counted exactly from the module shapes) fit. The weights and "
        "activations come on top", metavar="GIB", minimum=0))
    probe_steps: int = field(default=0, metadata=option(
        "--probe-steps", "if > 0: a LoRA run of this many steps per single layer, recording the "
        "dev-loss drop and its Spearman correlation with the prediction", minimum=0))
    probe_dev_examples: int = field(default=128, metadata=option(
        "--probe-dev-examples", "dev examples the probe runs are scored on", minimum=1))
    seed: int = field(default=0, metadata=option(
        "--seed", "seed of the data split, probe set and LoRA initialisation", minimum=0))
    cost: bool = field(default=True, metadata=option(
        "--cost", "measure training time, memory and serving overhead (--no-cost skips)",
        metavar=None))
    cost_settings: CostSettings = field(default_factory=CostSettings)
    progress: bool = field(default=True, metadata=option(
        "--quiet", "no progress bars or messages", metavar=None, negate=True))

    def validate(self) -> None:
        """Raise BuildConfigError naming the option of the first setting out of range."""
        validate_options(self)

    def lora_settings(self) -> LoraSettings:
        """The LoRA settings shared by cost measurement and probes (rank from the config)."""
        return LoraSettings(rank=self.rank, alpha=2.0 * self.rank)


def parse_budget(text: str) -> tuple[str, float]:
    """--budget KIND=SHARE, e.g. time=0.5 (the kind and range are checked by the objective)."""
    kind, _, share = text.partition("=")
    try:
        return kind, float(share)
    except ValueError:
        raise BuildConfigError(f"--budget: expected KIND=SHARE such as time=0.5, got {text!r}") \
            from None


@dataclass(frozen=True)
class TrainConfig:
    """One LoRA fine-tuning run: where the adapters go, and the settings every strategy shares."""

    model: str = field(metadata=MODEL_OPTION)
    task: str = field(metadata=TASK_OPTION)
    layers: str = field(default="auto", metadata=option(
        "--layers", "all | auto (the card's placement) | a strategy: first, middle, last, "
        "uniform, random, card, gradnorm, resnorm, kappa (k layers each) | indices "
        "such as 0,4,8 or 3-7", metavar="SPEC"))
    k: int = field(default=8, metadata=option(
        "--k", "layers a strategy (and auto without --budget) picks; kappa: the same number "
        "of modules as k full layers", minimum=1))
    budget: str = field(default="", metadata=option(
        "--budget", "with --layers auto: the best set costing at most SHARE of all-layer "
        "LoRA, KIND=SHARE with KIND time | memory | params (e.g. time=0.6)",
        metavar="KIND=SHARE"))
    card: str = field(default="", metadata=option(
        "--card", "card.json (or its directory) for auto, card, gradnorm, resnorm; without "
        "it auto builds one into OUT/card", metavar="CARD"))
    train_examples: int = field(default=1000, metadata=option(
        "--train-examples", "training examples (the first ones of the train split)", minimum=1))
    epochs: float = field(default=1.0, metadata=option(
        "--epochs", "passes over the training examples", metavar="E", positive=True))
    batch_size: int = field(default=8, metadata=option(
        "--batch-size", "examples per optimizer step (per process)", minimum=1))
    lr: float = field(default=LoraSettings().lr, metadata=option(
        "--lr", "AdamW learning rate (linear decay to 0, no warmup)", metavar="LR",
        positive=True))
    rank: int = field(default=8, metadata=option("--rank", "LoRA rank r (alpha = 2r)", minimum=1))
    max_length: int = field(default=256, metadata=option(
        "--max-length", "longest example in tokens; longer ones are an error", minimum=2))
    seed: int = field(default=0, metadata=option(
        "--seed", "seed of the data split, data order, random layers and LoRA init", minimum=0))
    save_steps: int = field(default=25, metadata=option(
        "--save-steps", "checkpoint every N optimizer steps (a rerun resumes from the last)",
        minimum=1))
    progress: bool = field(default=True, metadata=option(
        "--quiet", "no progress bars or messages", metavar=None, negate=True))

    def validate(self) -> None:
        """Raise BuildConfigError naming the option of the first setting out of range."""
        validate_options(self)
        if self.budget and self.layers != "auto":
            raise BuildConfigError("--budget applies to --layers auto only")
        if self.budget:
            parse_budget(self.budget)

    def lora_settings(self) -> LoraSettings:
        """The LoRA settings of every run (identical across strategies)."""
        return LoraSettings(rank=self.rank, alpha=2.0 * self.rank, lr=self.lr)


def validate_options(config: Any) -> None:
    """Raise BuildConfigError naming the flag of the first option field of the dataclass
    `config` (nested settings included) that is out of its declared range."""
    for path, _, meta in _options(type(config)):
        value: Any = config
        for name in path:
            value = getattr(value, name)
        flag = meta["flag"]
        if meta["minimum"] is not None and value < meta["minimum"]:
            raise BuildConfigError(f"{flag} must be at least {meta['minimum']}, got {value}")
        if meta["positive"] and not (math.isfinite(value) and value > 0):
            raise BuildConfigError(f"{flag} must be a positive number, got {value}")


def add_config_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    skip: tuple[str, ...] = (),
    defaults: dict[str, Any] | None = None,
) -> None:
    """Add one argparse option per option field of `cls` (nested settings included), except
    the fields named in `skip`; `defaults` makes required fields optional with that default."""
    defaults = defaults or {}
    for path, f, meta in _options(cls):
        name = path[-1]
        if name in skip:
            continue
        dest = "__".join(path)
        if meta["negate"]:
            parser.add_argument(meta["flag"], dest=dest, action="store_false", help=meta["help"])
        elif f.type in ("bool", bool):
            parser.add_argument(meta["flag"], dest=dest, action=argparse.BooleanOptionalAction,
                                default=f.default, help=meta["help"])
        else:
            kind = {"int": int, "float": float, "str": str}[f.type]
            required = f.default is MISSING and f.default_factory is MISSING
            parser.add_argument(
                meta["flag"], dest=dest, type=kind, metavar=meta["metavar"],
                required=required and name not in defaults,
                default=defaults.get(name, None if required else f.default), help=meta["help"],
            )


def config_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """Build `cls` from the options `add_config_arguments` added (one level of nested settings;
    skipped fields keep their defaults unless given in `overrides`)."""
    values: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for path, _, _ in _options(cls):
        dest = "__".join(path)
        if not hasattr(args, dest):
            continue
        target = values if len(path) == 1 else nested.setdefault(path[0], {})
        target[path[-1]] = getattr(args, dest)
    for name, kwargs in nested.items():
        factory = next(f.default_factory for f in fields(cls) if f.name == name)
        values[name] = replace(factory(), **kwargs)
    return cls(**{**values, **overrides})
