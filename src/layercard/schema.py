"""The Layer Card's schema: versioned dataclasses, no behaviour beyond simple accessors.

card.json follows SCHEMA (`layercard.codec` reads and writes it): keys appear in dataclass field
order, and every timed quantity lives under the top-level "timings" key. No torch here, so
`layercard show` starts fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from layercard.config import LoraSettings
from layercard.costmodel import MemoryMeasurements, TimingMeasurements
from layercard.sites import Site, SiteDiagnostics

SCHEMA = "layercard/card@1"


@dataclass
class ModelInfo:
    """Which model was measured: what the user passed, where it resolved to, its weights hash."""

    id: str
    source: str
    weights_hash: str
    architecture: str
    blocks_path: str
    n_layers: int
    n_params: int


@dataclass
class TaskInfo:
    """Which task data the measurements saw (see layercard.data.TaskData)."""

    name: str
    kind: str
    source: str
    data_hash: str
    split_seed: int
    split_sizes: dict[str, int]


@dataclass
class BuildSettings:
    """Settings of the build that determine every number in the card."""

    seed: int
    probe_examples: int
    n_probe_tokens: int  # non-padding tokens
    n_loss_tokens: int  # completion tokens that carry loss
    batch_size: int
    max_length: int
    rank: int
    ridge_eps: float
    coupling_examples: int
    coupling_method: str
    probe_steps: int
    lora: LoraSettings


@dataclass
class Machine:
    """Where the card was built (determinism holds per machine, thread count and versions)."""

    platform: str
    processor: str
    cpu_count: int
    torch_threads: int
    memory_bytes: int
    device: str


@dataclass
class Provenance:
    """Everything needed to reproduce the card: model, task, settings, versions, machine."""

    model: ModelInfo
    task: TaskInfo
    settings: BuildSettings
    versions: dict[str, str]
    machine: Machine


@dataclass(frozen=True)
class SiteEntry(SiteDiagnostics, Site):
    """One adaptable linear module and its diagnostics: the fields of `Site`, then those of
    `SiteDiagnostics` (see `layercard.statistics.site_diagnostics` for their definitions)."""

    @classmethod
    def of(cls, site: Site, diagnostics: SiteDiagnostics) -> SiteEntry:
        """The entry of `site` measured as `diagnostics`."""
        return cls(**vars(site), **vars(diagnostics))


@dataclass
class LayerEntry:
    """Per-block summary; the layer's resnorm² is the sum over its modules (first-order gain)."""

    layer: int
    resnorm2: float
    resnorm2_rank: float
    rel_resnorm: float  # Σ resnorm² / Σ residual energy over the block's modules
    grad_norm: float  # Frobenius norm over all the block's weight gradients
    max_condition_number: float
    max_noise_amplification: float
    predicted_gain: float  # ½ resnorm² of the layer alone
    lora_params: int


@dataclass
class Coupling:
    """Layer-level coupling matrix ρ (symmetric, unit diagonal) and how it was estimated."""

    method: str
    n_examples: int
    matrix: list[list[float]]


@dataclass
class CostSection:
    """Deterministic part of the cost model: LoRA parameters and training memory (bytes)."""

    params_per_layer: dict[int, int]
    fit_sets: list[tuple[int, ...]]
    check_sets: list[tuple[int, ...]]
    memory: MemoryMeasurements


@dataclass
class ProbeSection:
    """Short single-layer LoRA runs: dev-loss drop per layer, rank agreement with prediction."""

    steps: int
    n_dev_examples: int
    base_dev_loss: float
    gains: list[float]
    spearman: float


@dataclass
class Timings:
    """Every timed quantity of the build (seconds); the only part that differs between runs."""

    stages: dict[str, float]  # wall: load, measure, cost, probe, total; total_cpu: CPU time
    cost: TimingMeasurements | None


@dataclass
class Card:
    """A Layer Card: provenance, per-layer and per-module diagnostics, coupling, cost, probes."""

    schema: str
    provenance: Provenance
    base_loss: float
    layers: list[LayerEntry]
    sites: list[SiteEntry]
    coupling: Coupling
    cost: CostSection | None
    probe: ProbeSection | None
    timings: Timings

    @property
    def n_layers(self) -> int:
        """Number of transformer blocks."""
        return len(self.layers)

    def module_types(self) -> list[str]:
        """Module names relative to a block, in first-seen order."""
        return list(dict.fromkeys(site.module for site in self.sites))
