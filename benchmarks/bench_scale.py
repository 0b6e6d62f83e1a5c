"""Benchmark: time and memory of the card's measurement against model width, depth and probe
tokens, fitted, checked on held-out runs and extrapolated to 8B and 70B models (issue 13).

Models: random-initialised Llama models in SmolLM2-135M's layout (head dim 64, 3 query heads
per key/value head, intermediate 8/3 of the width, tied embeddings, its 49,152-token vocabulary)
at several widths and depths, and SmolLM2-135M itself. Every run measures the statistics,
diagnostics and coupling (`layercard.measure.measure`, one layer group) on the first
--probe-examples examples of the sentiment task, tokenized by SmolLM2's tokenizer and batched
as `layercard build` batches them; it records the wall time, the peak RSS above the RSS before
the measurement (Linux VmHWM; each run in a child process of its own) and the statistics'
bytes as `layercard.memory` counts them.

Fits, on the width and depth runs (choose), checked on the probe-token runs and SmolLM2 (confirm):
- time = a·(probe tokens × block parameters) + b·(dense algebra: Σ over distinct inputs of
  d_in³ plus Σ over sites of d_out·d_in²) + c;
- memory above the start = statistics bytes + k·(tokens per batch × layers × width) + m.
They are extrapolated to Llama-3-8B and -70B shapes, per layer group and per process of a
data-parallel run.

Each run is one JSON file under <out>/runs/ and a rerun skips it; <out>/meta.json holds the
settings, machine and versions (a rerun with other settings is refused). The report
(<out>/scale.json, scale.md, scale.png) is rewritten from whatever has finished.

    python benchmarks/bench_scale.py --out benchmarks/results/scale [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm import tqdm
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from commonio.atomic import write_text
from commonio.process import peak_rss_bytes, rss_bytes
from layercard import data
from layercard.build import library_versions, machine_info
from layercard.measure import measure
from layercard.memory import GIB, input_sharing, statistics_bytes
from layercard.models import adaptable_sites, load_model
from layercard.resources import qwen_coder_gguf
from layercard.sites import Site
from layercard.statistics import InputStats, SiteStats, best_correction, site_diagnostics

VOCAB = 49_152  # SmolLM2's


@dataclass(frozen=True)
class Shape:
    """A Llama model's shape; `width` a multiple of 192 for the random ones."""

    name: str
    width: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int = VOCAB

    def config(self) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=self.vocab, hidden_size=self.width, intermediate_size=self.intermediate,
            num_hidden_layers=self.layers, num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads, tie_word_embeddings=True,
            max_position_embeddings=2048,
        )  # fmt: skip


def smollm2_layout(width: int, layers: int) -> Shape:
    """A random model in SmolLM2-135M's layout (it is width 576, 30 layers)."""
    heads = width // 64
    return Shape(f"w{width}-l{layers}", width, layers, width * 8 // 3, heads, heads // 3)


# Published shapes the fits are extrapolated to (their config.json files).
TARGETS = [
    Shape("SmolLM2-135M", 576, 30, 1536, 9, 3),
    Shape("Qwen2.5-0.5B", 896, 24, 4864, 14, 2, 151_936),
    Shape("Llama-3-8B", 4096, 32, 14_336, 32, 8, 128_256),
    Shape("Llama-3-70B", 8192, 80, 28_672, 64, 8, 128_256),
]


# pretrained models a run can load instead of random weights: name in the run key
PRETRAINED = {"smollm2-135m": "smollm2", "qwen2.5-coder-0.5b": "qwen2.5-coder"}


@dataclass(frozen=True)
class Run:
    """One measurement: a model shape at a probe-example count; `group` says what it is for."""

    shape: Shape
    probe_examples: int
    group: str  # "width", "depth", "tokens" (fit on width+depth, check on tokens and real)
    weights: str = ""  # a PRETRAINED model's weights instead of random ones

    @property
    def key(self) -> str:
        return f"{PRETRAINED.get(self.weights, self.shape.name)}-n{self.probe_examples}"


def load_weights(name: str) -> torch.nn.Module:
    """A PRETRAINED model, frozen, in float32."""
    if name == "smollm2-135m":
        return load_model(name).model
    path = qwen_coder_gguf()
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                 dtype=torch.float32)
    return model.eval().requires_grad_(False)


