"""Benchmark: the RoTHP and MHP papers' robustness protocols under the correct likelihood.

On the simulated Hawkes set (`hawkes-sim`, true process known), for THP, RoTHP and MHP (--models)
with the decay decoder (--decoders; the better one in bench_tpp.py), each trained as bench_tpp.py
trains (`neuraltpp.training.train`, best epoch by dev LL) on four training sets:

- clean: today's training split. Scored on the test split with every time and window shifted by
  each σ of --shifts (timestamp translation).
- noise: the training times plus N(0, ε²) noise (ε = --noise; `neuraltpp.protocols.jitter_times`),
  dev and test clean.
- future: the first --future share of each training (and dev) sequence's window; scored on the
  rest of each test sequence given its history (`neuraltpp.protocols.future_log_likelihood`).
- short: the first --short share of each window; scored on the whole test sequences
  (train-short/test-long).

Every score is computed twice: with the correct likelihood (the project's default) and with
the published codes' legacy one (`--ll-mode legacy`), which is what the papers reported. The
true process is scored the same way (correct only). The claims each protocol tests, and whether
they hold under each likelihood, are in the report, written after every run.

Each finished run is one JSON file under <out>/runs/; a rerun skips it (a run with other
settings is refused).

    python benchmarks/bench_tpp_protocols.py --out benchmarks/results/tpp-protocols [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from bench_tpp import (
    QUICK,
    SIM,
    Data,
    Formatter,
    Settings,
    add_run_options,
    check_meta,
    load_data,
    run_cli,
    train_config,
    write_meta,
)
from commonio.atomic import atomic_write, write_text
from neuraltpp import hawkes
from neuraltpp.data import EventDataset, future_split
from neuraltpp.likelihood import LikelihoodOptions, dataset_log_likelihood
from neuraltpp.metrics import write_json
from neuraltpp.models import MODEL_NAMES
from neuraltpp.models.config import DECODERS
from neuraltpp.protocols import future_log_likelihood, jitter_times, shift_times
from neuraltpp.training import train
from tpp_report import LABELS, cell, stat

TRAIN_SETS = ("clean", "noise", "future", "short")
MODELS = ("thp", "rothp", "mhp")
CORRECT, LEGACY = LikelihoodOptions(), LikelihoodOptions(mode="legacy")
Score = Callable[[EventDataset], tuple[float, int]]


def model_score(model: torch.nn.Module, options: LikelihoodOptions) -> Score:
    """(summed LL, scored events) of a dataset under a trained model."""

    def score(ds: EventDataset) -> tuple[float, int]:
        ll = dataset_log_likelihood(model, ds, options)
        return ll.total, ll.n_events

    return score


def truth_score(data: Data) -> Score:
    """(summed LL, scored events) under the true process (correct likelihood)."""
    assert data.params is not None

    def score(ds: EventDataset) -> tuple[float, int]:
        ll = hawkes.log_likelihood(data.params, ds, CORRECT)
        return float(ll.total.sum()), int(ll.n_events.sum())

    return score


def training_sets(data: Data, args: argparse.Namespace) -> dict[str, tuple[EventDataset, ...]]:
    """(train, dev) of each training set."""
    train, dev = data.splits["train"], data.splits["dev"]

    def prefix(share: float) -> tuple[EventDataset, EventDataset]:
        return future_split(train, share).prefix, future_split(dev, share).prefix

    return {"clean": (train, dev), "noise": (jitter_times(train, args.noise, args.data_seed), dev),
            "future": prefix(args.future), "short": prefix(args.short)}


def scores(score: Score, test: EventDataset, train_set: str, args: argparse.Namespace) -> dict:
    """The test scores (nats/event) this training set's protocol reports."""
    if train_set == "clean":  # the reference: translated, and its future LL
        out = {}
        for sigma in args.shifts:
            total, n = score(shift_times(test, sigma))
            out[f"shift={sigma:g}"] = total / n
        return out | {"future": future_log_likelihood(score, test, args.future).ll_per_event}
    if train_set == "future":
        return {"future": future_log_likelihood(score, test, args.future).ll_per_event}
    total, n = score(test)
    return {"test": total / n}


def run_name(model: str, decoder: str, train_set: str, seed: int) -> str:
    """File stem of one run."""
    return f"{model}-{decoder}-{train_set}-seed{seed}"


