"""Candidate predictor: the loss a layer's best rank-r linear correction reaches, line-searched.

The card's resnorm² is the first-order decrease of the covariance-preconditioned correction
dW* = G(Σ+λI)⁻¹ (rank-r truncated, as `statistics.best_correction`), measured in an identity
metric at the module outputs: it ignores how strongly the loss curves along that direction,
which differs from layer to layer. Here the real loss decides: for each layer, every module's
weight moves by −t·dW*_r together and the dev loss is evaluated on a log grid of step sizes t
(the layer's relative weight change ‖t·dW*‖/‖W‖ from 1e-4 to 1), then refined around the best
point. The best drop is a capacity in nats: what one linear step at that layer can reach.
Writes <out>/features/<task>-correction.json.

    python benchmarks/probe_correction.py --out benchmarks/results/probes
"""

from __future__ import annotations

import functools
import json
import math

import torch
from tqdm import tqdm

from commonio.atomic import write_text
from layercard.config import BuildConfig
from layercard.measure import collect_statistics
from layercard.models import find_blocks, site_module
from layercard.statistics import best_correction
from layercard.training import dev_loss
from probe_features import feature_inputs, task_parser

GRID = tuple(10.0 ** (k / 2) for k in range(-8, 1))  # relative weight change 1e-4 .. 1


def _weight_view(module: torch.nn.Module, site_shape: tuple[int, int]) -> torch.Tensor:
    """The module's weight as (d_out, d_in) (GPT-2 Conv1D stores it transposed)."""
    w = module.weight
    return w if tuple(w.shape) == site_shape else w.T


@torch.no_grad()
def _moved_loss(
    model: torch.nn.Module, dev: list[dict], weights: list[torch.Tensor],
    originals: list[torch.Tensor], directions: list[torch.Tensor], step: float,
) -> float:
    """Dev loss with each weight at w0 + step·d, the weights restored afterwards."""
    for w, w0, d in zip(weights, originals, directions, strict=True):
        w.copy_(w0 + step * d)
    loss = dev_loss(model, dev)
    for w, w0 in zip(weights, originals, strict=True):
        w.copy_(w0)
    return loss


def correction_gains(
    model: torch.nn.Module, train: list[dict], dev: list[dict], config: BuildConfig
) -> tuple[list[float], list[float]]:
    """Per layer: (best dev-loss drop along −t·dW*_r, the relative step size that reached it)."""
    stats = collect_statistics(model, train, dtype=torch.float64, progress=config.progress)
    _, blocks = find_blocks(model)
    rank = config.lora_settings().rank
    base = dev_loss(model, dev)
    gains, steps = [], []
    for layer in tqdm(range(len(blocks)), desc="correction line", disable=not config.progress):
        sites = [s for s in stats.sites if s.layer == layer]
        weights = [_weight_view(site_module(model, s, blocks), (s.d_out, s.d_in)) for s in sites]
        directions = [
            -best_correction(stats.stats[s], ridge_eps=config.ridge_eps, rank=rank).to(w.dtype)
            for s, w in zip(sites, weights, strict=True)
        ]
        size = math.sqrt(sum(float(d.square().sum()) for d in directions))
        norm = math.sqrt(sum(float(w.square().sum()) for w in weights))
        originals = [w.detach().clone() for w in weights]
        move = functools.partial(_moved_loss, model, dev, weights, originals, directions)
        tried = {r: base - move(r * norm / size) for r in GRID}
        best = max(tried, key=tried.get)
        for r in (best / 10 ** 0.25, best * 10 ** 0.25):
            tried[r] = base - move(r * norm / size)
        best = max(tried, key=tried.get)
        gains.append(tried[best])
        steps.append(best)
    return gains, steps


def main() -> None:
    """Compute the correction gains of every task; write <out>/features/<task>-correction.json."""
    parser = task_parser(__doc__)
    parser.add_argument("--dev-batches", type=int, default=2,
                        help="dev batches each point is scored on (the first ones)")
    args = parser.parse_args()
    for config, name, path, model, train, dev in feature_inputs(args, "correction"):
        gains, steps = correction_gains(model, train, dev, config)
        record = {"task": name, "correction_line": gains, "relative_step": steps,
                  "dev_batches": args.dev_batches}
        write_text(path, json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
