"""Benchmark: neural TPPs against the classical Hawkes fit and the true process (issue 12).

Models: THP, RoTHP, MHP, MHP-E and MHP-exact (MHP whose scan can hold the Hawkes excitation:
`neuraltpp.models.VARIANTS`), each with the `thp` and the `decay` intensity decoder
(`ModelConfig.decoder`), trained by `neuraltpp.training.train` (best epoch by dev LL) and scored
on the test split by `neuraltpp.evaluation.evaluate`; beside them the classical exponential
Hawkes MLE fit (`neuraltpp.hawkes.fit`) and, on the simulated set, the true process. Every LL
uses the default `LikelihoodOptions` (correct, first event conditioned on, tail included).

Datasets (`neuraltpp.builtin` names): `hawkes-sim`, the demo's simulated 5-type exponential
Hawkes set (data seed --data-seed, true LL known), and the pycsep catalogs `ridgecrest` (one
observed sequence, a small real case) and `ucerf3` (9,999 simulated catalogs). Learning curve
on `hawkes-sim`: training sizes --sizes times today's training split (x0.25 takes its first
quarter; x4 adds sequences simulated from the same true parameters, beyond the 300 the splits
come from), always the same dev and test splits.

Runs go in order of need, the first seed first: the simulated set at x1 (truth, Hawkes fit,
every model), its other sizes, ridgecrest, ucerf3; then the other seeds in the same order.
Each finished run is one JSON file under <out>/runs/<dataset>/ and a rerun skips it, so the
benchmark can be completed over several sittings (--max-runs N: stop after N new runs). A run
records its test metrics, dev-LL history, wall times and the process's peak resident set size
during it (Linux VmHWM, reset before each run; it includes the interpreter, torch and the loaded
data), its machine and the load average at its end. <out>/meta.json records the settings,
machine, versions and every seed run; a rerun with other settings is refused.
`benchmarks/tpp_report.py` writes the tables and plots.

    python benchmarks/bench_tpp.py --out benchmarks/results/tpp [--quick] [--max-runs N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import torch
from tqdm import tqdm

import neuraltpp
from commonio.process import peak_rss_bytes, reset_peak_rss, rss_bytes
from commonio.wheels import FetchError
from neuraltpp import hawkes
from neuraltpp.builtin import BUILTIN_DATASETS, load_splits
from neuraltpp.data.containers import DataError, EventDataset, EventSequence
from neuraltpp.evaluation import evaluate
from neuraltpp.likelihood import LikelihoodOptions
from neuraltpp.metrics import Metrics, write_json
from neuraltpp.models import MODEL_NAMES, ModelConfig
from neuraltpp.models.config import DECODERS
from neuraltpp.simulate import HAWKES_SIM, HawkesParams, simulate, simulated_splits
from neuraltpp.training import TrainConfig, train

SIM = "hawkes-sim"
TRUTH, HAWKES_FIT = "truth", "hawkes-fit"
TINY_MODEL = {"d_model": 8, "n_layers": 1, "n_heads": 2, "d_ff": 16, "d_state": 4}
QUICK = {"epochs": 1, "train_sequences": 8, "eval_sequences": 4, "model_config": TINY_MODEL}


@dataclass(frozen=True)
class Settings:
    """Everything that determines a run's numbers; runs under one --out must agree on it."""

    epochs: int
    lr: float
    batch_size: int
    model_config: dict[str, Any]
    gap_loss: float  # gap-head MSE weight, per mean squared training gap
    data_seed: int
    train_sequences: int | None  # today's training split: its first N sequences (None: all)
    eval_sequences: int | None  # dev and test: their first N sequences (None: all)
    type_loss: float = 1.0  # type-head cross-entropy weight (0 and --gap-loss 0: NLL only)
    likelihood: LikelihoodOptions = field(default_factory=LikelihoodOptions)


@dataclass(frozen=True)
class RunSpec:
    """One planned run: a model (or the Hawkes fit, or the true process) on one training set."""

    dataset: str
    size: float  # multiple of today's training split (hawkes-sim; 1 elsewhere and for the truth)
    model: str  # one of MODEL_NAMES, HAWKES_FIT or TRUTH
    decoder: str | None = None  # neural models only
    seed: int | None = None  # neural models only (the fit and the truth are deterministic)

    @property
    def name(self) -> str:
        """File stem: truth, hawkes-fit-x1, mhp-decay-x0.25-seed2."""
        if self.model == TRUTH:
            return TRUTH
        stem = f"{self.model}-x{self.size:g}" if self.decoder is None else (
            f"{self.model}-{self.decoder}-x{self.size:g}")
        return stem if self.seed is None else f"{stem}-seed{self.seed}"


