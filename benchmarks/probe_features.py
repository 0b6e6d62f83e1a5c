"""Candidate predictors of LoRA gain per layer, from the gradients the probe runs would see.

For each task: the frozen model's weight gradient of every adaptable linear module on each
probe batch (the batches, loss and batch size of `layercard.probe`), accumulated as the mean μ
over batches in weight space, and as mean and per-coordinate variance σ² in the LoRA-B space of
a random LoRA A (peft's initialisation, B = 0). From them, per module and summed per layer:
gradient norms (Frobenius, row-L2 sum, L1: the first full-weight Adam step's gain over lr), the
first LoRA Adam step's gain over lr (Adam's first update is lr·sign(g): ‖μ_B‖₁), the same once
A is aligned with the gradient's top-r directions (`_aligned_rate`), and its
noise-aware version Σ μ_B²/√(μ_B²+σ_B²) (Adam's update per coordinate is about lr·μ/√(μ²+σ²)
under batch noise). For classification tasks also the same of the label-only loss (prefix
label_): the part that separates the labels, without the answer format. The card's own
per-site diagnostics are in
<out>/cards/<task>/card.json (bench_probes.py). Writes <out>/features/<task>.json.

    python benchmarks/probe_features.py --out benchmarks/results/probes
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from commonio.atomic import write_text
from layercard import data
from layercard.config import BuildConfig, add_config_arguments, config_from_args
from layercard.models import adaptable_sites, find_blocks, load_model, site_module
from layercard.training import causal_lm_loss


def label_loss(model: torch.nn.Module, batch: dict, label_ids: list[int]) -> torch.Tensor:
    """Mean cross-entropy over the label words only, at each example's label position: the
    part of a classification loss that tells the labels apart (raising every label word alike,
    the answer format, does not change it)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    rows, cols = (batch["labels"][:, 1:] != -100).nonzero(as_tuple=True)
    first = torch.unique_consecutive(rows, return_counts=True)[1].cumsum(0) - 1
    first = torch.cat([first.new_zeros(1), first[:-1] + 1])  # the first label token per row
    rows, cols = rows[first], cols[first]
    target = batch["labels"][rows, cols + 1]
    choice = logits[rows, cols][:, label_ids]
    index = torch.tensor([label_ids.index(int(t)) for t in target])
    return torch.nn.functional.cross_entropy(choice, index)


def site_features(
    model: torch.nn.Module,
    batches: list[dict],
    *,
    rank: int,
    alpha: float,
    seed: int,
    label_ids: list[int] | None = None,
) -> dict[str, dict[str, float]]:
    """Per site ("layer:module"): the candidate predictors over the batches (see module doc);
    with `label_ids`, of the label-only loss (`label_loss`) instead of the fine-tuning loss."""
    sites = adaptable_sites(model)
    _, blocks = find_blocks(model)
    weights = {s: site_module(model, s, blocks).weight for s in sites}
    gen = torch.Generator().manual_seed(seed)
    lora_a = {}
    for s in sites:
        bound = 1.0 / math.sqrt(s.d_in)  # kaiming_uniform(a=√5) as peft initialises LoRA A
        lora_a[s] = (torch.rand(rank, s.d_in, generator=gen) * 2 - 1) * bound
    sums = {s: [0.0, 0.0, 0.0] for s in sites}  # Σg, Σg_B, Σg_B² (tensors after the first)
    for w in weights.values():
        w.requires_grad_(True)
    try:
        for batch in tqdm(batches, desc="gradients", leave=False):
            model.zero_grad(set_to_none=True)
            loss = causal_lm_loss(model, batch) if label_ids is None else label_loss(
                model, batch, label_ids
            )
            loss.backward()
            for s in sites:
                g = weights[s].grad
                if g.shape != (s.d_out, s.d_in):  # GPT-2 Conv1D stores (in, out)
                    g = g.T
                gb = ((alpha / rank) * g @ lora_a[s].T).double()
                acc = sums[s]
                acc[0] = acc[0] + g
                acc[1] = acc[1] + gb
                acc[2] = acc[2] + gb * gb
    finally:
        for w in weights.values():
            w.requires_grad_(False)
        model.zero_grad(set_to_none=True)
    n = len(batches)
    out = {}
    for s in sites:
        mu, mu_b, sq_b = (t / n for t in sums[s])
        mu = mu.double()
        var_b = (sq_b - mu_b * mu_b).clamp_min(0)
        snr_b = mu_b * mu_b / torch.sqrt(mu_b * mu_b + var_b).clamp_min(1e-300)
        out[f"{s.layer}:{s.module}"] = {
            "grad_fro": float(mu.norm()),
            "grad_l21": float(mu.norm(dim=1).sum()),
            "grad_l1": float(mu.abs().sum()),  # first full-weight Adam step: lr·‖μ‖₁
            "lora_l1": float(mu_b.abs().sum()),  # first LoRA Adam step: lr·‖μ_B‖₁
            "lora_snr": float(snr_b.sum()),
            "lora_aligned": _aligned_rate(mu, rank, alpha),
            "snr_share": float(snr_b.sum() / mu_b.abs().sum().clamp_min(1e-300)),
        }
    return out


