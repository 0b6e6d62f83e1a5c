"""EasyTPP as a peer of neuraltpp on identical data (issue 12, item 3).

Installs `easy-tpp==0.3.0` into its own virtual environment outside the repository (CPU torch
2.13.0, every package pinned), writes the simulated Hawkes set's train/dev/test splits
(`neuraltpp.builtin.load_splits("hawkes-sim")`, the splits `bench_tpp.py` uses) as EasyTPP
JSON, trains EasyTPP's THP and NHP through EasyTPP's own config and runner (`TPPRunner`, best
epoch by dev log-likelihood, the checkpoint it saves) at neuraltpp's default size, and scores
them on the test split:

- as EasyTPP reports it (its `loglike` per event: first event conditioned on, no tail after the
  last event, the compensator from 20 equally spaced points per interval, float32);
- recomputed here from the same trained EasyTPP model in float64, first under EasyTPP's own
  convention (a check that the recomputation is right), then with Gauss-Legendre quadrature
  (16 nodes, as neuraltpp), then with the tail to the observation window's end added, which is
  neuraltpp's default convention, the one its benchmark reports.

Each model runs in a subprocess of the environment's Python with one torch thread; the time of
every epoch (training pass, dev pass, EasyTPP's per-epoch test pass, wall and CPU time) is
measured around EasyTPP's own `run_one_epoch` inside that process. Right after EasyTPP's THP,
neuraltpp's THP is trained and scored in this process on the same splits (bench_tpp.py's
recipe, the same dropout, `--dropout`), so that the two are timed under the same load; the
time ratios come from that pair. neuraltpp's other models' test LL on the same data and
settings are taken from `bench_tpp.py`'s finished runs, when they are there (dropout 0.1 only).

Results: <out>/easytpp_peer.json and <out>/easytpp_peer.md. A model whose result is already in
the JSON is skipped (--overwrite reruns it); results of other settings are refused.

    python benchmarks/easytpp_peer.py                  # THP and NHP, 40 epochs (~4 min + setup)
    python benchmarks/easytpp_peer.py --quick          # smoke run: 1 epoch, a few sequences
    python benchmarks/easytpp_peer.py --models THP --epochs 10 --out /tmp/peer

Only the standard library is imported at the top: the same file runs inside the EasyTPP
environment (`--worker JOB`, internal), which has neither neuraltpp nor its dependencies.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCHEMA = "neuraltpp.easytpp_peer/1"
REPO = Path(__file__).resolve().parent.parent
DATASET = "hawkes-sim"
MODELS = ("THP", "NHP")
EASYTPP = "easy-tpp==0.3.0"
TORCH = "torch==2.13.0+cpu"  # the CPU wheel: a plain torch==2.13.0 may resolve to the CUDA build
# Everything pip resolved for easy-tpp 0.3.0 and CPU torch 2.13.0 on Python 3.11 (x86_64 Linux),
# pinned as constraints so the environment is the same each time it is made.
PINS = (
    "absl-py==2.5.1", "anyio==4.16.0", "click==8.5.1", "datasets==5.2.0", "dill==0.4.1",
    "easy_tpp==0.3.0", "filelock==4.3.1", "fsspec==2026.9.0", "grpcio==1.85.3", "h11==0.16.0",
    "hf-xet==1.8.0", "httpcore2==2.16.2", "httpx2==2.16.2", "huggingface_hub==2.4.0",
    "idna==3.20", "Jinja2==3.1.6", "Markdown==3.11.3", "MarkupSafe==3.0.4", "mpmath==1.3.0",
    "multiprocess==0.70.19", "networkx==3.6.1", "numpy==2.4.6", "omegaconf==2.4.0",
    "packaging==26.4", "pandas==3.1.1", "pillow==13.0.0", "protobuf==7.36.2",
    "pyarrow==26.0.1", "python-dateutil==4.0.0", "PyYAML==6.0.4", "setuptools==84.2.1",
    "sympy==1.14.0", "tensorboard==2.21.0", "tensorboard-data-server==0.7.2", TORCH,
    "tqdm==4.70.1", "truststore==0.10.5", "typing_extensions==4.16.0", "tzdata==2026.6",
    "Werkzeug==3.1.9", "xxhash==4.1.0",
)
# Packages easy-tpp 0.3.0 needs at import or run time beyond its declared requirements
# (PyYAML, numpy, pandas, torch, tensorboard, packaging, datasets, omegaconf), found by trying
# on Python 3.11: none for what this script uses (config_factory, runner, model_wrapper, the
# models, JSON and pickle loading). Only easy_tpp.hpo imports optuna and the data loader's plot
# helpers matplotlib, both undeclared and unused here, so not installed.
EXTRA_REQUIREMENTS: tuple[str, ...] = ()
MARKER = "easytpp-peer.json"  # in the environment: what was installed, to skip a reinstall
QUICK = {"epochs": 1, "train_sequences": 16, "eval_sequences": 4}
GL_NODES = 16  # neuraltpp's default Gauss-Legendre nodes per interval
GL_CHECK_NODES = 64  # a finer rule, to show the 16-node compensator has converged
NEURALTPP_RUNS = REPO / "benchmarks" / "results" / "tpp"
TAG = "[easytpp-peer]"
SAME_RUN = "thp-thp, same run"  # neuraltpp's THP timed beside EasyTPP's (run_neuraltpp_thp)
BENCH_TPP_GAP_LOSS = 0.01  # bench_tpp.py's default --gap-loss (per mean squared training gap)

CONVENTIONS = {
    "neuraltpp": (
        "neuraltpp.likelihood.log_likelihood, default LikelihoodOptions (docs/neuraltpp.md, "
        "'Likelihood: conventions'): event 0 is conditioned on and not scored (first_event="
        "'condition'); each later event j+1 scores log lambda_k(t_{j+1} | h_j) from the state of "
        "events 0..j; the compensator over all K types is integrated on every interval "
        "(t_j, t_{j+1}] and on the tail (t_{n-1}, window_end] (include_tail=True; the "
        "simulated set's window is [0, 20]) by 16-node Gauss-Legendre quadrature per interval "
        "(deterministic; the decay decoder's closed form instead); float64; per scored event "
        "(events - sequences)."
    ),
    "easytpp": (
        "easy_tpp 0.3.0, model/basemodel.py BaseModel.compute_loglikelihood with the models' "
        "loglike_loss (model/thp.py THP.loglike_loss, model/nhp.py NHP.loglike_loss). First "
        "event: conditioned on, not scored -- both models score type_seqs[:, 1:] from states of "
        "the events before (THP runs its encoder on time_seqs[:, :-1]; NHP takes the left limits "
        "of t_1..t_N and drops the right limit at t_N, 'discard right limit at t_N for logL'). "
        "Tail: none -- the compensator covers only the intervals (t_{j-1}, t_j] between observed "
        "events (time_delta_seqs[:, 1:], masked by seq_non_pad_mask[:, 1:]); the data format "
        "has no observation window. Integral: not Monte Carlo despite the option's name -- "
        "make_dtime_loss_samples puts loss_integral_num_sample_per_step (default 20) points at "
        "torch.linspace(0, 1, 20) * dt, both ends included, and with use_mc_samples=True (the "
        "default, config_factory/model_config.py) the integral is their plain mean times dt "
        "(by Euler-Maclaurin, mean * dt = integral + ((lambda(t_{j-1}) + lambda(t_j)) / 2 - "
        "integral / dt) * dt / 20 + O(1/20^2): exact for an intensity linear in t, otherwise a "
        "first-order error that overstates the compensator of a convex, decaying intensity and "
        "understates that of a concave one); use_mc_samples="
        "False uses the trapezoid rule on the same points. float32 eps (1.19e-7) is added to "
        "every intensity, at events and at the points. Reported per event: TPPRunner."
        "run_one_epoch returns loglike = -(sum of batch losses) / (sum of num_events), num_events "
        "counting the non-zero event terms, i.e. events - sequences, in float32."
    ),
    "selection": (
        "EasyTPP: runner/tpp_runner.py TPPRunner._train_model scores the dev set after every "
        "epoch (valid_freq 1) and saves the model whenever the dev loglike improves (epochs "
        "1..N; the untrained model is not a candidate); it also scores the test set every "
        "epoch with the current model. neuraltpp: training.train scores epoch 0 (untrained) "
        "and every epoch on dev and keeps the best."
    ),
    "training": (
        "EasyTPP's loss is the negative log-likelihood per event of the batch only "
        "(model_wrapper.ModelWrapper.run_batch: (loss / num_event).backward(), Adam, no "
        "gradient clipping). bench_tpp's neuraltpp runs add the type head's cross-entropy "
        "(weight 1) and the gap head's squared error (0.01 per mean squared gap) and use AdamW "
        "(weight decay 0) with gradient-norm clip 1.0."
    ),
}


# ----------------------------------------------------------------------------- settings


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """Everything that determines the numbers; runs under one --out must agree on it."""
    return {
        "dataset": DATASET, "data_seed": args.data_seed, "epochs": args.epochs, "lr": args.lr,
        "batch_size": args.batch_size, "seed": args.seed, "train_sequences": args.train_sequences,
        "eval_sequences": args.eval_sequences, "data_format": args.data_format,
        "easytpp_model_config": model_configs(args.dropout), "shuffle": True, "optimizer": "adam",
        "loss_integral_num_sample_per_step": 20, "use_mc_samples": True,
    }


def model_configs(dropout: float = 0.1) -> dict[str, dict[str, Any]]:
    """EasyTPP model_config per model, mapped from neuraltpp's ModelConfig defaults (d_model 64,
    2 layers, 4 heads, d_ff 128), THP with ``dropout`` (neuraltpp's default 0.1)."""
    common = {"hidden_size": 64, "loss_integral_num_sample_per_step": 20,
              "use_mc_samples": True, "thinning": None}
    return {
        # THP: hidden_size = d_model; its feed-forward is d_model -> 2 d_model -> d_model, so
        # the inner width is 128 = d_ff. time_emb_size and use_ln are read but unused by THP.
        "THP": {**common, "time_emb_size": 64, "num_layers": 2, "num_heads": 4,
                "dropout_rate": dropout, "use_ln": False},
        # NHP: one continuous-time LSTM of hidden_size (layers, heads, dropout do not apply).
        "NHP": {**common, "num_layers": 1, "dropout_rate": 0.0},
    }


# ----------------------------------------------------------------------------- environment


def log(message: str) -> None:
    """One progress line on stdout."""
    print(f"{TAG} {message}", flush=True)


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> str:
    """Run ``cmd``; its stdout, or SystemExit naming ``what`` with the end of its output."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"error: {what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def venv_python(venv: Path) -> Path:
    """The environment's interpreter."""
    return venv / "bin" / "python"


def ensure_venv(venv: Path, python: str) -> list[str]:
    """Create the EasyTPP environment when missing or installed with other pins; its pip
    freeze. Refuses an environment whose torch is not the CPU build."""
    requirements = [TORCH, EASYTPP, *EXTRA_REQUIREMENTS]
    wanted = {"requirements": requirements, "pins": list(PINS)}
    marker = venv / MARKER
    py = venv_python(venv)
    if not (py.exists() and marker.exists() and json.loads(marker.read_text()) == wanted):
        if not py.exists():
            log(f"creating the EasyTPP environment {venv} with {python} -m venv")
            _run([python, "-m", "venv", str(venv)], f"{python} -m venv {venv}")
        constraints = venv / "easytpp-peer-constraints.txt"
        constraints.write_text("\n".join(PINS) + "\n")
        log(f"installing {' '.join(requirements)} (constraints {constraints}; a minute or two)")
        start = time.perf_counter()
        _run([str(py), "-m", "pip", "install", "--quiet", "-c", str(constraints), *requirements],
             "pip install into the EasyTPP environment")
        log(f"installed in {time.perf_counter() - start:.0f} s")
        marker.write_text(json.dumps(wanted, indent=2) + "\n")
    freeze = _run([str(py), "-m", "pip", "freeze", "--all"], "pip freeze").split()
    torch_pin = [line for line in freeze if line.lower().startswith("torch==")]
    if torch_pin != [TORCH] or any(line.lower().startswith("nvidia") for line in freeze):
        raise SystemExit(f"error: {venv} holds {torch_pin or 'no torch'} or CUDA packages, not "
                         f"{TORCH}; remove it or choose another --venv")
    return freeze


# ----------------------------------------------------------------------------- data


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_data(settings: dict[str, Any]) -> dict[str, Any]:
    """The dataset's train/dev/test splits (EventDataset), cut to the settings' sizes."""
    import dataclasses

    from neuraltpp.builtin import load_splits

    splits = load_splits(DATASET, seed=settings["data_seed"])
    limits = {"train": settings["train_sequences"], "dev": settings["eval_sequences"],
              "test": settings["eval_sequences"]}
    return {s: dataclasses.replace(ds, sequences=ds.sequences[: limits[s]])
            for s, ds in splits.items()}


def write_data(settings: dict[str, Any], directory: Path) -> dict[str, Any]:
    """Write the dataset's splits as EasyTPP 0.3.0 reads them (JSON records or NHP pickles:
    time_since_start, time_since_last_event (0 for the first event), type_event, dim_process)
    plus the test split's sequences and windows for the convention evaluation; their summary."""
    from neuraltpp.data.easytpp import write_easytpp_json
    from neuraltpp.data.nhp import write_pickle

    splits = load_data(settings)
    directory.mkdir(parents=True, exist_ok=True)
    ext = settings["data_format"]
    if ext == "json":
        for split, ds in splits.items():
            write_easytpp_json(ds, directory / f"{split}.json")
    else:
        write_pickle(splits, directory)
    test = splits["test"]
    evaluation = {"num_types": test.num_types, "sequences": [
        {"times": s.times.tolist(), "types": s.types.tolist(), "window_end": s.window_end}
        for s in test.sequences]}
    (directory / "test-eval.json").write_text(json.dumps(evaluation))
    files = {}
    for split, ds in splits.items():
        path = directory / f"{split}.{ext}"
        files[split] = {"file": str(path), "sha256": _sha256(path), "n_sequences": len(ds),
                        "n_events": ds.n_events, "n_scored_events": ds.n_events - len(ds)}
    windows = sorted({(s.window_start, s.window_end) for s in test.sequences})
    return {"dataset": DATASET, "num_types": test.num_types, "time_scale": test.time_scale,
            "format": "EasyTPP JSON" if ext == "json" else "NHP pickle", "splits": files,
            "test_windows": [list(w) for w in windows]}


def _comparable(data: dict[str, Any]) -> dict[str, Any]:
    """The data summary without where the files lie."""
    return {**data, "splits": {k: {f: v for f, v in split.items() if f != "file"}
                               for k, split in data["splits"].items()}}


# ----------------------------------------------------------------------------- results


def load_results(path: Path, settings: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    """The results already under --out, or a new record; SystemExit when they were made with
    other settings (unless --overwrite, which then starts afresh)."""
    if path.exists():
        results = json.loads(path.read_text())
        if results.get("settings") == settings:
            return results
        if not overwrite:
            before = results.get("settings", {})
            differ = [f"{k}: {before.get(k)!r} there, {v!r} now" for k, v in settings.items()
                      if before.get(k) != v]
            raise SystemExit(f"error: {path} holds results of other settings "
                             f"({'; '.join(differ)}); use --overwrite or another --out")
    return {"schema": SCHEMA, "settings": settings, "models": {}}


def neuraltpp_reference(settings: dict[str, Any]) -> dict[str, Any] | None:
    """neuraltpp's test LL and time per epoch on the same data and settings, from
    bench_tpp.py's finished runs (training size x1, the peer's seed); None when they do not
    match (a THP dropout other than neuraltpp's default included)."""
    from neuraltpp.models import ModelConfig
    from neuraltpp.training import TrainConfig

    meta_path = NEURALTPP_RUNS / "meta.json"
    if (not meta_path.exists()
            or settings["easytpp_model_config"]["THP"]["dropout_rate"] != ModelConfig().dropout):
        return None
    meta = json.loads(meta_path.read_text())["settings"]
    same = {"epochs": settings["epochs"], "lr": settings["lr"],
            "batch_size": settings["batch_size"], "data_seed": settings["data_seed"],
            "train_sequences": settings["train_sequences"],
            "eval_sequences": settings["eval_sequences"], "model_config": {},
            "gap_loss": BENCH_TPP_GAP_LOSS, "type_loss": TrainConfig().type_loss_weight}
    if any(meta.get(k) != v for k, v in same.items()):
        return None
    runs = {}
    for path in sorted((NEURALTPP_RUNS / "runs" / DATASET).glob("*.json")):
        run = json.loads(path.read_text())
        if run.get("size") != 1 or run.get("seed") not in (None, settings["seed"]):
            continue
        name = run["model"] if run.get("decoder") is None else f"{run['model']}-{run['decoder']}"
        runs[name] = {
            "test_ll_per_event": run["test"]["likelihood"]["ll_per_event"],
            "n_scored_events": run["test"]["likelihood"]["n_events"],
            "seconds_per_epoch": run.get("seconds_per_epoch"), "train_seconds": run["seconds"],
            "eval_seconds": run["eval_seconds"], "best_epoch": run.get("best_epoch"),
            "file": str(path.relative_to(REPO)),
        }
    params = neuraltpp_thp_parameters()
    return {"source": f"{NEURALTPP_RUNS.relative_to(REPO)}/runs/{DATASET} (bench_tpp.py, a "
            "separate process and time on this machine)", "likelihood": meta["likelihood"],
            "thp_parameters": params, "runs": runs}


def trainable_parameters(model: Any) -> int:
    """Number of trainable parameters of a torch module."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def neuraltpp_thp_parameters() -> int:
    """Trainable parameters of neuraltpp's THP at its default size on the 5-type set."""
    from neuraltpp.training import TrainConfig, make_model

    return trainable_parameters(make_model(TrainConfig(model="thp"), 5))


def run_neuraltpp_thp(settings: dict[str, Any]) -> dict[str, Any]:
    """neuraltpp's THP trained and scored in this process right after EasyTPP's THP, on the
    same splits with bench_tpp.py's recipe (its default gap-loss weight, one torch thread) and
    EasyTPP THP's dropout, so that both epochs are timed under the same load of the machine."""
    import torch

    from bench_tpp import mean_squared_gap
    from neuraltpp.evaluation import evaluate
    from neuraltpp.training import TrainConfig, train

    splits = load_data(settings)
    dropout = settings["easytpp_model_config"]["THP"]["dropout_rate"]
    config = TrainConfig(
        model="thp", model_config={"dropout": dropout}, lr=settings["lr"],
        epochs=settings["epochs"], batch_size=settings["batch_size"], seed=settings["seed"],
        gap_loss_weight=BENCH_TPP_GAP_LOSS / mean_squared_gap(splits["train"]),
    )
    torch.set_num_threads(1)
    log(f"neuraltpp THP: training {settings['epochs']} epoch(s) in this process")
    load_before = os.getloadavg()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="easytpp-peer-neuraltpp-") as work:
        result = train(config, splits["train"], splits["dev"], work, resume=False,
                       progress=False)
    train_seconds = time.perf_counter() - start
    metrics = evaluate(result.model, splits["test"], config.likelihood)
    epochs = [r for r in result.history if r.epoch > 0]
    return {
        "train_config": config.to_dict(), "best_epoch": result.best_epoch,
        "parameters": trainable_parameters(result.model),
        "test_ll_per_event": metrics.likelihood.ll_per_event,
        "timing": {
            "seconds_per_epoch": sum(r.seconds for r in epochs) / max(len(epochs), 1),
            "cpu_seconds_per_epoch": sum(r.cpu_seconds for r in epochs) / max(len(epochs), 1),
            "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - start - train_seconds,
        },
        "load_average_1_5_15": {"before": list(load_before), "after": list(os.getloadavg())},
    }


def comparison(results: dict[str, Any]) -> dict[str, Any] | None:
    """neuraltpp against EasyTPP under one convention (neuraltpp's) and per epoch, where both
    sides have results; the ratios issue 12 sets targets on. Times come from the same run
    (`run_neuraltpp_thp`), likelihoods also from bench_tpp's runs."""
    ref, models, same = (results.get("neuraltpp_reference"), results["models"],
                         results.get("neuraltpp_same_run"))
    ours = {k: v["test_ll_per_event"] for k, v in (ref or {}).get("runs", {}).items()
            if k not in ("truth", "hawkes-fit")}
    if same:
        ours[SAME_RUN] = same["test_ll_per_event"]
    if not ours or not models:
        return None
    best_ours = max(ours, key=lambda k: ours[k])
    theirs = {k: m["test_conventions"]["neuraltpp"]["ll_per_event"] for k, m in models.items()}
    best_theirs = max(theirs, key=lambda k: theirs[k])
    out: dict[str, Any] = {
        "best_neuraltpp": best_ours, "best_neuraltpp_ll": ours[best_ours],
        "best_easytpp": best_theirs, "best_easytpp_ll": theirs[best_theirs],
        "ll_difference": ours[best_ours] - theirs[best_theirs],
    }
    if same and "THP" in models:
        t, ours_t = models["THP"]["timing"], same["timing"]
        out |= {
            "thp_speedup_vs_train_dev": t["train_dev_seconds_per_epoch"]
            / ours_t["seconds_per_epoch"],
            "thp_speedup_vs_train_pass": t["train_seconds_per_epoch"]
            / ours_t["seconds_per_epoch"],
            "thp_cpu_speedup_vs_train_pass": t["train_cpu_seconds_per_epoch"]
            / ours_t["cpu_seconds_per_epoch"],
            "thp_whole_run_neuraltpp_seconds": ours_t["train_seconds"] + ours_t["eval_seconds"],
            "thp_whole_run_easytpp_seconds": t["whole_run_seconds"],
        }
    if ref and "truth" in ref["runs"]:
        out["truth_ll"] = ref["runs"]["truth"]["test_ll_per_event"]
    return out


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """easytpp_peer.json and easytpp_peer.md, atomically."""
    from commonio.atomic import write_text

    write_text(out / "easytpp_peer.json", json.dumps(results, indent=2, allow_nan=False) + "\n")
    write_text(out / "easytpp_peer.md", render_markdown(results))


def _f(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _label(name: str) -> str:
    """A bench_tpp run's row label."""
    if name == "truth":
        return "true process (bench_tpp)"
    if name == "hawkes-fit":
        return "classical Hawkes MLE fit (neuraltpp.hawkes, bench_tpp)"
    return f"neuraltpp {name} (bench_tpp)"


def _load_range(results: dict[str, Any]) -> str:
    runs = [*results["models"].values(), *filter(None, [results.get("neuraltpp_same_run")])]
    loads = [v[0] for m in runs for v in m["load_average_1_5_15"].values()]
    return f"{min(loads):.1f}–{max(loads):.1f}" if loads else "–"


def render_markdown(results: dict[str, Any]) -> str:
    """The Markdown report of the results JSON."""
    s, env, data = results["settings"], results.get("environment", {}), results.get("data", {})
    lines = [
        "# EasyTPP 0.3.0 beside neuraltpp on identical data",
        "",
        "Written by `benchmarks/easytpp_peer.py` (issue 12, item 3). "
        f"Data: `{DATASET}` (data seed {s['data_seed']}), "
        + ", ".join(f"{k} {v['n_sequences']} sequences / {v['n_events']} events"
                    for k, v in data.get("splits", {}).items())
        + f", written as {data.get('format', '?')} with neuraltpp's writer. Settings: "
        f"{s['epochs']} epochs, batch {s['batch_size']}, lr {s['lr']:g} (Adam), seed "
        f"{s['seed']}, shuffled batches, one torch thread, EasyTPP's own `TPPRunner` with dev "
        "selection. EasyTPP from its own environment "
        f"({env.get('easy_tpp', '?')}, torch {env.get('torch', '?')}, Python "
        f"{env.get('python', '?')}; `pip freeze` in the JSON).",
        "",
    ]
    if s["train_sequences"] is not None or s["epochs"] < 40:
        lines += [f"**Reduced run**: {s['epochs']} epoch(s), training sequences "
                  f"{s['train_sequences'] or 'all'}, dev/test sequences "
                  f"{s['eval_sequences'] or 'all'}; not the full comparison.", ""]
    lines += [
        "## Test log-likelihood per event (nats)",
        "",
        "| model | params | best dev epoch | EasyTPP reports | recomputed, EasyTPP convention "
        f"| GL{GL_NODES}, no tail | GL{GL_NODES} + tail (neuraltpp convention) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in results["models"].items():
        c = m["test_conventions"]
        lines.append(
            f"| EasyTPP {name} | {m['parameters']} | {m['best_epoch']} | "
            f"**{_f(m['test_ll_per_event'])}** | {_f(c['easytpp']['ll_per_event'])} | "
            f"{_f(c['gl_no_tail']['ll_per_event'])} | **{_f(c['neuraltpp']['ll_per_event'])}** |")
    ref = results.get("neuraltpp_reference")
    if ref:
        for name, r in ref["runs"].items():
            params = ref["thp_parameters"] if name == "thp-thp" else ""
            best = "–" if r["best_epoch"] is None else r["best_epoch"]
            lines.append(f"| {_label(name)} | {params} | {best} | | | | "
                         f"{_f(r['test_ll_per_event'])} |")
    same = results.get("neuraltpp_same_run")
    if same:
        lines.append(f"| neuraltpp {SAME_RUN} | {same['parameters']} | {same['best_epoch']} "
                     f"| | | | {_f(same['test_ll_per_event'])} |")
    lines += [
        "",
        "EasyTPP reports: its `loglike` on the test split with the best-dev checkpoint "
        "(float32). Recomputed: the same checkpoint in float64 on each test sequence; with "
        "EasyTPP's rule it must equal the reported value (difference in the JSON), the next "
        f"column replaces its 20-point mean by {GL_NODES}-node Gauss-Legendre quadrature, the "
        "last adds the compensator from the last event to the window end (t = 20), which "
        "makes it comparable to neuraltpp's numbers. Every column scores events − sequences "
        "events (the first of each sequence is conditioned on).",
    ]
    cmp = results.get("comparison")
    if cmp:
        lines += [
            "",
            "Under one convention (neuraltpp's): best neuraltpp model "
            f"`{cmp['best_neuraltpp']}` {_f(cmp['best_neuraltpp_ll'])}, best EasyTPP model "
            f"{cmp['best_easytpp']} {_f(cmp['best_easytpp_ll'])}, difference "
            f"{cmp['ll_difference']:+.4f} nats/event"
            + (f"; true process {_f(cmp['truth_ll'])}." if "truth_ll" in cmp else "."),
        ]
    lines += [
        "",
        "## Time",
        "",
        "| model | train pass s/epoch (CPU s) | + dev pass and checkpoint | + EasyTPP's test pass "
        "| training loop | whole run (process) |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in results["models"].items():
        t = m["timing"]
        lines.append(
            f"| EasyTPP {name} | {_f(t['train_seconds_per_epoch'], 2)} "
            f"({_f(t['train_cpu_seconds_per_epoch'], 2)}) | "
            f"{_f(t['train_dev_seconds_per_epoch'], 2)} | {_f(t['epoch_seconds_per_epoch'], 2)} "
            f"| {_f(t['train_loop_seconds'], 1)} | {_f(t['whole_run_seconds'], 1)} |")
    if ref:
        for name, r in ref["runs"].items():
            if name == "truth":
                continue
            lines.append(f"| {_label(name)} | | {_f(r['seconds_per_epoch'], 2)} | | "
                         f"{_f(r['train_seconds'], 1)} | (+ test {_f(r['eval_seconds'], 1)}) |")
    if same:
        t = same["timing"]
        lines.append(f"| neuraltpp {SAME_RUN} | | {_f(t['seconds_per_epoch'], 2)} "
                     f"({_f(t['cpu_seconds_per_epoch'], 2)}) | | {_f(t['train_seconds'], 1)} "
                     f"| (+ test {_f(t['eval_seconds'], 1)}) |")
    lines += [
        "",
        "Seconds per epoch are means over the epochs, wall time measured inside the EasyTPP "
        "process around `TPPRunner.run_one_epoch` (CPU time of the process in brackets); "
        "'+ dev pass and checkpoint' is the epoch without EasyTPP's per-epoch test pass, "
        "the same scope as neuraltpp's `seconds_per_epoch` (training, dev LL, checkpoint). "
        "Whole run: the EasyTPP subprocess from start to its final test score (imports, data "
        "loading, training, the final test pass), without this script's float64 "
        "recomputation. The machine was shared with other benchmarks while these ran "
        f"(1-minute load average {_load_range(results)} on {results['machine']['cpu_count']} "
        "cores, before and after each model), so wall times are inflated by contention; CPU "
        "times less so.",
    ]
    if cmp and "thp_speedup_vs_train_dev" in cmp:
        lines += [
            "",
            f"THP per epoch, timed in the same run (neuraltpp's THP `{SAME_RUN}` trained in "
            "this process right after EasyTPP's, with bench_tpp's recipe and the same "
            "dropout): EasyTPP's epoch (training pass + dev pass + checkpoint) takes "
            f"{cmp['thp_speedup_vs_train_dev']:.2f}x neuraltpp's epoch (training pass, dev pass "
            f"and best.pt), its training pass alone {cmp['thp_speedup_vs_train_pass']:.2f}x "
            f"({cmp['thp_cpu_speedup_vs_train_pass']:.2f}x in CPU time; issue 12 target: "
            "neuraltpp >= 4x faster). Whole THP run: neuraltpp "
            f"{cmp['thp_whole_run_neuraltpp_seconds']:.1f} s (training with dev selection + "
            "test metrics with predictions; no interpreter start-up or data loading) against "
            f"EasyTPP {cmp['thp_whole_run_easytpp_seconds']:.1f} s (its process, start-up and "
            "data loading included).",
        ]
    lines += [
        "",
        "## Log-likelihood conventions",
        "",
    ]
    for key, text in results.get("conventions", CONVENTIONS).items():
        lines += [f"- **{key}**: {text}", ""]
    lines += ["## Mapping of sizes", ""]
    for name, cfg in s["easytpp_model_config"].items():
        lines.append(f"- {name}: `{json.dumps(cfg)}`")
    lines += ["", "neuraltpp defaults (`ModelConfig`): d_model 64, n_layers 2, n_heads 4, "
              "d_ff 128, dropout 0.1 (pre-norm attention with residuals; EasyTPP's THP has neither "
              "residuals nor layer norm, and shares one feed-forward block across its layers). "
              "Both THPs add the sinusoidal encoding of the absolute timestamp before every "
              "attention layer and have the same intensity family, softplus_{beta_k}(a_k (t - "
              "t_j) + w_k . h_j + b_k) with a learned beta per type (EasyTPP: "
              "THP.compute_states_at_sample_times with baselayer.ScaledSoftplus; neuraltpp: the "
              "`thp` decoder); neuraltpp's parameter count also holds its type and gap heads. "
              "NHP has no neuraltpp counterpart; it is matched by its state size (64).", ""]
    notes = results.get("notes", [])
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- one model


def run_model(name: str, args: argparse.Namespace, settings: dict[str, Any], data: dict[str, Any],
              work: Path) -> dict[str, Any]:
    """Train and score EasyTPP's model ``name`` in a subprocess of the environment; its record."""
    model_dir = work / "runs" / name
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True)
    splits = data["splits"]
    job = {
        "model": name, "settings": settings, "model_config": settings["easytpp_model_config"][name],
        "num_types": data["num_types"], "train": splits["train"]["file"],
        "dev": splits["dev"]["file"], "test": splits["test"]["file"],
        "test_eval": str(work / "data" / "test-eval.json"), "base_dir": str(model_dir),
        "result": str(model_dir / "result.json"),
    }
    job_path = model_dir / "job.json"
    job_path.write_text(json.dumps(job, indent=2))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "HF_DATASETS_CACHE": str(work / "hf-datasets"), "HF_DATASETS_OFFLINE": "1",
           "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [str(venv_python(args.venv)), str(Path(__file__).resolve()), "--worker", str(job_path)]
    log_path = model_dir / "easytpp.log"
    log(f"{name}: training {settings['epochs']} epoch(s) in EasyTPP (log {log_path})")
    load_before = os.getloadavg()
    start = time.perf_counter()
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, cwd=model_dir)
        assert proc.stdout is not None
        for line in proc.stdout:
            log_file.write(line)
            if line.startswith(TAG):
                print(line, end="", flush=True)
        code = proc.wait()
    wall = time.perf_counter() - start
    if code != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-20:])
        raise SystemExit(f"error: EasyTPP {name} failed (exit {code}); end of {log_path}:\n{tail}")
    record = json.loads(Path(job["result"]).read_text())
    timing = record["timing"]
    timing["process_wall_seconds"] = wall
    timing["whole_run_seconds"] = wall - timing["convention_eval_seconds"]
    record["load_average_1_5_15"] = {"before": list(load_before), "after": list(os.getloadavg())}
    record["log"] = str(log_path)
    return record


