"""Report of the TPP benchmark: test LL per event, predictions and cost per model and decoder.

Reads <out>/runs/<dataset>/*.json and <out>/meta.json (bench_tpp.py) and writes
tpp_report.json, tpp_report.md and plots: per dataset, test LL per event of every model ×
decoder (mean ± std over seeds); on the simulated set, the learning curve (gap to the true
process vs training size, one line per model and decoder, and the Hawkes fit), and the target
of issue 12 item 1: the neural model with the best dev LL (model, decoder and training size
chosen on the dev split, mean over seeds) within 0.02 nats/event of the truth on the test
split, marked met or MISSED with its numbers. Everything is computed
from the runs that have finished.

    python benchmarks/tpp_report.py --out benchmarks/results/tpp
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from bench_tpp import HAWKES_FIT, SIM, TRUTH
from commonio.atomic import atomic_write, write_text
from neuraltpp.metrics import write_json
from neuraltpp.models import MODEL_NAMES
from neuraltpp.models.config import DECODERS

TARGET_GAP = 0.02  # nats/event below the truth (issue 12, item 1)
LABELS = {"thp": "THP", "rothp": "RoTHP", "mhp": "MHP", "mhpe": "MHP-E",
          "mhp-exact": "MHP-exact",
          HAWKES_FIT: "Hawkes MLE fit", TRUTH: "true process"}
ORDER = (TRUTH, HAWKES_FIT, *MODEL_NAMES)


@dataclass
class Stat:
    """Mean and sample standard deviation (ddof 1; NaN for one value) over seeds."""

    mean: float
    std: float
    n: int


def stat(values: list[float]) -> Stat:
    """Stat of the values (inf in, inf mean and NaN spread out)."""
    arr = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return Stat(float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan,
                    int(arr.size))


@dataclass
class Row:
    """One model × decoder on one training set, over its seeds."""

    dataset: str
    size: float
    model: str
    decoder: str | None
    seeds: list[int | None]
    n_train_events: int | None
    n_test_scored: int
    time_scale: float
    ll_per_event: Stat
    gap_to_truth: Stat | None  # LL/event minus the true process's, where known
    type_accuracy: Stat  # from the intensity: argmax of the integrated type probability
    gap_rmse: Stat  # from the intensity: the expected next gap
    head_type_accuracy: Stat | None  # from the heads (neural models only)
    head_gap_rmse: Stat | None
    best_epoch: Stat | None
    dev_ll_per_event: Stat | None  # at the best epoch (neural models only)
    epochs: int | None
    seconds: Stat  # training or fit
    seconds_per_epoch: Stat | None
    peak_rss_mib: float  # max over seeds
    rss_start_mib: float  # max over seeds
    processors: list[str]  # per seed, the CPU it was timed on ("not recorded" in older runs)
    shared_runs: int  # seeds that ended beside other processes (`shared_machine`)

    @property
    def label(self) -> str:
        """Model name and decoder as the tables show them."""
        return LABELS[self.model] + ("" if self.decoder is None else f" ({self.decoder})")


def _rmse(prediction: dict[str, Any]) -> float:
    """A stored gap RMSE; JSON holds an infinite one as null with n_infinite_gap > 0."""
    value = prediction["gap_rmse"]
    if value is None:
        return math.inf if prediction["n_infinite_gap"] else math.nan
    return float(value)


def _processor(run: dict[str, Any]) -> str:
    machine = run.get("machine")
    return machine["processor"] if machine else "not recorded"


def shared_machine(run: dict[str, Any]) -> bool:
    """Whether other processes ran beside a run at its end: its 5-minute load average
    above its torch threads + 0.5 (runs from before records kept the load count as unshared)."""
    load, machine = run.get("load_average"), run.get("machine")
    return bool(load and machine and load[1] > machine["torch_threads"] + 0.5)


def _row(group: list[dict[str, Any]], truth: float | None) -> Row:
    first = group[0]
    ll = [r["test"]["likelihood"]["ll_per_event"] for r in group]
    model = [r["test"]["model_prediction"] for r in group]
    heads = [r["test"]["head_prediction"] for r in group if r["test"]["head_prediction"]]
    neural = first["epochs"] is not None
    return Row(
        dataset=first["dataset"], size=first["size"], model=first["model"],
        decoder=first["decoder"], seeds=[r["seed"] for r in group],
        n_train_events=first["n_train_events"],
        n_test_scored=first["test"]["likelihood"]["n_events"],
        time_scale=first["test"]["likelihood"]["time_scale"],
        ll_per_event=stat(ll),
        gap_to_truth=None if truth is None else stat([v - truth for v in ll]),
        type_accuracy=stat([p["type_accuracy"] for p in model]),
        gap_rmse=stat([_rmse(p) for p in model]),
        head_type_accuracy=stat([p["type_accuracy"] for p in heads]) if heads else None,
        head_gap_rmse=stat([_rmse(p) for p in heads]) if heads else None,
        best_epoch=stat([r["best_epoch"] for r in group]) if neural else None,
        dev_ll_per_event=stat([r["best_dev_ll_per_event"] for r in group]) if neural else None,
        epochs=first["epochs"],
        seconds=stat([r["seconds"] for r in group]),
        seconds_per_epoch=stat([r["seconds_per_epoch"] for r in group]) if neural else None,
        peak_rss_mib=max(r["peak_rss_bytes"] for r in group) / 2**20,
        rss_start_mib=max(r["rss_start_bytes"] for r in group) / 2**20,
        processors=[_processor(r) for r in group],
        shared_runs=sum(shared_machine(r) for r in group),
    )


def dataset_rows(folder: Path) -> tuple[list[Row], float | None]:
    """Every model × decoder × size of one dataset (finished runs) and the truth's LL/event."""
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    truth = next((r["test"]["likelihood"]["ll_per_event"] for r in runs if r["model"] == TRUTH),
                 None)
    groups: dict[tuple[float, str, str | None], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["size"], r["model"], r["decoder"]), []).append(r)
    rows = [_row(sorted(g, key=lambda r: r["seed"] or 0), truth) for g in groups.values()]
    decoders = {d: i for i, d in enumerate(DECODERS)}
    rows.sort(key=lambda r: (r.size, ORDER.index(r.model), decoders.get(r.decoder, -1)))
    return rows, truth


