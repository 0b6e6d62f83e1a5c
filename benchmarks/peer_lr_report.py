"""Each library's best model at the learning rate its own dev LL picks: neuraltpp against EasyTPP.

The peer comparison (`easytpp_peer.py`) trains both libraries at one learning rate. A library
tuned at that rate and the other not would make the comparison about the rate. Here each library
picks its rate from the runs given, by its own dev LL per event (mean over seeds, in its own
convention: neuraltpp's best-epoch dev LL, EasyTPP's best dev `loglike`), so the test split stays
out of the choice; the chosen rates are then compared on test under neuraltpp's likelihood
convention, per seed and on the mean.

Reads bench_tpp.py result folders (--neuraltpp, one per rate; `runs/hawkes-sim/<model>-x1-seed*`)
and easytpp_peer.py result folders (--easytpp, one per rate and seed); writes
<out>/peer_lr_report.json, .md and .png.

    python benchmarks/peer_lr_report.py --out benchmarks/results/tpp/peer-lr \\
        --neuraltpp benchmarks/results/tpp benchmarks/results/tpp-lr1e-3 \\
        --easytpp benchmarks/results/tpp/easytpp benchmarks/results/tpp/easytpp-seed1 ...
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from bench_tpp import SIM, run_cli
from commonio.atomic import atomic_write, write_text
from tpp_report import cell, stat

SAME = ("epochs", "batch_size", "data_seed")  # settings every folder must share


def _check(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries, refused (SystemExit naming the files) if two share a rate and seed or if
    their training settings differ."""
    for key in SAME:
        values = {e["settings"][key] for e in entries}
        if len(values) > 1:
            files = ", ".join(e["file"] for e in entries)
            raise SystemExit(f"error: runs of different {key} ({sorted(values)}): {files}")
    seen: dict[tuple[float, int], str] = {}
    for e in entries:
        if (e["lr"], e["seed"]) in seen:
            raise SystemExit(f"error: lr {e['lr']:g} seed {e['seed']} twice: "
                             f"{seen[e['lr'], e['seed']]} and {e['file']}")
        seen[e["lr"], e["seed"]] = e["file"]
    return entries


def neuraltpp_runs(folders: list[Path], model: str) -> list[dict[str, Any]]:
    """One entry per (rate, seed) of ``model`` (e.g. mhp-exact-decay) at training size x1."""
    entries = []
    for folder in folders:
        settings = json.loads((folder / "meta.json").read_text())["settings"]
        for path in sorted((folder / "runs" / SIM).glob(f"{model}-x1-seed*.json")):
            run = json.loads(path.read_text())
            entries.append({"lr": settings["lr"], "seed": run["seed"], "settings": settings,
                            "dev": run["best_dev_ll_per_event"],
                            "test": run["test"]["likelihood"]["ll_per_event"],
                            "file": str(path)})
    return _check(entries)


def easytpp_runs(folders: list[Path], model: str) -> list[dict[str, Any]]:
    """One entry per easytpp_peer.py folder that holds ``model`` (e.g. NHP)."""
    entries = []
    for folder in folders:
        path = folder / "easytpp_peer.json"
        peer = json.loads(path.read_text())
        if model not in peer["models"]:
            continue
        result, settings = peer["models"][model], peer["settings"]
        entries.append({"lr": settings["lr"], "seed": settings["seed"], "settings": settings,
                        "dev": result["best_dev_ll_per_event"],
                        "test": result["test_conventions"]["neuraltpp"]["ll_per_event"],
                        "file": str(path)})
    return _check(entries)