# ----------------------------------------------------------------------------- main


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks and shows each option's default."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_Formatter)
    parser.add_argument("--out", type=Path, default=None,
                        help="results directory (default benchmarks/results/tpp/easytpp, "
                        "with --quick runs/easytpp-quick)")
    parser.add_argument("--venv", type=Path, default=None,
                        help="the EasyTPP virtual environment, created when missing (default "
                        "$NEURALTPP_CACHE/easytpp-venv; the cache defaults to "
                        "~/.cache/neuraltpp)")
    parser.add_argument("--work", type=Path, default=None,
                        help="work directory: data files, EasyTPP checkpoints and logs (default "
                        "$NEURALTPP_CACHE/easytpp-work)")
    parser.add_argument("--python", default="python3.11",
                        help="interpreter that creates the environment")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0,
                        help="EasyTPP's trainer seed and neuraltpp's training seed")
    parser.add_argument("--dropout", type=float, default=0.1,
                        help="dropout of both THPs (EasyTPP's dropout_rate; neuraltpp's default "
                        "0.1); with another value bench_tpp's runs are not shown beside them")
    parser.add_argument("--data-seed", type=int, default=0,
                        help=f"seed of the {DATASET} simulation (bench_tpp.py's --data-seed)")
    parser.add_argument("--data-format", choices=("json", "pkl"), default="json",
                        help="EasyTPP JSON records or NHP pickles (EasyTPP reads both)")
    parser.add_argument("--train-sequences", type=int, default=None,
                        help="use the first N training sequences (default: all)")
    parser.add_argument("--eval-sequences", type=int, default=None,
                        help="use the first N dev and test sequences (default: all)")
    parser.add_argument("--overwrite", action="store_true",
                        help="rerun models whose results are already there (and replace "
                        "results of other settings)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK} (overrides those options)")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def main() -> None:
    """Set up the environment and data, run the missing models, write the results."""
    args = _parser().parse_args()
    if args.worker is not None:
        worker(args.worker)
        return
    if args.quick:
        vars(args).update(QUICK)
    if args.out is None:
        args.out = REPO / ("runs/easytpp-quick" if args.quick else
                           "benchmarks/results/tpp/easytpp")
    if args.epochs < 1 or args.batch_size < 1 or not args.lr > 0:
        raise SystemExit("error: --epochs and --batch-size must be >= 1 and --lr > 0")
    for opt in ("train_sequences", "eval_sequences"):
        if getattr(args, opt) is not None and getattr(args, opt) < 2:
            raise SystemExit(f"error: --{opt.replace('_', '-')} must be at least 2")
    cache = os.environ.get("NEURALTPP_CACHE")
    if cache is not None and not cache.strip():
        raise SystemExit("error: NEURALTPP_CACHE is set but empty: set it to a cache directory, "
                         "or unset it to use ~/.cache/neuraltpp")
    root = Path(cache) if cache else Path.home() / ".cache" / "neuraltpp"
    args.venv = (args.venv or root / "easytpp-venv").expanduser().resolve()
    args.work = (args.work or root / "easytpp-work").expanduser().resolve()
    if args.venv.is_relative_to(REPO) or args.work.is_relative_to(REPO):
        raise SystemExit("error: --venv and --work must lie outside the repository")
    settings = settings_of(args)
    json_path = args.out / "easytpp_peer.json"
    results = load_results(json_path, settings, args.overwrite)
    todo = [m for m in args.models if args.overwrite or m not in results["models"]]
    if "THP" in args.models and ("THP" in todo or "neuraltpp_same_run" not in results):
        todo = [m for m in todo if m != "THP"] + ["THP"]  # neuraltpp's THP is timed right after it
    if not todo:
        log(f"every requested model is in {json_path} (use --overwrite to rerun)")
    freeze = ensure_venv(args.venv, args.python)
    pins = dict(line.split("==", 1) for line in freeze if "==" in line)
    venv_py = _run([str(venv_python(args.venv)), "-c", "import platform; "
                    "print(platform.python_version())"], "the environment's python").strip()
    results["environment"] = {
        "venv": str(args.venv), "python": venv_py, "easy_tpp": pins.get("easy_tpp"),
        "torch": pins.get("torch"), "requirements": [TORCH, EASYTPP, *EXTRA_REQUIREMENTS],
        "extra_requirements": list(EXTRA_REQUIREMENTS), "pip_freeze": freeze,
    }
    from bench_tpp import machine

    host = machine()
    del host["torch_threads"]  # this process's default; every model here runs on one thread
    results["machine"] = {**host, "python": platform.python_version()}
    results["conventions"] = CONVENTIONS
    log(f"writing the {DATASET} splits to {args.work / 'data'}")
    data = write_data(settings, args.work / "data")
    if _comparable(results.get("data", data)) != _comparable(data):
        raise SystemExit(f"error: the data written now differ from those of {json_path}; "
                         "use --overwrite")
    results["data"] = data
    results["neuraltpp_reference"] = neuraltpp_reference(settings)
    results.setdefault("notes", [])
    for name in todo:
        results["models"][name] = run_model(name, args, settings, data, args.work)
        results["models"] = {m: results["models"][m] for m in MODELS if m in results["models"]}
        results["comparison"] = comparison(results)
        write_outputs(results, args.out)
        m = results["models"][name]
        log(f"{name}: test LL/event {m['test_ll_per_event']:.4f} (EasyTPP), "
            f"{m['test_conventions']['neuraltpp']['ll_per_event']:.4f} (neuraltpp convention); "
            f"{m['timing']['train_seconds_per_epoch']:.2f} s/epoch training pass")
        if name == "THP":
            results["neuraltpp_same_run"] = run_neuraltpp_thp(settings)
            results["comparison"] = comparison(results)
            write_outputs(results, args.out)
    results["comparison"] = comparison(results)
    write_outputs(results, args.out)
    log(f"wrote {json_path} and {json_path.with_suffix('.md')}")