def target(rows: list[Row], truth: float | None) -> dict[str, Any] | None:
    """Issue 12 item 1: the neural row of the simulated set with the best mean dev LL (any
    model, decoder and training size; the dev split is the same for all) within TARGET_GAP
    nats/event of the truth on test. Choosing on dev keeps the test split out of the choice."""
    neural = [r for r in rows if r.model in MODEL_NAMES]
    if truth is None or not neural:
        return None
    best = max(neural, key=lambda r: r.dev_ll_per_event.mean if r.dev_ll_per_event else -math.inf)
    assert best.gap_to_truth is not None
    return {
        "model": best.model, "decoder": best.decoder, "size": best.size, "seeds": best.seeds,
        "dev_ll_per_event": best.dev_ll_per_event.mean if best.dev_ll_per_event else None,
        "ll_per_event": best.ll_per_event.mean, "true_ll_per_event": truth,
        "gap": best.gap_to_truth.mean, "gap_std": best.gap_to_truth.std,
        "sizes_run": sorted({r.size for r in neural}), "required_gap": -TARGET_GAP,
        "met": best.gap_to_truth.mean >= -TARGET_GAP,
    }


def cell(s: Stat | None, digits: int = 4, signed: bool = False) -> str:
    """A table cell: the mean, and ± the sample std when there is one ("n/a" for no value)."""
    if s is None or math.isnan(s.mean):
        return "n/a"
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    mean = "inf" if math.isinf(s.mean) else fmt.format(s.mean)
    return mean if math.isnan(s.std) else f"{mean} ± {s.std:.{digits}f}"