def one_run(model: str, decoder: str, train_set: str, seed: int, data: Data,
            sets: dict[str, tuple[EventDataset, ...]], settings: Settings,
            args: argparse.Namespace) -> dict[str, Any]:
    """Train one model on one training set and score its protocol both ways."""
    train_ds, dev_ds = sets[train_set]
    config = train_config(settings, data, model, decoder, seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-tpp-protocols-") as work:
        result = train(config, train_ds, dev_ds, work, resume=False, progress=False)
    seconds = time.perf_counter() - start
    test = data.splits["test"]
    return {
        "model": model, "decoder": decoder, "train_set": train_set, "seed": seed,
        "n_train_sequences": len(train_ds), "n_train_events": train_ds.n_events,
        "best_epoch": result.best_epoch, "seconds": seconds,
        # test sequences without an event before the cut: no history, so not in "future"
        "future_excluded": future_split(test, args.future).excluded,
        "correct": scores(model_score(result.model, CORRECT), test, train_set, args),
        "legacy": scores(model_score(result.model, LEGACY), test, train_set, args),
        "train_config": config.to_dict(),
    }


def truth_record(data: Data, args: argparse.Namespace) -> dict[str, Any]:
    """The true process's score under every protocol (correct likelihood)."""
    score, test = truth_score(data), data.splits["test"]
    correct = {}
    for train_set in ("clean", "short"):
        correct |= scores(score, test, train_set, args)
    return {"model": "truth", "correct": correct,
            "future_excluded": future_split(test, args.future).excluded}


# ----------------------------------------------------------------------------- report


def _cell(values: list[float]) -> str:
    """Mean ± sample std of the seeds' values, "—" when no run has finished."""
    return cell(stat(values)) if values else "—"


def collect(out: Path) -> tuple[dict | None, dict[tuple[str, str, str], list[dict]]]:
    """The truth record and the finished runs grouped by (model, decoder, training set)."""
    truth_path = out / "runs" / "truth.json"
    truth = json.loads(truth_path.read_text()) if truth_path.exists() else None
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for path in sorted((out / "runs").glob("*-seed*.json")):
        r = json.loads(path.read_text())
        groups.setdefault((r["model"], r["decoder"], r["train_set"]), []).append(r)
    return truth, groups


def claims(groups: dict, decoder: str, shifts: list[float]) -> list[dict[str, Any]]:
    """Each paper claim a protocol tests, judged under each likelihood: per seed, the margin
    by which it holds (nats/event, > 0: holds); its mean and std over seeds. None while a run it
    needs is missing. Translation invariance is judged on the seed means (no margin)."""

    def per_seed(model: str, train_set: str, mode: str, column: str) -> dict[int, float]:
        return {r["seed"]: r[mode][column] for r in groups.get((model, decoder, train_set), [])}

    def margins(parts: list[dict[int, float]], combine: Callable[..., float]) -> list[float]:
        seeds = sorted(set.intersection(*(set(p) for p in parts))) if parts else []
        return [combine(*(p[seed] for p in parts)) for seed in seeds]

    def verdict(values: list[float]) -> dict[str, Any] | None:
        if not values:
            return None
        s = stat(values)
        return {"holds": s.mean > 0, "margin": s.mean, "std": s.std, "seeds": s.n}

    def invariant(mode: str) -> dict[str, Any] | None:
        def spread(model: str) -> float | None:
            runs = groups.get((model, decoder, "clean"), [])
            if not runs:
                return None
            means = [stat([r[mode][f"shift={s:g}"] for r in runs]).mean for s in shifts]
            return max(abs(m - means[0]) for m in means)
        rothp, thp = spread("rothp"), spread("thp")
        if rothp is None or thp is None:
            return None
        return {"holds": rothp < 1e-3 < thp, "rothp_spread": rothp, "thp_spread": thp}

    def better(model: str, train_set: str, column: str, than: str) -> Callable[[str], Any]:
        def test(mode: str) -> dict[str, Any] | None:
            parts = [per_seed(model, train_set, mode, column), per_seed(than, train_set, mode,
                                                                         column)]
            return verdict(margins(parts, lambda a, b: a - b))
        return test

    def robust(mode: str) -> dict[str, Any] | None:
        parts = [per_seed(m, t, mode, c) for m in ("rothp", "thp")
                 for t, c in (("noise", "test"), ("clean", "shift=0"))]
        return verdict(margins(parts, lambda rn, rc, tn, tc: (rn - rc) - (tn - tc)))

    def mhp_best(mode: str) -> dict[str, Any] | None:
        parts = [per_seed(m, "clean", mode, "shift=0") for m in ("mhp", "thp", "rothp")]
        return verdict(margins(parts, lambda mhp, *others: mhp - max(others)))

    def judge(test: Callable[[str], dict[str, Any] | None]) -> dict[str, Any]:
        return {mode: test(mode) for mode in ("correct", "legacy")}

    return [
        {"protocol": "translation", "claim": "RoTHP's test LL is unchanged by shifting the "
         "timestamps (by less than 1e-3 nats/event at every σ); THP's is not", **judge(invariant)},
        {"protocol": "noise", "claim": "noise on the training timestamps costs RoTHP no more "
         "test LL than THP", **judge(robust)},
        {"protocol": "future", "claim": "RoTHP predicts the last part of each sequence better "
         "than THP", **judge(better("rothp", "future", "future", "thp"))},
        {"protocol": "short→long", "claim": "trained on short sequences, RoTHP scores long "
         "ones better than THP", **judge(better("rothp", "short", "test", "thp"))},
        {"protocol": "clean", "claim": "MHP has the best test LL of THP, RoTHP and MHP",
         **judge(mhp_best)},
    ]


def claim_cell(judged: dict[str, Any] | None) -> str:
    """yes / **no** with the margin ± its std over seeds; "within noise" when the margin is
    smaller than that std; "not yet run" while a run is missing."""
    if judged is None:
        return "not yet run"
    if "margin" not in judged:
        return (f"{'yes' if judged['holds'] else '**no**'} (RoTHP moves "
                f"{judged['rothp_spread']:.1e}, THP {judged['thp_spread']:.3f})")
    margin, std = judged["margin"], judged["std"]
    detail = f"{margin:+.4f}" + ("" if math.isnan(std) else f" ± {std:.4f}")
    detail += f", {judged['seeds']} seed{'s' if judged['seeds'] > 1 else ''}"
    if not math.isnan(std) and abs(margin) < std:
        return f"within noise ({detail})"
    return f"{'yes' if judged['holds'] else '**no**'} ({detail})"


def _plot(groups: dict, truth: dict | None, shifts: list[float], decoders: list[str],
          path: Path) -> None:
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharey=False)
    x = [max(s, 1e-2) for s in shifts]  # σ = 0 drawn at 0.01 on the log axis
    for ax, mode in zip(axes, ("correct", "legacy"), strict=True):
        for (model, decoder, train_set), runs in sorted(groups.items()):
            if train_set != "clean" or decoder not in decoders:
                continue
            y = [stat([r[mode][f"shift={s:g}"] for r in runs]).mean for s in shifts]
            ax.plot(x, y, marker="o", label=f"{LABELS[model]} ({decoder})")
        if truth is not None and mode == "correct":
            ax.plot(x, [truth["correct"][f"shift={s:g}"] for s in shifts], "k--", label="truth")
        ax.set_xscale("log")
        ax.set_xlabel("shift σ of the test timestamps (σ = 0 at 0.01)")
        ax.set_ylabel(f"test LL per event ({mode} likelihood)")
        ax.set_title(f"timestamp translation, {mode} likelihood", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))