def _aligned_rate(mu: torch.Tensor, rank: int, alpha: float) -> float:
    """‖μ_B‖₁ once LoRA A has turned to the gradient's top-r input directions: A's rows keep
    peft's initial norm (1/√3 for kaiming_uniform(a=√5)), so column i of μ_B = (α/r)·μ·a_i is
    (α/r)·σ_i·u_i/√3 and its L1 norm (α/r)·σ_i·‖u_i‖₁/√3 (σ_i, u_i: singular values and left
    singular vectors of μ). Against a random A this rewards a gradient of low effective rank."""
    u, s, _ = torch.linalg.svd(mu, full_matrices=False)
    top = min(rank, s.numel())
    return float((alpha / rank) * (s[:top] * u[:, :top].abs().sum(0)).sum() / math.sqrt(3.0))


def task_parser(doc: str) -> argparse.ArgumentParser:
    """The options of the probe-side feature scripts: --out, the probe build settings (the
    probes' defaults: 30 steps), --tasks. Torch runs on one thread, beside the probe benchmark."""
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the bench_probes.py results")
    add_config_arguments(parser, BuildConfig, skip=("task", "cost", "depths", "timed_steps"),
                         defaults={"model": "smollm2-135m"})
    parser.set_defaults(probe_steps=30)
    parser.add_argument("--tasks", nargs="+", default=["sentiment", "dialog"])
    return parser


def feature_inputs(
    args: argparse.Namespace, suffix: str
) -> Iterator[tuple[BuildConfig, str, Path, torch.nn.Module, list[dict], list[dict]]]:
    """For every task of --tasks whose <out>/features/<task>-<suffix>.json is missing: (build
    settings, the task's name, that path, the model, the probe training batches, the first
    --dev-batches dev batches), as the line-evaluating feature scripts need them."""
    for name in args.tasks:
        config = config_from_args(BuildConfig, args, task=name)
        task = data.load_task(name, seed=config.seed)
        path = args.out / "features" / f"{task.name}-{suffix}.json"
        if path.exists():
            continue
        loaded = load_model(config.model)
        shape = {"kind": task.kind, "max_length": config.max_length,
                 "batch_size": config.batch_size}
        train = data.task_batches(task.train[: config.probe_examples], loaded.tokenizer, **shape)
        dev = data.task_batches(task.dev[: config.probe_dev_examples], loaded.tokenizer, **shape)
        yield config, task.name, path, loaded.model, train, dev[: args.dev_batches]


def main() -> None:
    """Compute the features of every task given and write <out>/features/<task>.json."""
    args = task_parser(__doc__).parse_args()
    for name in args.tasks:
        config = config_from_args(BuildConfig, args, task=name)
        loaded = load_model(config.model)
        task = data.load_task(name, seed=config.seed)
        path = args.out / "features" / f"{task.name}.json"
        if path.exists():
            continue
        batches = data.task_batches(
            task.train[: config.probe_examples], loaded.tokenizer, kind=task.kind,
            max_length=config.max_length, batch_size=config.batch_size,
        )
        settings = config.lora_settings()
        features = site_features(loaded.model, batches, rank=settings.rank, alpha=settings.alpha,
                                 seed=config.seed)
        record = {"task": task.name, "sites": features}
        if task.kind == "classification":
            ids = [loaded.tokenizer(w, add_special_tokens=False)["input_ids"][0]
                   for w in task.label_words]
            labelled = site_features(loaded.model, batches, rank=settings.rank,
                                     alpha=settings.alpha, seed=config.seed, label_ids=ids)
            for key, values in labelled.items():
                features[key].update({f"label_{k}": v for k, v in values.items()})
        write_text(path, json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