# ----------------------------------------------------------------------------- worker
# Runs inside the EasyTPP environment: torch, numpy and easy_tpp, no neuraltpp.


def _runner_config(job: dict[str, Any]) -> dict[str, Any]:
    """EasyTPP's runner config (the dict form of its experiment YAML) for the job."""
    s = job["settings"]
    specs = {"num_event_types": job["num_types"], "pad_token_id": job["num_types"],
             "padding_side": "right", "truncation_side": "right"}
    return {
        "data_config": {"train_dir": job["train"], "valid_dir": job["dev"],
                        "test_dir": job["test"], "data_format": s["data_format"],
                        "data_specs": specs},
        "base_config": {"stage": "train", "backend": "torch", "dataset_id": DATASET,
                        "runner_id": "std_tpp", "model_id": job["model"],
                        "base_dir": job["base_dir"], "exp_id": f"{job['model']}_train"},
        "trainer_config": {"batch_size": s["batch_size"], "max_epoch": s["epochs"],
                           "shuffle": s["shuffle"], "optimizer": s["optimizer"],
                           "learning_rate": s["lr"], "valid_freq": 1, "use_tfb": False,
                           "metrics": ["acc", "rmse"], "seed": s["seed"], "gpu": -1},
        "model_config": dict(job["model_config"]),
    }