@dataclass
class RunRecord:
    """A finished run: its training set, test metrics (`Metrics.to_dict`) and cost."""

    dataset: str
    size: float
    model: str
    decoder: str | None
    seed: int | None
    n_train_sequences: int | None  # None for the true process
    n_train_events: int | None
    test: dict[str, Any]
    seconds: float  # training (neural: train() with its per-epoch dev LL and checkpoints) or fit
    eval_seconds: float  # test metrics, predictions included
    rss_start_bytes: int  # resident set size when the run started
    peak_rss_bytes: int  # the process's peak resident set size during the run
    memory_method: str
    epochs: int | None = None
    seconds_per_epoch: float | None = None  # seconds / epochs
    best_epoch: int | None = None
    best_dev_ll_per_event: float | None = None
    dev_ll_per_epoch: list[float] | None = None  # epoch 0 (untrained) first
    train_config: dict[str, Any] | None = None
    hawkes_params: dict[str, Any] | None = None  # the fitted or true mu, alpha, beta
    warnings: list[str] = field(default_factory=list)
    machine: dict[str, Any] | None = None  # `machine()` of the run (sittings may differ)
    load_average: list[float] | None = None  # 1/5/15-min load at the end: above the run's
    # torch threads, other processes shared the machine and may have slowed it


@dataclass
class Data:
    """A dataset's splits (today's training split, dev, test) and its true process if known."""

    splits: dict[str, EventDataset]
    params: HawkesParams | None


def _first(ds: EventDataset, n: int | None) -> EventDataset:
    return ds if n is None else dataclasses.replace(ds, sequences=ds.sequences[:n])


def load_data(name: str, settings: Settings) -> Data:
    """The splits of built-in dataset ``name`` (trimmed as the settings say) and, for the
    simulated set, its true parameters."""
    if name == SIM:
        params, splits = simulated_splits(HAWKES_SIM, settings.data_seed)
    else:
        params, splits = None, load_splits(name, seed=settings.data_seed)
    return Data(
        {"train": _first(splits["train"], settings.train_sequences),
         "dev": _first(splits["dev"], settings.eval_sequences),
         "test": _first(splits["test"], settings.eval_sequences)},
        params,
    )


def more_sequences(params: HawkesParams, seed: int, count: int) -> list[EventSequence]:
    """``count`` new sequences of the simulated set's process: the ones a simulation of
    300 + count sequences with ``seed`` adds after the 300 the splits come from (the same
    generator stream as `simulate_dataset`, so none of them is in any split)."""
    n = HAWKES_SIM.n_sequences
    children = np.random.SeedSequence(seed).spawn(n + count)[n:]
    return [
        simulate(params, np.random.default_rng(c), T=HAWKES_SIM.horizon, seq_id=str(n + i)).sequence
        for i, c in enumerate(children)
    ]


def training_set(data: Data, size: float, seed: int) -> EventDataset:
    """``size`` times today's training split: its first sequences, or all of them plus new
    simulated ones (``seed`` is the data seed)."""
    train = data.splits["train"]
    n = max(1, round(size * len(train)))
    if n <= len(train):
        return _first(train, n)
    assert data.params is not None  # plan() grows only the simulated set
    return dataclasses.replace(
        train, sequences=train.sequences + more_sequences(data.params, seed, n - len(train))
    )


def mean_squared_gap(ds: EventDataset) -> float:
    """Mean squared inter-event gap of ``ds`` (the gap head's MSE of predicting 0)."""
    gaps = np.concatenate([np.diff(s.times) for s in ds.sequences])
    return float(np.mean(gaps**2)) if gaps.size else 1.0


def _params_dict(params: HawkesParams) -> dict[str, Any]:
    return {"mu": params.mu.tolist(), "alpha": params.alpha.tolist(), "beta": params.beta}


def train_config(settings: Settings, data: Data, model: str, decoder: str | None,
                 seed: int) -> TrainConfig:
    """The training recipe of one neural run under ``settings``: its gap loss is weighted per
    mean squared gap of ``data``'s training split, so it is the same for every time unit."""
    return TrainConfig(
        model=model, model_config={**settings.model_config, "decoder": decoder},
        lr=settings.lr, epochs=settings.epochs, batch_size=settings.batch_size, seed=seed,
        likelihood=settings.likelihood,
        gap_loss_weight=settings.gap_loss / mean_squared_gap(data.splits["train"]),
        type_loss_weight=settings.type_loss,
    )


