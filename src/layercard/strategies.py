"""Which layers a LoRA run adapts: fixed strategies, card-based rankings and explicit lists.

Every strategy picks k layers of an n-layer model; all of them feed the identical LoRA config
(`layercard train`), so runs differ only in where the adapters sit. numpy only (no torch).
peft's KappaTune picks modules rather than layers and needs the model's weights, so it lives in
`finetune`; its name is listed here so that one parser knows every strategy.
"""

from __future__ import annotations

import numpy as np

from layercard.decide import Objective, place
from layercard.schema import Card

FIXED = ("first", "middle", "last", "uniform", "random")
FROM_CARD = ("card", "gradnorm", "resnorm")
STRATEGIES = ("all", *FIXED, *FROM_CARD, "kappa")


class LayerSpecError(ValueError):
    """A --layers / --k value that names no valid layer choice (the message names the flag)."""


def fixed_layers(strategy: str, n_layers: int, k: int, *, seed: int = 0) -> list[int]:
    """k layers by a rule that ignores the model's numbers: the first, middle (contiguous,
    centred), last, uniform (evenly spread, centred in n/k-layer bins) or random (seeded) ones."""
    if not 1 <= k <= n_layers:
        raise LayerSpecError(f"--k must be in [1, {n_layers}], got {k}")
    if strategy == "first":
        return list(range(k))
    if strategy == "last":
        return list(range(n_layers - k, n_layers))
    if strategy == "middle":
        start = (n_layers - k) // 2
        return list(range(start, start + k))
    if strategy == "uniform":
        return [int((i + 0.5) * n_layers / k) for i in range(k)]
    if strategy == "random":
        chosen = np.random.default_rng(seed).choice(n_layers, size=k, replace=False)
        return sorted(int(i) for i in chosen)
    raise LayerSpecError(f"unknown fixed strategy {strategy!r}; choose from {', '.join(FIXED)}")


def card_layers(strategy: str, card: Card, k: int) -> list[int]:
    """k layers from a card: its placement for at most k layers ("card"), or the top k by the
    layers' gradient norm ("gradnorm", as Aletheia ranks) or resnorm² ("resnorm")."""
    n = card.n_layers
    if not 1 <= k <= n:
        raise LayerSpecError(f"--k must be in [1, {n}], got {k}")
    if strategy == "card":
        return place(card, Objective(max_layers=k)).chosen.layers
    key = {"gradnorm": "grad_norm", "resnorm": "resnorm2"}.get(strategy)
    if key is None:
        raise LayerSpecError(
            f"unknown card strategy {strategy!r}; choose from {', '.join(FROM_CARD)}"
        )
    values = np.array([getattr(e, key) for e in card.layers], dtype=np.float64)
    top = np.argsort(-values, kind="stable")[:k]  # ties: the lower layer
    return sorted(int(i) for i in top)


def parse_layer_list(text: str, n_layers: int) -> list[int]:
    """An explicit --layers list: indices and ranges, e.g. "0,4,8" or "3-7,12"."""
    chosen: set[int] = set()
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            span = range(int(lo), int(hi) + 1) if sep else [int(lo)]
        except ValueError:
            raise LayerSpecError(
                f"--layers {text!r}: expected all, auto, a strategy ({', '.join(STRATEGIES)}) "
                "or layer indices such as 0,4,8 or 3-7"
            ) from None
        chosen.update(span)
    bad = sorted(i for i in chosen if not 0 <= i < n_layers)
    if bad or not chosen:
        raise LayerSpecError(
            f"--layers {text!r}: layer indices must be in [0, {n_layers - 1}], got {bad}"
        )
    return sorted(chosen)