class EpochClock:
    """Wraps `TPPRunner.run_one_epoch`: wall and CPU time and metrics of every call, grouped
    into epochs (a training pass, then the dev pass, then EasyTPP's test pass)."""

    def __init__(self, inner: Callable[..., Any], model: str, epochs: int) -> None:
        self.inner, self.model, self.epochs = inner, model, epochs
        self.records: list[dict[str, Any]] = []
        self.best: tuple[float, int] | None = None

    def __call__(self, loader: Any, phase: Any) -> Any:
        """Time one pass and record its loglike."""
        wall, cpu = time.perf_counter(), time.process_time()
        metrics = self.inner(loader, phase)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if str(phase.value if hasattr(phase, "value") else phase).lower().startswith("train"):
            self.records.append({"epoch": len(self.records) + 1, "start": time.perf_counter()
                                 - wall, "train_seconds": wall, "train_cpu_seconds": cpu,
                                 "train_ll": float(metrics["loglike"])})
            return metrics
        rec = self.records[-1]
        key = "dev" if "dev_ll" not in rec else "test"
        rec |= {f"{key}_ll": float(metrics["loglike"]), f"{key}_seconds": wall,
                f"{key}_cpu_seconds": cpu, f"{key}_events": int(metrics["num_events"])}
        if key == "dev":
            if self.best is None or rec["dev_ll"] > self.best[0]:
                self.best = (rec["dev_ll"], rec["epoch"])
        else:
            assert self.best is not None
            print(f"{TAG} {self.model} epoch {rec['epoch']}/{self.epochs}: train "
                  f"{rec['train_seconds']:.2f} s, train LL {rec['train_ll']:.4f}, dev LL "
                  f"{rec['dev_ll']:.4f}, test LL {rec['test_ll']:.4f} (best dev "
                  f"{self.best[0]:.4f} at epoch {self.best[1]})", flush=True)
        return metrics


