"""Decisions from a card's stored numbers: predicted gain of a layer set, the greedy order of
layers, the card's cost model, and placement (which layers to adapt for an objective).
numpy only, so rendering a card and placing from it need no torch."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

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
    """(2 × per-layer gain, layer coupling matrix) as float64 arrays: the squared v of
    `predicted_gain`, so that a single layer gains exactly its own gain."""
    gains, _ = layer_gains(card)
    return 2.0 * gains, np.array(card.coupling.matrix, dtype=np.float64)


def layer_gains(card: Card) -> tuple[np.ndarray, str]:
    """Per-layer gains that decisions use: the measured probe gains when the card has probes,
    else the card's predicted single-layer gains; with the name of their source."""
    if card.probe is not None:
        return np.array(card.probe.gains, dtype=np.float64), "probes"
    return np.array([e.predicted_gain for e in card.layers], dtype=np.float64), "prediction"


def set_gain(card: Card, layers: Iterable[int]) -> float:
    """Gain of adapting `layers` together: ½ vᵀR⁻¹v with v = √(2·single-layer gain)."""
    return predicted_gain(*_gain_terms(card), sorted(set(layers)))


def _greedy(
    v2: np.ndarray, rho: np.ndarray, start: list[int], allowed: Iterable[int]
) -> list[tuple[int, float]]:
    """Forward selection from the set `start` over `allowed`, adding each time the layer that
    raises the set's gain most (ties: the lower layer): (layer added, gain of the set so far)."""
    chosen, rest = list(start), [i for i in allowed if i not in start]
    order = []
    while rest:
        gains = {i: predicted_gain(v2, rho, sorted([*chosen, i])) for i in rest}
        best = max(gains, key=gains.__getitem__)
        chosen.append(best)
        rest.remove(best)
        order.append((best, gains[best]))
    return order


def greedy_order(card: Card) -> list[tuple[int, float]]:
    """Forward selection on the layers' gains: (layer added, gain of the set so far) per step."""
    v2, rho = _gain_terms(card)
    return _greedy(v2, rho, [], range(card.n_layers))


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


# ---------------------------------------------------------------- placement

BUDGET_KINDS = ("time", "memory", "params")
_FIELD = {"time": "seconds", "memory": "memory", "params": "params"}  # Candidate field per kind


class PlacementError(ValueError):
    """An objective that cannot be met or does not fit the card (names the option)."""


@dataclass(frozen=True)
class Objective:
    """What to optimise; exactly one of the three is set.

    max_layers: the best set of at most this many layers. target_gain: the cheapest set reaching
    this share of the all-layer gain. budget: (kind, share) the best set whose predicted cost of
    that kind (training step time, training memory, LoRA parameters) is at most this share of
    all-layer LoRA's.
    """

    max_layers: int | None = None
    target_gain: float | None = None
    budget: tuple[str, float] | None = None

    def __post_init__(self) -> None:
        given = [v is not None for v in (self.max_layers, self.target_gain, self.budget)]
        if sum(given) != 1:
            raise PlacementError(
                "give exactly one objective: --max-layers, --target-gain or --budget"
            )
        if self.max_layers is not None and self.max_layers < 1:
            raise PlacementError(f"--max-layers must be at least 1, got {self.max_layers}")
        if self.target_gain is not None and not 0 < self.target_gain <= 1:
            raise PlacementError(f"--target-gain must be in (0, 1], got {self.target_gain}")
        if self.budget is not None:
            kind, share = self.budget
            if kind not in BUDGET_KINDS:
                raise PlacementError(f"--budget {kind}=...: the kind must be one of {BUDGET_KINDS}")
            if not share > 0:
                raise PlacementError(f"--budget {kind}={share}: the share must be > 0")

    def describe(self) -> str:
        """The objective as the user would write it on the command line."""
        if self.max_layers is not None:
            return f"--max-layers {self.max_layers}"
        if self.target_gain is not None:
            return f"--target-gain {self.target_gain:g}"
        kind, share = self.budget  # type: ignore[misc]
        return f"--budget {kind}={share:g}"


@dataclass(frozen=True)
class Candidate:
    """A layer set with its predicted gain and predicted costs (None where not measured)."""

    layers: tuple[int, ...]
    gain: float
    seconds: float | None  # per optimizer step
    memory: int | None  # training bytes beyond the frozen weights
    params: int  # LoRA parameters

    def cost(self, kind: str) -> float:
        """The cost of this kind: seconds, bytes or parameters."""
        value = getattr(self, _FIELD[kind])
        if value is None:
            raise PlacementError(
                f"--budget {kind}=...: the card has no cost measurement (built with --no-cost); "
                "use --budget params=... or rebuild the card with cost"
            )
        return float(value)


@dataclass(frozen=True)
class Placement:
    """The chosen layers for an objective, what they are predicted to gain and cost, and why."""

    objective: Objective
    chosen: Candidate
    all_layers: Candidate
    gain_source: str  # "probes" or "prediction"
    modules: list[str]
    front: list[Candidate]  # gain-vs-cost Pareto front (time when measured, else parameters)
    reason: str