def run_once(spec: RunSpec, data: Data, train_ds: EventDataset, settings: Settings) -> RunRecord:
    """Train or fit one run, score it on the test split and measure its cost."""
    test, options = data.splits["test"], settings.likelihood
    rss_start = rss_bytes("VmRSS:") or 0
    method = reset_peak_rss()
    extra: dict[str, Any] = {}
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if spec.model in (TRUTH, HAWKES_FIT):
            params = hawkes.fit(train_ds) if spec.model == HAWKES_FIT else data.params
            assert params is not None  # plan() asks for the truth of the simulated set only
            seconds = time.perf_counter() - start
            metrics: Metrics = hawkes.evaluate(params, test, options)
            extra["hawkes_params"] = _params_dict(params)
        else:
            config = train_config(settings, data, spec.model, spec.decoder, spec.seed or 0)
            with tempfile.TemporaryDirectory(prefix="bench-tpp-") as work:
                result = train(config, train_ds, data.splits["dev"], work, resume=False,
                               progress=False)
            seconds = time.perf_counter() - start
            metrics = evaluate(result.model, test, options)
            epochs = result.history[-1].epoch
            extra |= {
                "epochs": epochs, "seconds_per_epoch": seconds / max(epochs, 1),
                "best_epoch": result.best_epoch,
                "best_dev_ll_per_event": result.best_dev_ll_per_event,
                "dev_ll_per_epoch": [r.dev_ll_per_event for r in result.history],
                "train_config": config.to_dict(),
            }
    trained = spec.model != TRUTH
    return RunRecord(
        dataset=spec.dataset, size=spec.size, model=spec.model, decoder=spec.decoder,
        seed=spec.seed, n_train_sequences=len(train_ds) if trained else None,
        n_train_events=train_ds.n_events if trained else None, test=metrics.to_dict(),
        seconds=seconds, eval_seconds=time.perf_counter() - start - seconds,
        rss_start_bytes=rss_start, peak_rss_bytes=peak_rss_bytes(), memory_method=method,
        warnings=sorted({str(w.message) for w in caught}),
        machine=machine(), load_average=list(os.getloadavg()), **extra,
    )


def plan(datasets: list[str], sizes: list[float], models: list[str], decoders: list[str],
         seeds: list[int]) -> list[RunSpec]:
    """Every run in order of need: at the first seed, per dataset (the simulated set at x1
    first, then its other sizes) the truth, the Hawkes fit and every model with every decoder;
    then the other seeds in the same order."""

    def phase(phase_seeds: list[int], baselines: bool) -> list[RunSpec]:
        runs = []
        for dataset in datasets:
            if baselines and dataset == SIM:
                runs.append(RunSpec(dataset, 1.0, TRUTH))
            for size in sorted(sizes, key=lambda s: s != 1) if dataset == SIM else [1.0]:
                if baselines:
                    runs.append(RunSpec(dataset, size, HAWKES_FIT))
                runs += [RunSpec(dataset, size, m, d, s)
                         for s in phase_seeds for m in models for d in decoders]
        return runs

    return phase(seeds[:1], True) + phase(seeds[1:], False)


def run_path(out: Path, spec: RunSpec) -> Path:
    """Where the run's JSON file goes."""
    return out / "runs" / spec.dataset / f"{spec.name}.json"