def _gauss_legendre(n: int) -> tuple[Any, Any]:
    """Nodes and weights of n-point Gauss-Legendre quadrature on [0, 1]."""
    import numpy as np

    x, w = np.polynomial.legendre.leggauss(n)
    return (x + 1) / 2, w / 2


def _intensity_fn(model: Any, name: str, times: Any, types: Any) -> Callable[[Any], Any]:
    """lambda(offsets) -> intensities [n, S, K]: row j from the state after event j (events
    0..j), at times t_j + offsets[j], with EasyTPP's own model functions."""
    import torch

    t, k = times[None], types[None]
    if name == "THP":
        n = t.shape[1]
        mask = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)[None]
        states = model.forward(t, k, mask)

        def thp(offsets: Any) -> Any:
            return model.softplus(model.compute_states_at_sample_times(states, offsets[None]))[0]

        return thp
    dts = torch.cat([torch.zeros(1, dtype=t.dtype), times[1:] - times[:-1]])[None]
    _, right = model.forward((t, dts, k, None, None))

    def nhp(offsets: Any) -> Any:
        return model.layer_intensity(model.get_states(right, offsets[None]))[0]

    return nhp


def convention_scores(model: Any, name: str, test_eval: Path) -> dict[str, Any]:
    """The model's test log-likelihood per scored event under several conventions, in float64,
    one sequence at a time (first event conditioned on in all of them)."""
    import numpy as np
    import torch

    data = json.loads(test_eval.read_text())
    eps = float(torch.finfo(torch.float32).eps)
    easy_nodes = np.linspace(0.0, 1.0, 20)
    rules = {  # name: (nodes, weights on [0, 1], eps added, tail included)
        "easytpp": (easy_nodes, np.full(20, 1 / 20), eps, False),
        "gl_no_tail": (*_gauss_legendre(GL_NODES), 0.0, False),
        "neuraltpp": (*_gauss_legendre(GL_NODES), 0.0, True),
        f"gl{GL_CHECK_NODES}_tail": (*_gauss_legendre(GL_CHECK_NODES), 0.0, True),
    }
    totals = {r: {"events": 0.0, "compensator": 0.0, "tail": 0.0} for r in rules}
    scored = 0
    model = model.double().eval()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with torch.no_grad():
            for seq in data["sequences"]:
                times = torch.tensor(seq["times"], dtype=torch.float64)
                types = torch.tensor(seq["types"], dtype=torch.long)
                n = len(times)
                scored += n - 1
                lam = _intensity_fn(model, name, times, types)
                gaps = times[1:] - times[:-1]  # interval j: (t_j, t_{j+1}], from state j
                at_events = lam(torch.cat([gaps, gaps.new_zeros(1)])[:, None])[:-1, 0]
                picked = at_events.gather(1, types[1:, None])[:, 0]
                tail_len = float(seq["window_end"]) - float(times[-1])
                for rule, (nodes, weights, add, tail) in rules.items():
                    node_t = torch.tensor(nodes)
                    weight_t = torch.tensor(weights)
                    lengths = torch.cat([gaps, gaps.new_tensor([tail_len])])
                    total = (lam(lengths[:, None] * node_t[None]) + add).sum(-1)
                    integrals = (total * weight_t[None]).sum(-1) * lengths
                    totals[rule]["events"] += float(torch.log(picked + add).sum())
                    totals[rule]["compensator"] += float(integrals[:-1].sum())
                    if tail:
                        totals[rule]["tail"] += float(integrals[-1])
    finally:
        torch.set_default_dtype(previous)
    scores: dict[str, Any] = {}
    for rule, (_, _, add, tail) in rules.items():
        tot = totals[rule]
        ll = tot["events"] - tot["compensator"] - tot["tail"]
        scores[rule] = {"ll_per_event": ll / scored, "event_term": tot["events"] / scored,
                        "compensator_between_events": tot["compensator"] / scored,
                        "tail": tot["tail"] / scored, "include_tail": tail, "eps": add,
                        "n_scored_events": scored}
    return scores