def choose(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Per rate: seeds, dev and test LL; the rate with the best mean dev LL among those run at
    every seed that any rate has (a rate still missing seeds is shown, not chosen)."""
    rates = {}
    for lr in sorted({e["lr"] for e in entries}):
        runs = sorted((e for e in entries if e["lr"] == lr), key=lambda e: e["seed"])
        rates[lr] = {"seeds": [e["seed"] for e in runs], "dev": [e["dev"] for e in runs],
                     "test": [e["test"] for e in runs]}
    if not rates:
        raise SystemExit("error: no runs found in the folders given")
    seeds = {e["seed"] for e in entries}
    complete = [lr for lr, r in rates.items() if set(r["seeds"]) == seeds]
    best = max(complete, key=lambda lr: np.mean(rates[lr]["dev"]))
    return {"rates": rates, "complete": complete, "chosen_lr": best}


def report(neuraltpp: dict[str, Any], easytpp: dict[str, Any]) -> dict[str, Any]:
    """The two choices side by side on test, on the seeds both have; and at every rate both
    ran, the difference of the mean test LLs (ours minus theirs)."""
    ours, theirs = (side["rates"][side["chosen_lr"]] for side in (neuraltpp, easytpp))
    seeds = sorted(set(ours["seeds"]) & set(theirs["seeds"]))
    diff = [ours["test"][ours["seeds"].index(s)] - theirs["test"][theirs["seeds"].index(s)]
            for s in seeds]
    same_rate = {lr: float(np.mean(r["test"]) - np.mean(easytpp["rates"][lr]["test"]))
                 for lr, r in neuraltpp["rates"].items() if lr in easytpp["rates"]}
    return {"seeds": seeds, "difference_per_seed": diff, "same_rate_difference": same_rate,
            "difference_mean": float(np.mean(diff)) if diff else math.nan,
            "ours_at_least_theirs": bool(diff) and float(np.mean(diff)) >= 0}


def to_markdown(result: dict[str, Any]) -> str:
    """The report's table of rates per library and the comparison of the picks."""
    lines = ["# Learning rate picked on dev, per library: neuraltpp against EasyTPP", "",
             f"Data: `{SIM}` at x1 (the identical splits). Each library's rate is the one with the "
             "best mean dev LL per event over its seeds, in its own convention; test LL per event "
             "under neuraltpp's convention (first event conditioned on, tail included), mean ± "
             "std over seeds. Written by `benchmarks/peer_lr_report.py`.", "",
             "| library, model | lr | seeds | dev LL (own convention) | test LL | chosen |",
             "|---|---|---|---|---|---|"]
    for side in ("neuraltpp", "easytpp"):
        info = result[side]
        for lr, r in info["rates"].items():
            lines.append(f"| {side} {info['model']} | {lr:g} | {len(r['seeds'])} | "
                         f"{cell(stat(r['dev']))} | {cell(stat(r['test']))} | "
                         f"{'yes' if lr == info['chosen_lr'] else ''}"
                         f"{'' if lr in info['complete'] else 'seeds missing'} |")
    c = result["comparison"]
    per_seed = ", ".join(f"{s}: {d:+.4f}" for s, d in zip(c["seeds"], c["difference_per_seed"],
                                                          strict=True))
    lines += ["", f"Test LL of neuraltpp's choice minus EasyTPP's, per seed ({per_seed}); "
              f"mean **{c['difference_mean']:+.4f}** nats/event: our best ≥ EasyTPP's best is "
              f"**{'met' if c['ours_at_least_theirs'] else 'MISSED'}** at the rates each picked. "
              "At the same rate, mean test LL of ours minus theirs: "
              + ", ".join(f"lr {lr:g}: {d:+.4f}" for lr, d in c["same_rate_difference"].items())
              + ".",
              "", "![test LL per rate](peer_lr_report.png)", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Test LL per seed against the learning rate, one marker per library."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    for side, marker in (("neuraltpp", "o"), ("easytpp", "s")):
        info = result[side]
        for lr, r in info["rates"].items():
            ax.scatter([lr] * len(r["test"]), r["test"], marker=marker, alpha=0.6,
                       color="C0" if side == "neuraltpp" else "C1",
                       label=f"{side} {info['model']}" if lr == min(info["rates"]) else None)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("test LL per event (nats)")
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))


def main() -> None:
    """Read the folders, pick each library's rate and write the report."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the report")
    parser.add_argument("--neuraltpp", type=Path, nargs="+", required=True,
                        help="bench_tpp.py result folders, one per learning rate")
    parser.add_argument("--easytpp", type=Path, nargs="+", required=True,
                        help="easytpp_peer.py result folders, one per learning rate and seed")
    parser.add_argument("--model", default="mhp-exact-decay", help="neuraltpp model-decoder")
    parser.add_argument("--peer-model", default="NHP", help="EasyTPP model")
    args = parser.parse_args()
    for folder in [*args.neuraltpp, *args.easytpp]:
        if not folder.is_dir():
            raise SystemExit(f"error: {folder}: no such results folder")
    ours = choose(neuraltpp_runs(args.neuraltpp, args.model)) | {"model": args.model}
    theirs = choose(easytpp_runs(args.easytpp, args.peer_model)) | {"model": args.peer_model}
    result = {"neuraltpp": ours, "easytpp": theirs, "comparison": report(ours, theirs)}
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "peer_lr_report.json", json.dumps(result, indent=2) + "\n")
    write_text(args.out / "peer_lr_report.md", to_markdown(result))
    plot(result, args.out / "peer_lr_report.png")
    print((args.out / "peer_lr_report.md").read_text())


if __name__ == "__main__":
    run_cli(main)
