"""The cost model of LoRA on a layer set, fitted from measurements (numpy only, no torch).

Training cost is dominated by how deep backward must go (down to the lowest adapted layer), so
every measured cost is modelled as

    cost(S) ≈ intercept + per_depth · (n_layers − min S) + per_adapter · |S|

fitted by least squares on single-layer runs at a few depths plus all-layer LoRA, and checked on
a few multi-layer sets that were not fitted. Deterministic quantities (parameter counts, memory
bytes) are kept apart from timed ones (seconds), so a card is bit-identical across runs
except for the `TimingMeasurements`. `layercard.cost` takes the measurements.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CostFit:
    """cost(S) ≈ intercept + per_depth·(n_layers − min S) + per_adapter·|S| (least squares)."""

    intercept: float
    per_depth: float
    per_adapter: float

    def predict(self, layers: Iterable[int], n_layers: int) -> float:
        """Predicted cost of adapting `layers` in a model with `n_layers` blocks."""
        coefficients = (self.intercept, self.per_depth, self.per_adapter)
        return float(np.dot(coefficients, cost_features(layers, n_layers)))


def cost_features(layers: Iterable[int], n_layers: int) -> tuple[float, float, float]:
    """Regressors of the cost model: (1, layers from the lowest adapted one to the top, |S|)."""
    chosen = set(layers)
    if not chosen:
        raise ValueError("cost_features: empty layer set")
    return 1.0, float(n_layers - min(chosen)), float(len(chosen))


def fit_cost(
    layer_sets: Sequence[Iterable[int]], values: Sequence[float], n_layers: int
) -> CostFit:
    """Least-squares CostFit of `values` measured on `layer_sets` (minimum-norm if unidentified)."""
    x = np.array([cost_features(s, n_layers) for s in layer_sets], dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    coefficients, *_ = np.linalg.lstsq(x, y, rcond=None)
    return CostFit(*(float(c) for c in coefficients))


def relative_errors(
    fit: CostFit, layer_sets: Sequence[Iterable[int]], values: Sequence[float], n_layers: int
) -> list[float]:
    """(predicted − measured) / measured for each layer set."""
    return [(fit.predict(s, n_layers) - v) / v for s, v in zip(layer_sets, values, strict=True)]


def depth_layer_sets(n_layers: int, depths: int) -> list[tuple[int, ...]]:
    """Single-layer sets at `depths` depths spread evenly from the bottom to the top block."""
    picks = np.rint(np.linspace(0, n_layers - 1, min(depths, n_layers))).astype(int)
    return [(int(i),) for i in sorted(set(picks.tolist()))]


def check_layer_sets(n_layers: int) -> list[tuple[int, ...]]:
    """A few multi-layer sets (quartiles, top half, bottom-and-top) to check the fit on."""
    q = n_layers // 4
    candidates = [(q, 2 * q, 3 * q), tuple(range(n_layers // 2, n_layers)), (0, n_layers - 1)]
    all_layers = tuple(range(n_layers))
    sets: list[tuple[int, ...]] = []
    for candidate in candidates:
        s = tuple(sorted(set(candidate)))
        if len(s) > 1 and s != all_layers and s not in sets:
            sets.append(s)
    return sets


@dataclass
class MemoryMeasurements:
    """Deterministic training memory (bytes) beyond the frozen weights, per measured layer set.

    method "saved-tensors" (CPU): bytes of the tensors autograd saves for backward during the
    forward pass (saved_tensors_hooks, deduplicated by storage, parameters excluded) plus adapter
    weights, gradients and AdamW state (4 copies). method "cuda-peak": peak allocated bytes of the
    first step minus the frozen weights and the batch (torch.cuda.max_memory_allocated).
    """

    method: str
    fit_bytes: list[int]
    check_bytes: list[int]
    all_layers_bytes: int
    fit: CostFit
    check_errors: list[float]


@dataclass
class TimingMeasurements:
    """Timed costs (seconds; vary from run to run): optimizer step and serving latency. Wall
    time on CUDA, the process's CPU time on CPU (`layercard.cost.step_clock`).

    Step seconds: fastest of `timed_steps` steps after warm-up (least disturbed by other load).
    Serving: seconds per generated token (batch 1, KV cache, greedy) with unmerged adapters on k
    layers, fitted as base + per_layer·k; merged adapters add none (but lose hot-swapping).
    """

    device: str
    threads: int
    fit_seconds: list[float]
    check_seconds: list[float]
    all_layers_seconds: float
    fit: CostFit
    check_errors: list[float]
    serving_layers: list[int]
    serving_seconds_per_token: list[float]
    serving_base_seconds: float
    serving_seconds_per_layer: float


@dataclass
class CostModel:
    """Measured and fitted cost of LoRA on any layer set; `predict` answers (seconds, bytes)."""

    n_layers: int
    params_per_layer: dict[int, int]
    fit_sets: list[tuple[int, ...]]  # single-layer depths, then all layers
    check_sets: list[tuple[int, ...]]
    memory: MemoryMeasurements
    timing: TimingMeasurements

    def predict(self, layers: Iterable[int]) -> tuple[float, int]:
        """Predicted (seconds per optimizer step, training bytes beyond frozen weights)."""
        layers = list(layers)
        seconds = self.timing.fit.predict(layers, self.n_layers)
        return seconds, round(self.memory.fit.predict(layers, self.n_layers))

    def params(self, layers: Iterable[int]) -> int:
        """LoRA parameter count of adapting `layers`."""
        return sum(self.params_per_layer[i] for i in set(layers))