def plan(probe_examples: int, quick: bool, qwen: bool) -> list[Run]:
    """The runs, cheapest first within each scan; `qwen` adds the optional Qwen2.5-Coder-0.5B."""
    if quick:
        return [Run(smollm2_layout(192, 2), 8, "width"), Run(smollm2_layout(384, 2), 8, "width"),
                Run(smollm2_layout(192, 4), 8, "depth"), Run(smollm2_layout(192, 2), 16, "tokens")]
    n = probe_examples
    runs = [Run(smollm2_layout(w, 8), n, "width") for w in (192, 384, 576, 768, 960)]
    runs += [Run(smollm2_layout(576, d), n, "depth") for d in (4, 16)]
    runs += [Run(smollm2_layout(576, 8), m, "tokens") for m in (n // 2, 2 * n)]
    runs.append(Run(TARGETS[0], n, "real", weights="smollm2-135m"))
    if qwen:
        runs.append(Run(TARGETS[1], n, "real", weights="qwen2.5-coder-0.5b"))
    return runs


def algebra_flops(sites: list[Site], sharing: dict[Site, int]) -> float:
    """Σ over distinct inputs of d_in³ (eigenvalues, Cholesky) + Σ over sites of d_out·d_in²
    (the solves of G against Σ+λI): the dense algebra after the statistics pass."""
    inputs = {sharing[s]: s.d_in for s in sites}
    return float(sum(d**3 for d in inputs.values()) + sum(s.d_out * s.d_in**2 for s in sites))


def block_params(sites: list[Site]) -> int:
    """Weights of the adaptable linear modules (what the passes multiply every token by)."""
    return sum(s.d_in * s.d_out for s in sites)


def run_one(run: Run, examples: list, tokenizer: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """Measure one model; returns its record (time, memory, features)."""
    if run.weights:
        model = load_weights(run.weights)
    else:
        torch.manual_seed(0)
        model = LlamaForCausalLM(run.shape.config()).eval().requires_grad_(False)
    sites = adaptable_sites(model)
    sharing = input_sharing(model)
    batches = data.measurement_batches(
        examples[: run.probe_examples], tokenizer, kind="classification",
        head=settings["coupling_examples"], max_length=settings["max_length"],
        batch_size=settings["batch_size"],
    )  # fmt: skip
    gc.collect()
    start_rss = rss_bytes() or 0
    start, cpu_start = time.perf_counter(), time.process_time()
    measured = measure(model, batches, rank=settings["rank"], ridge_eps=1e-3,
                       coupling_examples=settings["coupling_examples"], progress=False)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start  # barely changed by other processes
    peak = peak_rss_bytes()
    record = {
        "key": run.key, "group": run.group, "weights": run.weights, "shape": asdict(run.shape),
        "probe_examples": run.probe_examples, "n_probe_tokens": measured.n_probe_tokens,
        "tokens_per_batch": max(int(b["input_ids"].numel()) for b in batches),
        "block_params": block_params(sites), "algebra_flops": algebra_flops(sites, sharing),
        "statistics_bytes": statistics_bytes(sites, sharing), "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "start_rss_bytes": start_rss, "peak_above_start_bytes": peak - start_rss,
    }  # fmt: skip
    del model, measured
    gc.collect()
    return record


def _time_features(r: dict[str, Any]) -> list[float]:
    return [r["n_probe_tokens"] * r["block_params"], 1.0]


def _algebra_seconds(r: dict[str, Any], algebra: dict[str, float]) -> float:
    """The run's measured algebra: its layers times one layer's (`algebra_layer_seconds`)."""
    return r["shape"]["layers"] * algebra[_layer_key(Shape(**r["shape"]))]


def _layer_key(shape: Shape) -> str:
    """A layer's shape as a file name (the algebra depends on nothing else)."""
    return f"w{shape.width}-i{shape.intermediate}-h{shape.heads}-kv{shape.kv_heads}"


def _memory_feature(r: dict[str, Any]) -> list[float]:
    return [r["tokens_per_batch"] * r["shape"]["layers"] * r["shape"]["width"], 1.0]


def _fit(rows: list[dict[str, Any]], features: Any, target: Any) -> np.ndarray:
    x = np.array([features(r) for r in rows])
    y = np.array([target(r) for r in rows])
    return np.linalg.lstsq(x, y, rcond=None)[0]


def _memory_target(r: dict[str, Any]) -> float:
    return r["peak_above_start_bytes"] - r["statistics_bytes"]


def target_sites(shape: Shape) -> tuple[list[Site], dict[Site, int]]:
    """A published shape's sites (built on the meta device: no memory) and their input sharing,
    taken by module name from a two-layer random model of the same architecture."""
    with torch.device("meta"):
        big = LlamaForCausalLM(shape.config())
    small = LlamaForCausalLM(smollm2_layout(192, 2).config()).eval()
    keys = {site.module: key for site, key in input_sharing(small).items() if site.layer == 0}
    group = {name: list(dict.fromkeys(keys.values())).index(key) for name, key in keys.items()}
    sites = adaptable_sites(big)
    return sites, {s: s.layer * len(keys) + group[s.module] for s in sites}


def algebra_layer_seconds(shape: Shape, tokens: int = 64) -> float:
    """CPU seconds of one layer's algebra after the statistics pass, as `measure` runs it per
    site (`best_correction`, then `site_diagnostics`: eigenvalues and Cholesky once per
    distinct input, the solves and the whitened Gram's eigenvalues per site), on statistics of
    random tokens in the layer's shapes (their cost does not depend on the values)."""
    sites, sharing = target_sites(dataclasses.replace(shape, layers=1))
    gen = torch.Generator().manual_seed(0)
    inputs: dict[int, tuple[InputStats, torch.Tensor]] = {}
    stats = []
    for site in sites:
        if sharing[site] not in inputs:
            x = torch.randn(tokens, site.d_in, generator=gen)
            inputs[sharing[site]] = (InputStats(site.d_in, dtype=torch.float32), x)
            inputs[sharing[site]][0].update(x)
        shared, x = inputs[sharing[site]]
        stat = SiteStats(site.d_in, site.d_out, dtype=torch.float32, inputs=shared)
        stat.update(x, torch.randn(tokens, site.d_out, generator=gen))
        stats.append(stat)
    start = time.process_time()
    for stat in stats:
        correction = best_correction(stat, ridge_eps=1e-3)
        site_diagnostics(stat, rank=8, ridge_eps=1e-3, correction=correction)
    return time.process_time() - start


def report(out: Path, records: list[dict[str, Any]], meta: dict[str, Any],
           algebra: dict[str, float]) -> None:
    """scale.json, scale.md and scale.png from the finished runs and the measured algebra (CPU
    seconds of one layer per layer shape)."""
    fit_rows = [r for r in records if r["group"] in ("width", "depth")]
    check_rows = [r for r in records if r["group"] not in ("width", "depth")]
    result: dict[str, Any] = {"meta": meta, "runs": records, "algebra_layer_seconds": algebra}
    lines = ["# Card measurement time and memory against model size", "",
             f"Machine: {meta['machine']}; versions "
             + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
             f"Settings: {meta['settings']}. One layer group; SmolLM2's tokenizer on the "
             "sentiment task; random Llama models in SmolLM2's layout except the pretrained "
             "ones (`smollm2`, `qwen2.5-coder`: their weights, dequantized to float32).",
             ""]  # fmt: skip
    lines += ["| run | for | width | layers | probe tokens | block params | statistics GiB | "
              "s | peak above start GiB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(
            f"| {r['key']} | {r['group']} | {r['shape']['width']} | {r['shape']['layers']} | "
            f"{r['n_probe_tokens']} | {r['block_params'] / 1e6:.1f}M | "
            f"{r['statistics_bytes'] / GIB:.3f} | {r['seconds']:.1f} | "
            f"{r['peak_above_start_bytes'] / GIB:.3f} |"
        )
    if len(fit_rows) >= 3:
        a, c = _fit(fit_rows, _time_features, lambda r: r["seconds"] - _algebra_seconds(r, algebra))
        k, m = _fit(fit_rows, _memory_feature, _memory_target)
        result["fit"] = {"time": {"per_token_param": a, "constant": c},
                         "memory": {"per_token_layer_width": k, "constant": m}}  # fmt: skip

        def time_of(r: dict[str, Any]) -> float:
            return float(np.dot(_time_features(r), [a, c])) + _algebra_seconds(r, algebra)

        def memory_of(r: dict[str, Any]) -> float:
            return r["statistics_bytes"] + float(np.dot(_memory_feature(r), [k, m]))

        lines += ["", "## Fits (on the width and depth runs) and their check", "",
                  f"time ≈ {a:.3g} s·(probe tokens × block params) + {c:.3g} s + the dense "
                  "algebra, measured (layers × one layer's CPU seconds of eigenvalues, Cholesky "
                  "and solves in its shapes: `algebra_layer_seconds`); memory above start ≈ "
                  f"statistics + {k:.3g} B·(tokens per batch × layers × width) + "
                  f"{m / GIB:.3g} GiB.", "",
                  "| run | for | s measured (CPU s) | s fitted | error (vs CPU s) | GiB measured "
                  "| GiB fitted | error |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        errors: dict[str, list[float]] = {"fit": [], "check": []}
        for r in records:
            t, mem = time_of(r), memory_of(r)
            et = t / r["seconds"] - 1
            em = mem / r["peak_above_start_bytes"] - 1 if r["peak_above_start_bytes"] else np.nan
            errors["fit" if r in fit_rows else "check"].append(abs(et))
            r["fitted"] = {"seconds": t, "peak_above_start_bytes": mem}
            cpu = r.get("cpu_seconds")  # recorded from the Qwen run on
            measured = f"{r['seconds']:.1f}" + ("" if cpu is None else f" ({cpu:.1f})")
            error = f"{et:+.0%}" + ("" if cpu is None else f" ({t / cpu - 1:+.0%})")
            lines.append(f"| {r['key']} | {r['group']} | {measured} | {t:.1f} | {error} | "
                         f"{r['peak_above_start_bytes'] / GIB:.3f} | {mem / GIB:.3f} | "
                         f"{em:+.0%} |")
        if check_rows:
            worst = max(errors["check"])
            lines += ["", f"Largest time error on the held-out runs: {worst:.0%} "
                      f"(on the fitted runs {max(errors['fit']):.0%})."]
        lines += extrapolation(result, a, k, meta, algebra)
    write_text(out / "scale.json", json.dumps(result, indent=2) + "\n")
    write_text(out / "scale.md", "\n".join(lines) + "\n")
    plot(out / "scale.png", records)


def extrapolation(result: dict[str, Any], a: float, k: float, meta: dict[str, Any],
                  algebra: dict[str, float]) -> list[str]:
    """Lines of the extrapolation table (and its JSON under result['extrapolation']). A shape
    whose layer algebra was not measured takes the largest measured one's, scaled by flops."""
    tokens = meta["settings"]["tokens_per_example"] * 256
    batch_tokens = max(r["tokens_per_batch"] for r in result["runs"])  # measurement batches
    lines = ["", "## Extrapolated (256 probe examples at SmolLM2's tokens per example)", "",
             "Statistics are counted exactly from the shapes; activations from the memory fit; "
             "time on one CPU thread here: the token term from the time fit, the algebra "
             "measured per layer (* scaled by flops from the largest measured layer). Data "
             "parallelism over P processes divides the token term by P and leaves each "
             "process's statistics memory and algebra as they are.", "",
             "| model | layers | weights bf16 GiB | statistics GiB per layer | all layers | "
             "groups for 40 GiB of statistics | algebra s per layer | time here, h | "
             "per process at P = 8, h |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    candidates = [Shape(**r["shape"]) for r in result["runs"]] + TARGETS
    largest = max((t for t in candidates if _layer_key(t) in algebra),
                  key=lambda t: t.width * t.intermediate)
    rows = []
    for shape in TARGETS:
        sites, sharing = target_sites(shape)
        layer = [s for s in sites if s.layer == 0]
        per_layer = statistics_bytes(layer, sharing)
        params = block_params(sites) + shape.vocab * shape.width
        key = _layer_key(shape)
        if key in algebra:
            layer_seconds, mark = algebra[key], ""
        else:
            ref_sites, ref_sharing = target_sites(dataclasses.replace(largest, layers=1))
            ratio = algebra_flops(layer, sharing) / algebra_flops(ref_sites, ref_sharing)
            layer_seconds, mark = algebra[_layer_key(largest)] * ratio, "*"
        token_seconds = a * tokens * block_params(sites)
        t = token_seconds + shape.layers * layer_seconds
        groups = next((g for g in range(1, shape.layers + 1)
                       if per_layer * -(-shape.layers // g) <= 40 * GIB), None)
        row = {"model": shape.name, "layers": shape.layers, "weights_bf16_bytes": 2 * params,
               "statistics_bytes_per_layer": per_layer,
               "statistics_bytes": per_layer * shape.layers, "groups_for_40_gib": groups,
               "activation_bytes_per_layer": k * batch_tokens * shape.width,
               "algebra_seconds_per_layer": layer_seconds, "algebra_scaled": bool(mark),
               "hours_here": t / 3600,
               "hours_per_process_p8": (token_seconds / 8 + t - token_seconds) / 3600}
        rows.append(row)
        lines.append(f"| {shape.name} | {shape.layers} | {2 * params / GIB:.1f} | "
                     f"{per_layer / GIB:.2f} | {per_layer * shape.layers / GIB:.1f} | "
                     f"{groups} | {layer_seconds:.0f}{mark} | {t / 3600:.2f} | "
                     f"{row['hours_per_process_p8']:.2f} |")
    result["extrapolation"] = rows
    return lines


def plot(path: Path, records: list[dict[str, Any]]) -> None:
    """Measured vs fitted time and memory, one point per run."""
    fig = Figure(figsize=(10, 4))
    ax_t, ax_m = fig.subplots(1, 2)
    for r in records:
        fitted = r.get("fitted")
        if fitted is None:
            continue
        ax_t.scatter(r["seconds"], fitted["seconds"], label=r["key"])
        ax_m.scatter(r["peak_above_start_bytes"] / GIB, fitted["peak_above_start_bytes"] / GIB)
    for ax, what in ((ax_t, "time, s"), (ax_m, "memory above start, GiB")):
        lo, hi = ax.get_xlim()
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=0.8)
        ax.set_xlabel(f"measured {what}")
        ax.set_ylabel(f"fitted {what}")
    ax_t.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument("--probe-examples", type=int, default=64,
                        help="probe examples of the width and depth runs (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--qwen", action="store_true",
                        help="also measure Qwen2.5-Coder-0.5B-Instruct (optional model: 491 MB "
                        "from six obscure part wheels, never a default), a held-out check")
    parser.add_argument("--quick", action="store_true", help="smoke run with tiny sizes")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the run to measure, in a child
    parser.add_argument("--algebra", help=argparse.SUPPRESS)  # a layer shape (JSON), in a child
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    loaded = load_model("smollm2-135m")
    task = data.load_task("sentiment", seed=0)
    runs = plan(args.probe_examples, args.quick, args.qwen)
    examples = task.train[: max(r.probe_examples for r in runs)]
    batches = data.task_batches(examples, loaded.tokenizer, kind=task.kind, max_length=256,
                                batch_size=8)
    n_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    settings = {"rank": 8, "batch_size": 8, "max_length": 256,
                "coupling_examples": 8 if args.quick else 64,
                "tokens_per_example": n_tokens / len(examples),
                "tokens_per_batch": max(int(b["input_ids"].numel()) for b in batches),
                "quick": args.quick}  # fmt: skip
    meta = {"settings": settings, "threads": args.threads, "versions": library_versions(),
            "machine": asdict(machine_info("cpu"))}
    tokenizer = loaded.tokenizer
    del loaded  # the real run loads its own copy
    if args.algebra is not None:
        print(json.dumps({"cpu_seconds": algebra_layer_seconds(Shape(**json.loads(args.algebra)))}))
        return 0
    if args.child is not None:  # a fresh process: its peak RSS is this run's alone
        run = next(r for r in runs if r.key == args.child)
        print(json.dumps(run_one(run, examples, tokenizer, settings)))
        return 0
    out = args.out
    (out / "runs").mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    if meta_path.exists() and json.loads(meta_path.read_text())["settings"] != settings:
        raise SystemExit(f"error: {meta_path} was written with other settings; use another --out")
    write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    for run in tqdm(runs, desc="scale runs", disable=args.quiet):
        path = out / "runs" / f"{run.key}.json"
        if path.exists():
            continue
        command = [sys.executable, __file__, *(argv or sys.argv[1:]), "--child", run.key]
        proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"error: run {run.key} (child process) failed with {proc.returncode}")
        write_text(path, proc.stdout.strip().splitlines()[-1] + "\n")
    records = [json.loads((out / "runs" / f"{r.key}.json").read_text()) for r in runs
               if (out / "runs" / f"{r.key}.json").exists()]
    shapes = [Shape(**r["shape"]) for r in records] + ([] if args.quick else TARGETS[:3])
    algebra = {}
    for shape in tqdm(list({_layer_key(s): s for s in shapes}.values()), desc="layer algebra",
                      disable=args.quiet):
        path = out / "algebra" / f"{_layer_key(shape)}.json"
        if not path.exists():
            command = [sys.executable, __file__, *(argv or sys.argv[1:]),
                       "--algebra", json.dumps(asdict(shape))]
            proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"error: the algebra of {shape.name} failed ({proc.returncode})")
            write_text(path, proc.stdout.strip().splitlines()[-1] + "\n")
        algebra[_layer_key(shape)] = json.loads(path.read_text())["cpu_seconds"]
    report(out, records, meta, algebra)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