def _candidate(card: Card, v2: np.ndarray, rho: np.ndarray, layers: Iterable[int]) -> Candidate:
    chosen = tuple(sorted(set(layers)))
    model = cost_model(card)
    seconds, memory = model.predict(chosen) if model is not None else (None, None)
    params = sum(card.layers[i].lora_params for i in chosen)
    return Candidate(chosen, predicted_gain(v2, rho, chosen), seconds, memory, params)


def candidates(card: Card) -> list[Candidate]:
    """Layer sets worth considering: for every lowest layer m, the coupling-aware greedy order
    over the layers >= m and each of its prefixes. Training cost depends mostly on how deep
    backward goes (the lowest adapted layer), so these cover the cost-gain trade-off."""
    v2, rho = _gain_terms(card)
    n = card.n_layers
    seen: dict[tuple[int, ...], Candidate] = {}
    for floor in range(n):
        order = [floor, *(i for i, _ in _greedy(v2, rho, [floor], range(floor + 1, n)))]
        for k in range(1, len(order) + 1):
            key = tuple(sorted(order[:k]))
            if key not in seen:
                seen[key] = _candidate(card, v2, rho, key)
    return sorted(seen.values(), key=lambda c: (len(c.layers), c.layers))


def standard_objectives(card: Card) -> list[Objective]:
    """The objectives card.md recommends placements for: 4 and 8 layers, 95% of the all-layer
    gain, and half of all-layer LoRA's step time (of its parameters without cost measurement)."""
    kind = "time" if cost_model(card) is not None else "params"
    sizes = sorted({min(4, card.n_layers), min(8, card.n_layers)})
    return [
        *(Objective(max_layers=k) for k in sizes),
        Objective(target_gain=0.95),
        Objective(budget=(kind, 0.5)),
    ]


def pareto_front(cands: Iterable[Candidate], kind: str) -> list[Candidate]:
    """The candidates no other one beats on both gain (higher) and cost of `kind` (lower)."""
    ordered = sorted(cands, key=lambda c: (c.cost(kind), -c.gain, len(c.layers)))
    front: list[Candidate] = []
    for c in ordered:
        if not front or c.gain > front[-1].gain:
            front.append(c)
    return front


def place(
    card: Card, objective: Objective, cands: list[Candidate] | None = None
) -> Placement:
    """Choose the layers for `objective` on the card's gains, coupling and cost model.

    `cands`: `candidates(card)` when the caller places several objectives on one card.
    """
    cands = candidates(card) if cands is None else cands
    _, source = layer_gains(card)
    everything = _candidate(card, *_gain_terms(card), range(card.n_layers))
    front_kind = "time" if cost_model(card) is not None else "params"
    kind = objective.budget[0] if objective.budget else front_kind
    if objective.max_layers is not None:
        fitting = [c for c in cands if len(c.layers) <= objective.max_layers]
        chosen = max(fitting, key=lambda c: (c.gain, -c.cost(kind)))
        why = (f"the largest predicted gain of any set of at most {objective.max_layers} layers "
               "found by coupling-aware greedy selection")
    elif objective.target_gain is not None:
        need = objective.target_gain * everything.gain
        fitting = [c for c in [*cands, everything] if c.gain >= need * (1 - 1e-12)]
        chosen = min(fitting, key=lambda c: (c.cost(kind), -c.gain))
        why = (f"the cheapest set ({kind}) predicted to reach {objective.target_gain:.0%} of the "
               f"all-layer gain")
    else:
        budget_kind, share = objective.budget  # type: ignore[misc]
        limit = share * everything.cost(budget_kind)
        fitting = [c for c in cands if c.cost(budget_kind) <= limit]
        if not fitting:
            cheapest = min(c.cost(budget_kind) for c in cands)
            raise PlacementError(
                f"--budget {budget_kind}={share:g}: no layer set fits; the cheapest single layer "
                f"costs {cheapest / everything.cost(budget_kind):.2f} of all-layer LoRA"
            )
        chosen = max(fitting, key=lambda c: (c.gain, -c.cost(budget_kind)))
        why = (f"the largest predicted gain of any set whose predicted {budget_kind} is at most "
               f"{share:.0%} of all-layer LoRA's")
    share_of_all = chosen.gain / everything.gain if everything.gain > 0 else math.nan
    cost_text = ", ".join(
        f"{k} {chosen.cost(k) / everything.cost(k):.0%}"
        for k in BUDGET_KINDS if getattr(chosen, _FIELD[k]) is not None
    )
    reason = (
        f"Layers {', '.join(map(str, chosen.layers))}: {why}. Gains from the card's {source}"
        f"{' (measured single-layer LoRA runs)' if source == 'probes' else ''}, combined through "
        f"the coupling matrix (redundant layers add less). Predicted gain {chosen.gain:.4g} "
        f"= {share_of_all:.0%} of all layers' {everything.gain:.4g}; cost relative to all-layer "
        f"LoRA: {cost_text}."
    )
    return Placement(
        objective=objective,
        chosen=chosen,
        all_layers=everything,
        gain_source=source,
        modules=card.module_types() if card.provenance.settings.lora.target_modules == "all-linear"
        else list(card.provenance.settings.lora.target_modules),
        front=pareto_front([*cands, everything], front_kind),
        reason=reason,
    )