def _table(rows: list[Row]) -> list[str]:
    lines = ["| model | seeds | test LL/event | vs truth | type acc | gap RMSE | type acc "
             "(heads) | gap RMSE (heads) | best epoch | s/epoch | peak MiB (start) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        epoch = "" if r.best_epoch is None else f"{r.best_epoch.mean:.0f}/{r.epochs}"
        seconds = (f"{r.seconds.mean:.2f} (fit)" if r.seconds_per_epoch is None
                   else cell(r.seconds_per_epoch, 2)) + ("†" if r.shared_runs else "")
        if r.model == TRUTH:
            seconds = ""
        lines.append(
            f"| {r.label} | {len(r.seeds)} | {cell(r.ll_per_event)} | "
            f"{cell(r.gap_to_truth, signed=True)} | {cell(r.type_accuracy, 3)} | "
            f"{cell(r.gap_rmse, 3)} | {cell(r.head_type_accuracy, 3)} | "
            f"{cell(r.head_gap_rmse, 3)} | {epoch} | {seconds} | "
            f"{r.peak_rss_mib:.0f} ({r.rss_start_mib:.0f}) |")
    return lines


def learning_curve(rows: list[Row]) -> dict[str, Any]:
    """Gap to the truth per training size of every model × decoder and the Hawkes fit."""
    sizes = sorted({r.size for r in rows if r.model != TRUTH})
    events = {r.size: r.n_train_events for r in rows if r.model != TRUTH}
    curves: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.model != TRUTH and r.gap_to_truth is not None:
            curve = curves.setdefault(r.label, {"model": r.model, "decoder": r.decoder,
                                                "points": {}})
            curve["points"][f"{r.size:g}"] = asdict(r.gap_to_truth)
    return {"sizes": sizes, "train_events": {f"{s:g}": events[s] for s in sizes},
            "curves": curves}


def _curve_lines(curve: dict[str, Any]) -> list[str]:
    sizes = curve["sizes"]
    head = " | ".join(f"x{s:g} ({curve['train_events'][f'{s:g}']:,} events)" for s in sizes)
    lines = [f"| model | {head} |", "|---|" + "---|" * len(sizes)]
    for label, c in curve["curves"].items():
        cells = [cell(Stat(**c["points"][f"{s:g}"]), signed=True) if f"{s:g}" in c["points"]
                 else "" for s in sizes]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def plot_curve(curve: dict[str, Any], path: Path) -> None:
    """Gap to the truth (nats/event) vs training events, one line per model and decoder."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    colors = dict(zip(MODEL_NAMES, ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3"),
                      strict=True))
    for label, c in curve["curves"].items():
        sizes = [s for s in curve["sizes"] if f"{s:g}" in c["points"]]
        x = [curve["train_events"][f"{s:g}"] for s in sizes]
        points = [c["points"][f"{s:g}"] for s in sizes]
        ax.errorbar(x, [p["mean"] for p in points],
                    yerr=[0.0 if math.isnan(p["std"]) else p["std"] for p in points],
                    label=label, marker="o", capsize=3, color=colors.get(c["model"], "black"),
                    linestyle={"thp": "-", "decay": "--"}.get(c["decoder"], "-."))
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.axhline(-TARGET_GAP, color="grey", linestyle=":", label=f"target −{TARGET_GAP}")
    ax.set_xscale("log")
    ax.set_xlabel("training events")
    ax.set_ylabel("test LL/event − true process (nats)")
    ax.set_title(f"{SIM}: gap to the truth vs training size (mean ± std over seeds)",
                 fontsize=9)
    ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1.0), loc="upper left")
    ax.grid(alpha=0.3)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def plot_dataset(dataset: str, rows: list[Row], truth: float | None, path: Path) -> None:
    """Test LL per event (mean ± std over seeds) of every model × decoder at x1, and the
    truth's where known."""
    fig = Figure(figsize=(7, 0.3 * len(rows) + 1.2))
    ax = fig.subplots()
    y = np.arange(len(rows))
    ax.errorbar([r.ll_per_event.mean for r in rows], y, fmt="o", capsize=3, color="#4c72b0",
                xerr=[0.0 if math.isnan(r.ll_per_event.std) else r.ll_per_event.std for r in rows])
    if truth is not None:
        ax.axvline(truth, color="black", linewidth=0.8, label="true process")
        ax.axvline(truth - TARGET_GAP, color="grey", linestyle=":", label=f"truth − {TARGET_GAP}")
        ax.legend(fontsize=7)
    ax.set_yticks(y, [r.label for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("test LL/event (nats; mean ± std over seeds)")
    ax.set_title(f"{dataset}: test LL per event", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def to_markdown(report: dict[str, Any], rows: dict[str, list[Row]]) -> str:
    """The report as Markdown: the target, a table per dataset, the learning curve."""
    s = report["settings"]
    lines = [
        "# TPP benchmark: neural TPPs vs the classical Hawkes fit and the true process", "",
        f"Training: {s['epochs']} epochs, lr {s['lr']}, batch {s['batch_size']}, model config "
        f"{s['model_config'] or 'ModelConfig defaults'}, type-head loss weight "
        f"{s['type_loss']}, gap-head loss weight {s['gap_loss']} per mean squared training gap, "
        f"best epoch by dev LL; seeds {report['seeds']}. Likelihood: "
        f"{s['likelihood']['mode']}, first event {s['likelihood']['first_event']}, tail "
        f"{'included' if s['likelihood']['include_tail'] else 'excluded'}. LL per event "
        "in nats, in the dataset's time unit; mean ± std (sample) over seeds. Type accuracy and "
        "gap RMSE from the intensity (expected next time, integrated type probability) and from "
        "the heads. s/epoch: training wall time / epochs (includes the dev LL and checkpoint of "
        "every epoch). Peak MiB: the process's peak resident set size during the run, max over "
        "seeds (interpreter, torch and loaded data included; its RSS at the start in brackets). "
        "†: at least one seed ended beside other processes (5-minute load average above its "
        "torch threads + 0.5), which share the cores or the memory bandwidth and may have "
        "slowed it.",
        f"Machine of the latest invocation: {report['machine']['processor']}, "
        f"{report['machine']['cpu_count']} cores, torch threads "
        f"{report['machine']['torch_threads']}; versions "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ". Runs timed on: "
        + ", ".join(f"{cpu} ({n})" for cpu, n in report["timed_on"].items())
        + "; times from different CPUs do not compare.", "",
    ]
    goal = report["target"]
    if goal is None:
        lines += ["**Target** (best neural model within 0.02 nats/event of the truth on test): "
                  f"not evaluated (no finished neural and truth runs of {SIM}).", ""]
    else:
        lines += [
            f"**Target** (best neural model within {TARGET_GAP} nats/event of the truth on "
            f"test): **{'met' if goal['met'] else 'MISSED'}**: best dev LL "
            f"{goal['dev_ll_per_event']:.4f}: {LABELS[goal['model']]} "
            f"({goal['decoder']}) at x{goal['size']:g}, test LL/event {goal['ll_per_event']:.4f} "
            f"vs truth {goal['true_ll_per_event']:.4f}, gap {goal['gap']:+.4f} "
            f"(needed ≥ {goal['required_gap']:+.2f}; {len(goal['seeds'])} seed"
            f"{'' if len(goal['seeds']) == 1 else 's'}; sizes run "
            + ", ".join(f"x{v:g}" for v in goal["sizes_run"]) + ").", "",
        ]
    for name, dataset_rows_ in rows.items():
        main_rows = [r for r in dataset_rows_ if r.size == 1]
        if not main_rows:
            continue
        first = ([r for r in main_rows if r.model != TRUTH] or main_rows)[0]
        scale = "" if first.time_scale == 1 else f", time scale {first.time_scale:g} s"
        events = ("" if first.n_train_events is None
                  else f"{first.n_train_events:,} training events, ")
        lines += [f"## {name} (x1: {events}{first.n_test_scored:,} scored test events{scale})", "",
                  *_table(main_rows), "", f"![{name}](tpp_{name}.png)", ""]
    if report["learning_curve"] is not None:
        lines += [f"## Learning curve ({SIM}): test LL/event − true process, same test set", "",
                  *_curve_lines(report["learning_curve"]), "",
                  "![learning curve](tpp_learning_curve.png)", ""]
    return "\n".join(lines)


def write_report(out: Path) -> dict[str, Any]:
    """Rewrite tpp_report.json/.md and the plots from the finished runs under ``out``."""
    meta = json.loads((out / "meta.json").read_text())
    rows: dict[str, list[Row]] = {}
    truths: dict[str, float | None] = {}
    for folder in sorted(p for p in (out / "runs").glob("*") if p.is_dir()):
        rows[folder.name], truths[folder.name] = dataset_rows(folder)
    sim = rows.get(SIM, [])
    curve = learning_curve(sim) if truths.get(SIM) is not None else None
    report = {
        "settings": meta["settings"], "seeds": meta["seeds"], "machine": meta["machine"],
        "versions": meta["versions"], "target_gap": TARGET_GAP,
        "timed_on": dict(Counter(cpu for rs in rows.values() for r in rs for cpu in r.processors
                                 if r.model != TRUTH).most_common()),
        "target": target(sim, truths.get(SIM)),
        "learning_curve": curve if curve and curve["curves"] else None,
        "datasets": {name: {"true_ll_per_event": truths[name],
                            "rows": [asdict(r) | {"label": r.label} for r in rs]}
                     for name, rs in rows.items()},
    }
    for name, rs in rows.items():
        if any(r.size == 1 for r in rs):
            plot_dataset(name, [r for r in rs if r.size == 1], truths[name],
                         out / f"tpp_{name}.png")
    if report["learning_curve"] is not None:
        plot_curve(report["learning_curve"], out / "tpp_learning_curve.png")
    write_json(report, out / "tpp_report.json")
    write_text(out / "tpp_report.md", to_markdown(report, rows))
    return report


def main() -> None:
    """Write the report of --out and print its Markdown."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the bench_tpp.py results")
    out = parser.parse_args().out
    write_report(out)
    print((out / "tpp_report.md").read_text())


if __name__ == "__main__":
    main()