def write_report(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """protocols_report.json/.md and the translation plot from the finished runs."""
    truth, groups = collect(out)
    shifts = list(args.shifts)
    shift_cols = [f"shift={s:g}" for s in shifts]
    lines = ["# Robustness protocols: THP vs RoTHP vs MHP under the correct likelihood", "",
             f"Simulated Hawkes set (`{SIM}`), test split; nats per event, mean ± std over "
             f"seeds. Noise ε = {args.noise:g} on the training times; future: trained on the "
             f"first {args.future:g} of each window, scored on the rest given the history (test "
             f"sequences with no event before the cut: "
             f"{len(truth['future_excluded']) if truth and 'future_excluded' in truth else 'n/a'}"
             "); "
             f"short: trained on the first {args.short:g}, scored on whole sequences. "
             "Legacy: the published codes' likelihood, as the papers reported it.", ""]
    report: dict[str, Any] = {"truth": truth, "runs": {"-".join(k): v for k, v in groups.items()},
                              "claims": {}}
    keys = sorted({(m, d) for m, d, _ in groups})
    for mode in ("correct", "legacy"):
        lines += [f"## Timestamp translation ({mode} likelihood)", "",
                  "| model | " + " | ".join(f"σ = {s:g}" for s in shifts) + " |",
                  "|---|" + "---|" * len(shifts)]
        if truth is not None and mode == "correct":
            lines.append("| true process | " + " | ".join(
                f"{truth['correct'][c]:.4f}" for c in shift_cols) + " |")
        for model, decoder in keys:
            runs = groups.get((model, decoder, "clean"), [])
            lines.append(f"| {LABELS[model]} ({decoder}) | " + " | ".join(
                _cell([r[mode][c] for r in runs]) for c in shift_cols) + " |")
        lines.append("")
    lines += ["## Noise, future and short→long", "",
              "| model | likelihood | clean | noisy training | future (clean training) | "
              "future (future training) | short→long | seeds |", "|---|" + "---|" * 7]
    if truth is not None:
        t = truth["correct"]
        lines.append(f"| true process | correct | {t['shift=0']:.4f} | — | {t['future']:.4f} | "
                     f"{t['future']:.4f} | {t['test']:.4f} | — |")  # test: the whole split
    for model, decoder in keys:
        for mode in ("correct", "legacy"):
            def col(train_set: str, column: str, model=model, decoder=decoder, mode=mode) -> str:
                return _cell([r[mode][column] for r in groups.get((model, decoder, train_set), [])])
            seeds = len(groups.get((model, decoder, "clean"), []))
            cells = [col("clean", "shift=0"), col("noise", "test"), col("clean", "future"),
                     col("future", "future"), col("short", "test"), str(seeds)]
            lines.append(f"| {LABELS[model]} ({decoder}) | {mode} | " + " | ".join(cells) + " |")
    lines += ["", "Clean: whole-sequence test LL of the model trained on today's split; future "
              "(clean training): the same model's LL of the last part given the history, the "
              "reference for a model that saw the whole sequences.", ""]
    for decoder in sorted({d for _, d in keys}):
        found = claims(groups, decoder, shifts)
        report["claims"][decoder] = found
        lines += [f"## The papers' claims ({decoder} decoder)", "",
                  "| protocol | claim | holds (correct LL): margin | holds (legacy LL): margin |",
                  "|---|---|---|---|"]
        lines += [f"| {c['protocol']} | {c['claim']} | {claim_cell(c['correct'])} | "
                  f"{claim_cell(c['legacy'])} |" for c in found]
        lines.append("")
    lines += ["![translation](protocols_translation.png)", ""]
    write_json(report, out / "protocols_report.json")
    write_text(out / "protocols_report.md", "\n".join(lines))
    if groups:
        _plot(groups, truth, shifts, list(args.decoders), out / "protocols_translation.png")
    return report


# ----------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODEL_NAMES)
    parser.add_argument("--decoders", nargs="+", default=["decay"], choices=DECODERS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shifts", type=float, nargs="+", default=[0, 0.2, 1, 10, 1e3, 1e6],
                        help="shifts σ of the test timestamps (0 first: the reference)")
    parser.add_argument("--noise", type=float, default=0.01, help="std ε of the training noise")
    parser.add_argument("--future", type=float, default=0.7,
                        help="share of each window trained on in the future protocol")
    parser.add_argument("--short", type=float, default=0.3,
                        help="share of each window trained on in the short→long protocol")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--gap-loss", type=float, default=0.01)
    parser.add_argument("--data-seed", type=int, default=0)
    add_run_options(parser)
    return parser


def main() -> None:
    """Run the missing runs (first seed first), rewriting the report after each."""
    args = _parser().parse_args()
    quick = dict(QUICK) if args.quick else {}
    if args.quick:
        args.epochs = QUICK["epochs"]
    if args.shifts[0] != 0:
        raise SystemExit(f"error: --shifts must start with 0 (the reference), got {args.shifts}")
    for name in ("future", "short"):
        if not 0 < getattr(args, name) < 1:
            raise SystemExit(f"error: --{name} must be in (0, 1), got {getattr(args, name)}")
    settings = Settings(
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        model_config=quick.get("model_config", {}), gap_loss=args.gap_loss,
        data_seed=args.data_seed, train_sequences=quick.get("train_sequences"),
        eval_sequences=quick.get("eval_sequences"),
    )
    torch.set_num_threads(args.threads)
    plain = {**json.loads(json.dumps(asdict(settings))), "noise": args.noise,
             "future": args.future, "short": args.short, "shifts": args.shifts}
    check_meta(args.out, plain)
    write_meta(args.out, plain, args.seeds)
    data = load_data(SIM, settings)
    truth_path = args.out / "runs" / "truth.json"
    if not truth_path.exists():
        write_json(truth_record(data, args), truth_path)
    sets = training_sets(data, args)
    todo = [(m, d, t, s) for s in args.seeds for m in args.models for d in args.decoders
            for t in TRAIN_SETS
            if not (args.out / "runs" / f"{run_name(m, d, t, s)}.json").exists()]
    for model, decoder, train_set, seed in tqdm(todo[: args.max_runs], desc="protocol runs",
                                                disable=not args.progress):
        record = one_run(model, decoder, train_set, seed, data, sets, settings, args)
        write_json(record, args.out / "runs" / f"{run_name(model, decoder, train_set, seed)}.json")
        write_report(args.out, args)
    write_report(args.out, args)


if __name__ == "__main__":
    run_cli(main)
