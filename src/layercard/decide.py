"""Decisions from a card's stored numbers: predicted gain of a layer set, the greedy order of
layers, and the card's cost model. numpy only, so rendering a card needs no torch."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from layercard.costmodel import CostModel
from layercard.schema import Card

# Eigen-directions of a coupling submatrix below this fraction of its largest eigenvalue are
# treated as exactly redundant (pseudo-inverse) in `predicted_gain`.
PINV_RTOL = 1e-6


def predicted_gain(res2: np.ndarray, rho: np.ndarray, subset: Iterable[int]) -> float:
    """Predicted loss decrease of adapting the sites in `subset` together (quadratic model).

    Gains g = res², curvature K = D^½ R D^½ with D = diag(res²): gain(S) = ½ g_Sᵀ K_S⁻¹ g_S
    = ½ v_Sᵀ R_S⁻¹ v_S with v = √res². Additive when R = I. R_S is pseudo-inverted (directions
    with eigenvalue < PINV_RTOL·max dropped), so exactly redundant sites add nothing.
    """
    index = np.asarray(list(subset), dtype=np.int64)
    if index.size == 0:
        return 0.0
    if np.unique(index).size != index.size:
        raise ValueError(f"subset has repeated sites: {index.tolist()}")
    v = np.sqrt(np.clip(np.asarray(res2, dtype=np.float64)[index], 0.0, None))
    r = np.asarray(rho, dtype=np.float64)[np.ix_(index, index)]
    solved = np.linalg.pinv(r, rcond=PINV_RTOL, hermitian=True) @ v
    return 0.5 * float(v @ solved)


def _gain_terms(card: Card) -> tuple[np.ndarray, np.ndarray]:
    """(per-layer resnorm², layer coupling matrix) of a card, as float64 arrays."""
    res2 = np.array([entry.resnorm2 for entry in card.layers], dtype=np.float64)
    return res2, np.array(card.coupling.matrix, dtype=np.float64)


def set_gain(card: Card, layers: Iterable[int]) -> float:
    """Predicted loss drop of adapting `layers` together: ½ vᵀR⁻¹v with v = √resnorm²."""
    return predicted_gain(*_gain_terms(card), sorted(set(layers)))


def greedy_order(card: Card) -> list[tuple[int, float]]:
    """Forward selection on predicted gain: (layer added, gain of the set so far) per step."""
    res2, rho = _gain_terms(card)
    chosen: list[int] = []
    order = []
    while len(chosen) < card.n_layers:
        gains = {
            i: predicted_gain(res2, rho, sorted([*chosen, i]))
            for i in range(card.n_layers)
            if i not in chosen
        }
        best = max(gains, key=gains.__getitem__)  # ties: the lower layer
        chosen.append(best)
        order.append((best, gains[best]))
    return order


def cost_model(card: Card) -> CostModel | None:
    """The fitted cost model (seconds and bytes of any layer set), when cost was measured."""
    if card.cost is None or card.timings.cost is None:
        return None
    return CostModel(
        n_layers=card.n_layers,
        params_per_layer=card.cost.params_per_layer,
        fit_sets=card.cost.fit_sets,
        check_sets=card.cost.check_sets,
        memory=card.cost.memory,
        timing=card.timings.cost,
    )
