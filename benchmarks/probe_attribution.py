"""Candidate predictor: each layer's share of one short all-layer LoRA run's loss drop.

One LoRA run on every layer at once (the probes' settings, steps and batches) instead of one
run per layer. At each step the first-order loss change of the update splits exactly over
parameters: ΔL ≈ Σ_p g_p·Δθ_p, with g the step's gradient and Δθ what AdamW moved. Summed over
the run and over a layer's parameters, −Σ g·Δθ is that layer's credit for the training-loss
drop (the sum over layers is the run's first-order drop). It costs one probe's steps on all
layers, about 1/30 of probing every layer, and sees the optimizer's trajectory rather than only
the gradient at B = 0. Writes <out>/features/<task>-attribution.json: per layer, the credit.

    python benchmarks/probe_attribution.py --out benchmarks/results/probes
"""

from __future__ import annotations

import json
import re

import torch
from tqdm import tqdm

from commonio.atomic import write_text
from layercard.config import LoraSettings
from layercard.models import find_blocks
from layercard.training import causal_lm_loss, lora_config, lora_training
from probe_features import feature_inputs, task_parser


def attribution(
    model: torch.nn.Module, n_layers: int, train: list[dict], *, steps: int,
    settings: LoraSettings, seed: int,
) -> list[float]:
    """Per layer: −Σ_steps Σ_params g·Δθ of an all-layer LoRA run (batches cycled)."""
    config = lora_config(model, range(n_layers), settings)
    credit = [0.0] * n_layers
    with lora_training(model, config, lr=settings.lr, seed=seed) as (peft_model, optimizer):
        params = [(int(re.search(r"\.layers\.(\d+)\.", n).group(1)), p)
                  for n, p in peft_model.named_parameters() if p.requires_grad]
        for step in tqdm(range(steps), desc="attribution", leave=False):
            causal_lm_loss(peft_model, train[step % len(train)]).backward()
            before = [p.detach().clone() for _, p in params]
            optimizer.step()  # leaves the gradients as they were
            for (layer, p), old in zip(params, before, strict=True):
                credit[layer] -= float((p.grad * (p.detach() - old)).sum())
            optimizer.zero_grad(set_to_none=True)
    return credit


def main() -> None:
    """Compute the credits of every task given and write <out>/features/<task>-attribution.json."""
    parser = task_parser(__doc__)
    parser.set_defaults(dev_batches=0)  # scores no dev batches: the credit is of training
    args = parser.parse_args()
    for config, name, path, model, train, _ in feature_inputs(args, "attribution"):
        credit = attribution(model, len(find_blocks(model)[1]), train, steps=config.probe_steps,
                             settings=config.lora_settings(), seed=config.seed)
        write_text(path, json.dumps({"task": name, "attribution": credit}) + "\n")


if __name__ == "__main__":
    main()