def worker(job_path: Path) -> None:
    """Inside the EasyTPP environment: train one model with EasyTPP's runner, score the best
    checkpoint on test, recompute its LL under the conventions; write the job's result."""
    t0_wall, t0_cpu = time.perf_counter(), time.process_time()
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    import easy_tpp
    from easy_tpp.config_factory import RunnerConfig
    from easy_tpp.runner import Runner
    from easy_tpp.utils import RunnerPhase, count_model_params

    job = json.loads(job_path.read_text())
    name, s = job["model"], job["settings"]
    import_seconds = time.perf_counter() - t0_wall
    config = RunnerConfig.parse_from_yaml_config(_runner_config(job), direct_parse=True)
    runner = Runner.build_from_config(config)
    clock = EpochClock(runner.run_one_epoch, name, s["epochs"])
    runner.run_one_epoch = clock
    setup_seconds = time.perf_counter() - t0_wall - import_seconds
    print(f"{TAG} {name}: {count_model_params(runner.model)} parameters, set up in "
          f"{setup_seconds:.1f} s; training", flush=True)
    loop_start = time.perf_counter()
    runner.train()
    loop_seconds = time.perf_counter() - loop_start
    ends = [r["start"] for r in clock.records[1:]] + [loop_start + loop_seconds]
    for rec, end in zip(clock.records, ends, strict=True):
        rec["epoch_seconds"] = end - rec.pop("start")
    best_epoch = runner.metrics_tracker.episode_best  # 0-based epoch index in EasyTPP's loop
    if not isinstance(best_epoch, int):
        raise SystemExit(f"error: EasyTPP {name}: the dev LL never improved ({best_epoch}); "
                         "no checkpoint was saved")
    saved = runner.runner_config.base_config.specs["saved_model_dir"]
    final_start = time.perf_counter()
    runner._load_model(saved)
    runner.run_one_epoch = clock.inner
    test = runner.run_one_epoch(runner._data_loader.test_loader(), RunnerPhase.VALIDATE)
    final_seconds = time.perf_counter() - final_start
    run_seconds = time.perf_counter() - t0_wall
    run_cpu = time.process_time() - t0_cpu
    print(f"{TAG} {name}: test LL/event {float(test['loglike']):.4f} at best dev epoch "
          f"{best_epoch + 1}; recomputing under the conventions", flush=True)
    eval_start = time.perf_counter()
    conventions = convention_scores(runner.model, name, Path(job["test_eval"]))
    eval_seconds = time.perf_counter() - eval_start
    conventions["easytpp"]["minus_reported"] = (conventions["easytpp"]["ll_per_event"]
                                                - float(test["loglike"]))
    recs = clock.records
    n = len(recs)

    def mean(key: str) -> float:
        return sum(r[key] for r in recs) / n

    result = {
        "model": name, "easytpp_version": easy_tpp.__version__, "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "parameters": count_model_params(runner.model),
        "runner_config": _runner_config(job), "best_epoch": best_epoch + 1,
        "best_dev_ll_per_event": float(runner.metrics_tracker.current_best["loglike"]),
        "test_ll_per_event": float(test["loglike"]), "test_scored_events": int(test["num_events"]),
        "test_ll_logged_at_best_epoch": recs[best_epoch].get("test_ll"),
        "test_conventions": conventions, "epochs": recs,
        "timing": {
            "import_seconds": import_seconds, "setup_seconds": setup_seconds,
            "train_loop_seconds": loop_seconds, "final_test_seconds": final_seconds,
            "run_seconds_in_process": run_seconds, "run_cpu_seconds_in_process": run_cpu,
            "convention_eval_seconds": eval_seconds,
            "train_seconds_per_epoch": mean("train_seconds"),
            "train_cpu_seconds_per_epoch": mean("train_cpu_seconds"),
            "dev_seconds_per_epoch": mean("dev_seconds"),
            "test_seconds_per_epoch": mean("test_seconds"),
            "epoch_seconds_per_epoch": mean("epoch_seconds"),
            "train_dev_seconds_per_epoch": mean("epoch_seconds") - mean("test_seconds"),
        },
        "checkpoint": saved, "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        * 1024,
    }
    if not math.isfinite(result["test_ll_per_event"]):
        print(f"{TAG} {name}: warning: non-finite test LL", flush=True)
    Path(job["result"]).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