def machine() -> dict[str, Any]:
    """Platform, CPU model, cores, torch threads and RAM of this machine."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    return {
        "platform": f"{platform.system()} {platform.machine()}", "processor": cpu,
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
    }


def versions() -> dict[str, str]:
    """Versions of the libraries the numbers depend on."""
    return {"neuraltpp": neuraltpp.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "scipy": scipy.__version__,
            "torch": torch.__version__}


def _settings(args: argparse.Namespace) -> Settings:
    """The settings of the options, checked (SystemExit with one error line)."""
    settings = Settings(
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        model_config=args.model_config, gap_loss=args.gap_loss, data_seed=args.data_seed,
        train_sequences=args.train_sequences, eval_sequences=args.eval_sequences,
        type_loss=args.type_loss,
    )
    try:
        ModelConfig(**settings.model_config)
        TrainConfig(epochs=settings.epochs, lr=settings.lr, batch_size=settings.batch_size)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    for name in ("train_sequences", "eval_sequences"):
        value = getattr(settings, name)
        if value is not None and value < 2:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be at least 2, got {value}")
    for name in ("gap_loss", "type_loss"):
        if getattr(settings, name) < 0:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be >= 0, got "
                             f"{getattr(settings, name)}")
    if args.threads < 1:
        raise SystemExit(f"error: --threads must be at least 1, got {args.threads}")
    if any(s <= 0 for s in args.sizes):
        raise SystemExit(f"error: --sizes must be positive, got {args.sizes}")
    return settings


def check_meta(out: Path, settings: dict[str, Any]) -> None:
    """SystemExit unless the runs already under ``out`` were made with these settings."""
    path = out / "meta.json"
    if not path.exists():
        return
    before = json.loads(path.read_text())["settings"]
    differ = [f"{k}: {before.get(k)!r} there, {v!r} now" for k, v in settings.items()
              if before.get(k) != v]
    if differ:
        raise SystemExit(f"error: {out} holds runs made with other settings ({'; '.join(differ)});"
                         " choose another --out")


def write_meta(out: Path, settings: dict[str, Any], seeds: list[int], **extra: Any) -> None:
    """<out>/meta.json: the settings, every seed run so far (earlier invocations' too), ``extra``,
    the machine and the versions."""
    path = out / "meta.json"
    before = json.loads(path.read_text())["seeds"] if path.exists() else []
    write_json({"settings": settings, "seeds": sorted({*before, *seeds}), **extra,
                "machine": machine(), "versions": versions()}, path)


def _json_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"not a JSON object: {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument("--datasets", nargs="+", default=[SIM, "ridgecrest", "ucerf3"],
                        choices=list(BUILTIN_DATASETS), help="datasets, in the order they run")
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    parser.add_argument("--decoders", nargs="+", default=list(DECODERS), choices=DECODERS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="training seeds (model initialisation and batch order)")
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.25, 1.0, 4.0],
                        help=f"training sizes of {SIM}, times today's training split")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model-config", type=_json_object, default={},
                        help="ModelConfig fields as a JSON object (default: its defaults)")
    parser.add_argument("--gap-loss", type=float, default=0.01,
                        help="weight of the gap head's squared error, per mean squared training "
                        "gap (so it is the same for every time unit)")
    parser.add_argument("--type-loss", type=float, default=1.0,
                        help="weight of the type head's cross-entropy; with --gap-loss 0 the "
                        "models train on the negative log-likelihood alone, as EasyTPP's do")
    parser.add_argument("--data-seed", type=int, default=0,
                        help=f"seed of the {SIM} simulation and of the ucerf3 split")
    parser.add_argument("--train-sequences", type=int, default=None,
                        help="use the first N sequences of each training split (default: all)")
    parser.add_argument("--eval-sequences", type=int, default=None,
                        help="use the first N sequences of each dev and test split (default: all)")
    add_run_options(parser)
    return parser


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options every TPP benchmark script shares: threads, sitting size, quiet, quick."""
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (as `neuraltpp train`: these models are small "
                        "and extra threads mostly contend)")
    parser.add_argument("--max-runs", type=int, default=None,
                        help="stop after this many new runs (a sitting's worth)")
    parser.add_argument("--quiet", dest="progress", action="store_false")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run with tiny sizes {QUICK} (overrides those options)")


def run_cli(main: Callable[[], None]) -> None:
    """Run a benchmark's ``main``; its one-line errors (SystemExit with a message: a bad option,
    settings that differ from the runs there, unreadable data) exit with status 2."""
    try:
        main()
    except SystemExit as err:
        if not isinstance(err.code, str):
            raise
        print(err.code, file=sys.stderr)
        raise SystemExit(2) from None


class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks and shows each option's default."""


def main() -> None:
    """Run the missing runs in plan order, each into its own JSON file; write meta.json."""
    args = _parser().parse_args()
    if args.quick:
        vars(args).update(QUICK)
    settings = _settings(args)
    torch.set_num_threads(args.threads)
    plain = json.loads(json.dumps(asdict(settings)))
    check_meta(args.out, plain)
    write_meta(args.out, plain, args.seeds, data_seed=args.data_seed)
    todo = [s for s in plan(args.datasets, args.sizes, args.models, args.decoders, args.seeds)
            if not run_path(args.out, s).exists()][: args.max_runs]
    loaded: dict[str, Data] = {}
    sets: dict[tuple[str, float], EventDataset] = {}
    for spec in tqdm(todo, desc="tpp runs", disable=not args.progress):
        if spec.dataset not in loaded:
            try:
                loaded[spec.dataset] = load_data(spec.dataset, settings)
            except (DataError, FetchError) as err:
                raise SystemExit(f"error: {spec.dataset}: {err}") from None
        data = loaded[spec.dataset]
        key = (spec.dataset, spec.size)
        if key not in sets:
            sets[key] = training_set(data, spec.size, settings.data_seed)
        record = run_once(spec, data, sets[key], settings)
        write_json(asdict(record), run_path(args.out, spec))


if __name__ == "__main__":
    run_cli(main)
