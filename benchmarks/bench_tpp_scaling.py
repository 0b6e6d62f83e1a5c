"""Benchmark: forward+backward time and peak memory of one sequence against its length (issue 12).

For each model (THP, RoTHP, MHP, MHP-E, MHP-exact; `ModelConfig` defaults, the `thp` decoder unless
--decoder) and length L (default 128, 512, 2048, 8192), one child process builds the model and
one synthetic 5-type sequence of L events (exponential gaps, mean 1), then times the training
step's work: the loss of `neuraltpp.training.batch_loss` (the correct likelihood with its
Gauss-Legendre compensator, plus the type head's cross-entropy) and its backward pass, batch 1.
The time is the median of --repeats such steps after one warm-up step; the memory is the
child's peak RSS (Linux VmHWM) above its RSS before the first step, and its whole peak. The
exponent of time in L is the least-squares slope of log time on log L over the lengths ≥ 512
(below that, fixed costs dominate).

Each (model, L) is one JSON file under <out>/runs/ and a rerun skips it; the report
(<out>/tpp_scaling.json, .md, .png) is rewritten from whatever has finished.

    python benchmarks/bench_tpp_scaling.py --out benchmarks/results/tpp-scaling [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from commonio.atomic import write_text
from commonio.process import peak_rss_bytes, rss_bytes
from neuraltpp.data.batching import pad_sequences
from neuraltpp.data.containers import EventSequence
from neuraltpp.models import MODEL_NAMES, build_model
from neuraltpp.training import TrainConfig, batch_loss
from tpp_report import LABELS

NUM_TYPES = 5  # as the simulated Hawkes set
MIB = 2**20


def sequence(length: int, seed: int = 0) -> EventSequence:
    """L events with exponential gaps of mean 1 and uniformly random types."""
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(1.0, length))
    return EventSequence(times=times, types=rng.integers(0, NUM_TYPES, length), seq_id="synthetic")


def measure(model_name: str, length: int, repeats: int, decoder: str) -> dict[str, Any]:
    """Time and memory of forward+backward of one sequence (run in a fresh process)."""
    torch.manual_seed(0)
    model = build_model(model_name, NUM_TYPES, {"decoder": decoder})
    model.train()
    config = TrainConfig(model=model_name, model_config={"decoder": decoder})
    batch = pad_sequences([sequence(length)])
    start_rss = rss_bytes() or 0
    seconds = []
    for _ in range(repeats + 1):  # the first is a warm-up
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss, _, _ = batch_loss(model, batch, config)
        loss.backward()
        seconds.append(time.perf_counter() - start)
    peak = peak_rss_bytes()
    return {"model": model_name, "decoder": decoder, "length": length, "repeats": repeats,
            "seconds": statistics.median(seconds[1:]), "all_seconds": seconds,
            "peak_rss_bytes": peak, "peak_above_start_bytes": peak - start_rss,
            "threads": torch.get_num_threads()}  # fmt: skip


def exponent(rows: list[dict[str, Any]]) -> float:
    """Slope of log(seconds) on log(L) over L >= 512 (NaN with fewer than two such lengths)."""
    use = [r for r in rows if r["length"] >= 512]
    if len(use) < 2:
        return float("nan")
    x = np.log([r["length"] for r in use])
    y = np.log([r["seconds"] for r in use])
    return float(np.polyfit(x, y, 1)[0])


def report(out: Path, records: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    """tpp_scaling.json, .md and .png from the finished runs."""
    models = [m for m in MODEL_NAMES if any(r["model"] == m for r in records)]
    lengths = sorted({r["length"] for r in records})
    by = {(r["model"], r["length"]): r for r in records}
    exponents = {m: exponent([r for r in records if r["model"] == m]) for m in models}
    lines = ["# TPP scaling: forward+backward of one sequence against its length", "",
             f"Settings: {settings}. Time: median of the repeats after a warm-up, seconds; "
             "memory: peak RSS above the RSS before the first step, MiB (the whole process's "
             "peak in brackets). Exponent: slope of log time on log L over L ≥ 512.", "",
             "| model | " + " | ".join(f"L = {n}: s" for n in lengths)
             + " | " + " | ".join(f"L = {n}: MiB" for n in lengths) + " | exponent |",
             "|---|" + "---|" * (2 * len(lengths) + 1)]  # fmt: skip
    for m in models:
        times = [f"{by[m, n]['seconds']:.3f}" if (m, n) in by else "" for n in lengths]
        memory = [f"{by[m, n]['peak_above_start_bytes'] / MIB:.0f} "
                  f"({by[m, n]['peak_rss_bytes'] / MIB:.0f})" if (m, n) in by else ""
                  for n in lengths]
        lines.append(f"| {LABELS[m]} | " + " | ".join(times) + " | " + " | ".join(memory)
                     + f" | {exponents[m]:.2f} |")
    result = {"settings": settings, "runs": records, "exponents": exponents}
    write_text(out / "tpp_scaling.json", json.dumps(result, indent=2) + "\n")
    write_text(out / "tpp_scaling.md", "\n".join(lines) + "\n")
    fig = Figure(figsize=(9, 3.8))
    ax_t, ax_m = fig.subplots(1, 2)
    for m in models:
        rows = sorted((r for r in records if r["model"] == m), key=lambda r: r["length"])
        ls = [r["length"] for r in rows]
        ax_t.loglog(ls, [r["seconds"] for r in rows], marker="o",
                    label=f"{LABELS[m]} (exponent {exponents[m]:.2f})")
        ax_m.loglog(ls, [max(r["peak_above_start_bytes"], MIB) / MIB for r in rows], marker="o",
                    label=LABELS[m])
    ax_t.set(xlabel="sequence length L", ylabel="forward+backward, s")
    ax_m.set(xlabel="sequence length L", ylabel="peak RSS above start, MiB")
    ax_t.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "tpp_scaling.png", dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 2048, 8192],
                        help="sequence lengths (default 128 512 2048 8192)")
    parser.add_argument("--decoder", default="thp", choices=["thp", "decay"],
                        help="intensity decoder of every model (default thp)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="smoke run: lengths 16 and 64")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # MODEL L, in a child
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.lengths, args.repeats = [16, 64], 1
    if args.child is not None:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.repeats, args.decoder)))
        return 0
    if min(args.lengths) < 2 or args.repeats < 1 or args.threads < 1:
        raise SystemExit("error: --lengths must be >= 2, --repeats and --threads >= 1")
    settings = {"decoder": args.decoder, "repeats": args.repeats, "threads": args.threads,
                "num_types": NUM_TYPES, "model_config": "ModelConfig defaults",
                "torch": torch.__version__}  # fmt: skip
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    todo = [(m, n) for n in sorted(args.lengths) for m in args.models]
    for model_name, length in tqdm(todo, desc="tpp scaling", disable=args.quiet):
        path = args.out / "runs" / f"{model_name}-{args.decoder}-L{length}.json"
        if path.exists():
            continue
        command = [sys.executable, __file__, *sys.argv[1:], "--child", model_name, str(length)]
        proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"error: {model_name} at L = {length} failed ({proc.returncode})")
        write_text(path, proc.stdout.strip().splitlines()[-1] + "\n")
    records = [json.loads(p.read_text()) for p in sorted((args.out / "runs").glob("*.json"))]
    records = [r for r in records if r["decoder"] == args.decoder]
    report(args.out, records, settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
