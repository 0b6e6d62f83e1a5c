"""Candidate predictor: the loss after Adam's first direction, taken for the whole probe length.

Adam from B = 0 moves every LoRA-B coordinate by about lr per step along the sign of its
gradient, so T steps with an unchanged direction land at B = −T·lr·sign(μ_B) (A as initialised).
For each layer this evaluates the dev loss at that point and at a quarter of it (in case the
full step overshoots), without any training: one backward pass per probe batch for μ_B of all
layers at once (at B = 0 the layers' B-gradients do not interact), then forward passes only.
Writes <out>/features/<task>-line.json: per layer, the larger of the two dev-loss drops.

    python benchmarks/probe_line.py --out benchmarks/results/probes
"""

from __future__ import annotations

import json

import torch
from tqdm import tqdm

from commonio.atomic import write_text
from layercard.config import BuildConfig
from layercard.models import find_blocks
from layercard.training import causal_lm_loss, dev_loss, lora_config, lora_training
from probe_features import feature_inputs, task_parser


def line_gains(
    model: torch.nn.Module,
    n_layers: int,
    train: list[dict],
    dev: list[dict],
    config: BuildConfig,
    fractions: tuple[float, ...] = (0.25, 1.0),
) -> list[float]:
    """Per layer: the best dev-loss drop at B = −f·steps·lr·sign(μ_B) over `fractions` f."""
    settings = config.lora_settings()
    lora = lora_config(model, range(n_layers), settings)
    base = dev_loss(model, dev)
    with lora_training(model, lora, lr=settings.lr, seed=config.seed) as (peft_model, _):
        b_params = {n: p for n, p in peft_model.named_parameters() if "lora_B" in n}
        for batch in tqdm(train[: config.probe_steps], desc="μ_B", leave=False):
            causal_lm_loss(peft_model, batch).backward()
        direction = {n: -torch.sign(p.grad) for n, p in b_params.items()}
        peft_model.zero_grad(set_to_none=True)
        step = config.probe_steps * settings.lr
        gains = []
        with torch.no_grad():
            for layer in tqdm(range(n_layers), desc="line", leave=False):
                mine = [n for n in b_params if f".layers.{layer}." in n]
                best = -float("inf")
                for fraction in fractions:
                    for n in mine:
                        b_params[n].copy_(fraction * step * direction[n])
                    best = max(best, base - dev_loss(peft_model, dev))
                for n in mine:
                    b_params[n].zero_()
                gains.append(best)
    return gains


def main() -> None:
    """Compute the line gains of every task given and write <out>/features/<task>-line.json."""
    parser = task_parser(__doc__)
    parser.add_argument("--dev-batches", type=int, default=4,
                        help="dev batches each point is scored on (the first ones)")
    args = parser.parse_args()
    for config, name, path, model, train, dev in feature_inputs(args, "line"):
        gains = line_gains(model, len(find_blocks(model)[1]), train, dev, config)
        write_text(path, json.dumps({"task": name, "adam_line": gains}) + "\n")


if __name__ == "__main__":
    main()
