"""The Layer Card: versioned dataclasses, JSON (atomic), Markdown with YAML front matter, text.

card.json follows SCHEMA. Keys appear in dataclass field order (mappings sorted by key), floats are
written with Python's round-trip repr, and every wall-clock quantity lives under the top-level
"timings" key: with it removed, two CPU builds with the same seed give byte-identical files.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import textwrap
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import torch
import yaml

from layercard.cost import CostModel, MemoryMeasurements, TimingMeasurements
from layercard.statistics import predicted_gain
from layercard.training import LoraSettings

SCHEMA = "layercard/card@1"
CARD_FILES = ("card.json", "card.md")


class CardFormatError(ValueError):
    """A card file is not valid JSON of the supported schema (the message names file and key)."""


class OutDirError(ValueError):
    """The output directory exists and is neither empty nor a previous card (names --out)."""


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


@dataclass
class SiteEntry:
    """Diagnostics of one adaptable linear module (see layercard.statistics.SiteDiagnostics)."""

    layer: int
    module: str
    d_in: int
    d_out: int
    resnorm2: float
    resnorm2_rank: float
    rel_resnorm: float
    grad_norm: float
    act_energy: float
    condition_number: float
    effective_rank: float
    noise_amplification: float
    ridge: float
    rank: int
    residual_energy: float


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
    """Every wall-clock quantity of the build (seconds); the only part that differs between runs."""

    stages: dict[str, float]  # load, measure, cost, probe, total
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

    def _gain_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-layer resnorm², layer coupling matrix) as float64 tensors."""
        res2 = torch.tensor([entry.resnorm2 for entry in self.layers], dtype=torch.float64)
        return res2, torch.tensor(self.coupling.matrix, dtype=torch.float64)

    def predicted_gain(self, layers: Iterable[int]) -> float:
        """Predicted loss drop of adapting `layers` together: ½ vᵀR⁻¹v with v = √resnorm²."""
        return predicted_gain(*self._gain_terms(), sorted(set(layers)))

    def cost_model(self) -> CostModel | None:
        """The fitted cost model (seconds and bytes of any layer set), when cost was measured."""
        if self.cost is None or self.timings.cost is None:
            return None
        return CostModel(
            n_layers=self.n_layers,
            params_per_layer=self.cost.params_per_layer,
            fit_sets=self.cost.fit_sets,
            check_sets=self.cost.check_sets,
            memory=self.cost.memory,
            timing=self.timings.cost,
        )

    def greedy_order(self) -> list[tuple[int, float]]:
        """Forward selection on predicted gain: (layer added, gain of the set so far) per step."""
        res2, rho = self._gain_terms()
        chosen: list[int] = []
        order = []
        while len(chosen) < self.n_layers:
            gains = {
                i: predicted_gain(res2, rho, sorted([*chosen, i]))
                for i in range(self.n_layers)
                if i not in chosen
            }
            best = max(gains, key=gains.__getitem__)  # ties: the lower layer
            chosen.append(best)
            order.append((best, gains[best]))
        return order

    def module_types(self) -> list[str]:
        """Module names relative to a block, in first-seen order."""
        return list(dict.fromkeys(site.module for site in self.sites))


# ---------------------------------------------------------------- JSON


def _encode(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def card_to_dict(card: Card) -> dict[str, Any]:
    """The card as plain JSON data (non-finite floats become null)."""
    return _encode(card)


def to_json(card: Card) -> str:
    """card.json text: stable key order, exact floats, trailing newline."""
    return json.dumps(card_to_dict(card), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _fits(kind: Any, value: Any) -> bool:
    origin = get_origin(kind) or kind
    if origin in (list, tuple):
        return isinstance(value, list)
    if origin is dict or is_dataclass(origin):
        return isinstance(value, dict)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, origin)


def _decode(kind: Any, value: Any, where: str) -> Any:
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        arms = get_args(kind)
        if value is None and type(None) in arms:
            return None
        for arm in arms:
            if arm is not type(None) and _fits(arm, value):
                return _decode(arm, value, where)
        raise CardFormatError(f"{where}: unexpected value {value!r}")
    if is_dataclass(kind):
        if not isinstance(value, dict):
            raise CardFormatError(f"{where}: expected an object, got {value!r}")
        hints = get_type_hints(kind)
        names = [f.name for f in fields(kind)]
        if set(value) != set(names):
            missing, extra = sorted(set(names) - set(value)), sorted(set(value) - set(names))
            raise CardFormatError(f"{where}: missing keys {missing}, unknown keys {extra}")
        return kind(**{n: _decode(hints[n], value[n], f"{where}.{n}") for n in names})
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise CardFormatError(f"{where}: expected a list, got {value!r}")
        item = get_args(kind)[0]
        items = [_decode(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise CardFormatError(f"{where}: expected an object, got {value!r}")
        key_kind, value_kind = get_args(kind)
        return {key_kind(k): _decode(value_kind, v, f"{where}.{k}") for k, v in value.items()}
    if kind is float:
        if value is None:
            return math.nan
        if not _fits(float, value):
            raise CardFormatError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if kind is Any:
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CardFormatError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def from_json(text: str, *, source: str = "card.json") -> Card:
    """Parse card.json text; CardFormatError (naming `source` and the key) if it does not fit."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise CardFormatError(f"{source}: not valid JSON: {err}") from err
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else None
        raise CardFormatError(f"{source}: schema {found!r} is not supported (expected {SCHEMA!r})")
    return _decode(Card, data, source)


def read_card(path: str | os.PathLike[str]) -> Card:
    """Load a card.json file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise CardFormatError(f"{path}: cannot read: {err.strerror}") from err
    return from_json(text, source=str(path))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then move it onto `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Write a UTF-8 text file atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def check_out_dir(out: Path) -> None:
    """OutDirError (naming --out) unless `out` is absent, empty, or a previous card dir."""
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / "card.json").is_file())
    ):
        raise OutDirError(
            f"--out {out}: exists and is not an empty directory or a previous layer card"
        )


def write_card_dir(
    card: Card, out: str | os.PathLike[str], extra: Callable[[Path], None] | None = None
) -> Path:
    """Write card.json, card.md (and whatever `extra(dir)` adds, e.g. plots) into `out` at once.

    Files are written into a fresh directory beside `out`, which then replaces `out`; an
    existing `out` must be empty or hold a previous card (card.json), else OutDirError.
    """
    out = Path(out)
    check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        (staging / "card.json").write_text(to_json(card), encoding="utf-8")
        (staging / "card.md").write_text(to_markdown(card), encoding="utf-8")
        if extra is not None:
            extra(staging)
        staging.chmod(0o777 & ~_umask())
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, old / out.name)
            os.replace(staging, out)
            shutil.rmtree(old)
        else:
            os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


# ---------------------------------------------------------------- findings


def _fmt(x: float, digits: int = 3) -> str:
    if not math.isfinite(x):
        return "n/a"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def _bytes(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def _layers_text(layers: Sequence[int]) -> str:
    return ", ".join(str(i) for i in layers)


def _signal_finding(card: Card) -> str:
    gains = [entry.predicted_gain for entry in card.layers]
    total = sum(gains)
    if total <= 0:
        return "No layer shows correctable signal (all resnorms are zero)."
    top = sorted(range(card.n_layers), key=lambda i: (-gains[i], i))[:3]
    thirds = [range(card.n_layers)[k * card.n_layers // 3 : (k + 1) * card.n_layers // 3]
              for k in range(3)]
    shares = [100 * sum(gains[i] for i in part) / total for part in thirds]
    by_type = {
        m: sum(s.rel_resnorm for s in card.sites if s.module == m)
        / sum(1 for s in card.sites if s.module == m)
        for m in card.module_types()
    }
    best = max(by_type, key=lambda m: by_type[m])
    worst = min(by_type, key=lambda m: by_type[m])
    return (
        f"Correctable signal concentrates in layers {_layers_text(top)} "
        f"({100 * sum(gains[i] for i in top) / total:.0f}% of the summed single-layer predicted "
        f"gain); early / middle / late thirds hold {shares[0]:.0f}% / {shares[1]:.0f}% / "
        f"{shares[2]:.0f}%. By module type, {best} can fix the largest share of its residual "
        f"(mean relative resnorm {_fmt(by_type[best])}), {worst} the smallest "
        f"({_fmt(by_type[worst])})."
    )


def _conditioning_finding(card: Card) -> str:
    amp = [entry.max_noise_amplification for entry in card.layers]
    median = sorted(amp)[len(amp) // 2]
    bad = [i for i in range(card.n_layers) if amp[i] >= 2 * median]
    worst = max(range(card.n_layers), key=lambda i: amp[i])
    cond = card.layers[worst].max_condition_number
    text = (
        f"Conditioning: the worst module input is in layer {worst} (noise amplification "
        f"{_fmt(amp[worst])}, condition number {_fmt(cond)}; median over layers {_fmt(median)}). "
    )
    if bad:
        which = f"Layers {_layers_text(bad)} are" if len(bad) > 1 else f"Layer {bad[0]} is"
        return text + (
            f"{which} ill-conditioned (≥ 2× the median): corrections estimated there are noisy "
            "and harder to optimize than their resnorm suggests."
        )
    return text + "No layer stands out as ill-conditioned (none reaches 2× the median)."


def _coupling_finding(card: Card) -> str:
    rho = card.coupling.matrix
    n = card.n_layers
    if n < 2:
        return "Coupling: a single block, nothing to couple."
    adjacent = [abs(rho[i][i + 1]) for i in range(n - 1)]
    far = [abs(rho[i][j]) for i in range(n) for j in range(i + 2, n)]
    strongest = max(range(n - 1), key=lambda i: adjacent[i])
    mean_adj = sum(adjacent) / len(adjacent)
    text = (
        f"Coupling (over {card.coupling.n_examples} examples): neighbouring layers have mean "
        f"|ρ| {_fmt(mean_adj)} "
        f"(strongest {_fmt(adjacent[strongest])} between layers {strongest} and {strongest + 1})"
    )
    if far:
        text += f", layers further apart {_fmt(sum(far) / len(far))}"
    if mean_adj < 0.3:
        return text + "; weak, so single-layer gains add up approximately."
    return text + "; adapting neighbours together is partly redundant (gains do not add up)."


def _greedy_finding(card: Card) -> str:
    order = card.greedy_order()
    full = order[-1][1]
    if full <= 0:
        return "Greedy selection: no predicted gain to select for."
    parts = []
    for target in (0.5, 0.8, 0.9):
        k = next(i for i, (_, gain) in enumerate(order, 1) if gain >= target * full)
        parts.append(f"{k} for {target:.0%}")
    first = [layer for layer, _ in order[:5]]
    text = (
        f"Greedy coupling-aware selection on the predicted gain picks layers "
        f"{_layers_text(first)} first; layers needed to reach a share of the all-layer predicted "
        f"gain ({_fmt(full)}): {', '.join(parts)}."
    )
    singles = sum(entry.predicted_gain for entry in card.layers)
    if full > 1.5 * singles:
        text += (
            f" Caution: the all-layer prediction is {full / singles:.0f}× the sum of single-layer "
            "gains, because the coupling matrix is nearly singular; predictions for sets of "
            "layers are unreliable on this card (single-layer gains are not affected)."
        )
    return text


def _cost_finding(card: Card) -> str:
    model = card.cost_model()
    if card.cost is None or model is None:
        return "Cost was not measured (--no-cost)."
    n = card.n_layers
    top_s, top_b = model.predict([n - 1])
    low_s, low_b = model.predict([0])
    all_s, all_b = model.predict(range(n))
    errors = card.cost.memory.check_errors + model.timing.check_errors
    check = (
        f" The fit is off by at most {100 * max(abs(e) for e in errors):.0f}% on "
        f"{len(card.cost.check_sets)} multi-layer check sets." if errors else ""
    )
    params = sum(card.cost.params_per_layer.values()) / n
    return (
        f"Cost of going deep: one adapted layer at the top costs about {_fmt(top_s)} s per step "
        f"and {_bytes(top_b)} of training memory, at the bottom {_fmt(low_s)} s and "
        f"{_bytes(low_b)} (×{low_s / top_s:.1f} time, ×{low_b / max(top_b, 1):.1f} memory); all "
        f"layers {_fmt(all_s)} s and {_bytes(all_b)}.{check} Each layer adds {params:,.0f} LoRA "
        f"parameters and, unmerged, {1e3 * model.timing.serving_seconds_per_layer:.2f} ms per "
        f"generated token at serving (merged adapters add none). Times are wall-clock on "
        f"{card.provenance.machine.device} with {model.timing.threads} threads."
    )


def _probe_finding(card: Card) -> str:
    if card.probe is None:
        return (
            "No probes were run (--probe-steps 0), so how well predicted gains rank layers on "
            "this task is untested."
        )
    rho = card.probe.spearman
    verdict = (
        "good: the cheap prediction ranks layers usefully" if rho >= 0.6
        else "moderate: use the prediction as a rough guide" if rho >= 0.3
        else "poor: do not rank layers by the prediction alone on this task"
    )
    best = max(range(card.n_layers), key=lambda i: card.probe.gains[i])
    return (
        f"Predicted vs probed gains ({card.probe.steps}-step single-layer LoRA, dev loss drop): "
        f"Spearman ρ = {_fmt(rho)}, {verdict}. The largest probed drop is at layer {best} "
        f"({_fmt(card.probe.gains[best])})."
    )


def findings(card: Card) -> list[str]:
    """Plain-language findings: signal, conditioning, coupling, greedy order, cost, probes."""
    return [
        _signal_finding(card),
        _conditioning_finding(card),
        _coupling_finding(card),
        _greedy_finding(card),
        _cost_finding(card),
        _probe_finding(card),
    ]


# ---------------------------------------------------------------- tables


def layer_table(card: Card) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-layer table (cost and probe columns when measured)."""
    rank = card.provenance.settings.rank
    header = ["layer", "resnorm²", f"resnorm² r={rank}", "rel. resnorm", "grad norm",
              "pred. gain", "max cond.", "max noise amp.", "LoRA params"]
    model = card.cost_model()
    if model is not None:
        header += ["train mem (fit)", "step s (fit)"]
    if card.probe is not None:
        header.append("probe gain")
    rows = []
    for entry in card.layers:
        row = [str(entry.layer), _fmt(entry.resnorm2), _fmt(entry.resnorm2_rank),
               _fmt(entry.rel_resnorm), _fmt(entry.grad_norm), _fmt(entry.predicted_gain),
               _fmt(entry.max_condition_number), _fmt(entry.max_noise_amplification),
               f"{entry.lora_params:,}"]
        if model is not None:
            seconds, memory = model.predict([entry.layer])
            row += [_bytes(memory), _fmt(seconds)]
        if card.probe is not None:
            row.append(_fmt(card.probe.gains[entry.layer]))
        rows.append(row)
    return header, rows


def module_table(card: Card) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-module-type table (means over layers)."""
    header = ["module", "d_in→d_out", "mean resnorm²", "mean rel. resnorm", "mean cond.",
              "mean noise amp.", "mean eff. rank"]
    rows = []
    for module in card.module_types():
        sites = [s for s in card.sites if s.module == module]
        n = len(sites)
        rows.append([
            module,
            f"{sites[0].d_in}→{sites[0].d_out}",
            _fmt(sum(s.resnorm2 for s in sites) / n),
            _fmt(sum(s.rel_resnorm for s in sites) / n),
            _fmt(sum(s.condition_number for s in sites) / n),
            _fmt(sum(s.noise_amplification for s in sites) / n),
            _fmt(sum(s.effective_rank for s in sites) / n),
        ])
    return header, rows


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [cells[0].ljust(widths[0])]
        padded += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


# ---------------------------------------------------------------- Markdown and terminal


def front_matter(card: Card) -> dict[str, Any]:
    """YAML front matter in the style of a Hugging Face model card."""
    p = card.provenance
    return {
        "library_name": "peft",
        "base_model": p.model.id,
        "tags": ["layercard", "lora", "peft", "layer-selection"],
        "datasets": [p.task.name],
        "layercard": {
            "schema": card.schema,
            "weights_hash": p.model.weights_hash,
            "task_data_hash": p.task.data_hash,
            "n_layers": card.n_layers,
            "probe_examples": p.settings.probe_examples,
            "rank": p.settings.rank,
            "ridge_eps": p.settings.ridge_eps,
            "seed": p.settings.seed,
            "coupling_examples": card.coupling.n_examples,
            "probe_steps": p.settings.probe_steps,
            "spearman_predicted_vs_probed": None if card.probe is None else card.probe.spearman,
        },
    }


def to_markdown(card: Card) -> str:
    """card.md: YAML front matter, findings, per-layer and per-module tables, provenance."""
    p = card.provenance
    s = p.settings
    yaml_text = yaml.safe_dump(front_matter(card), sort_keys=False, allow_unicode=True)
    versions = ", ".join(f"{k} {v}" for k, v in sorted(p.versions.items()))
    sections = [
        f"---\n{yaml_text}---",
        f"# Layer Card: {p.model.id} on {p.task.name}",
        (
            f"Per-layer LoRA diagnostics of the frozen model `{p.model.id}` "
            f"({p.model.architecture}, {p.model.n_layers} blocks, {p.model.n_params:,} parameters) "
            f"on the {p.task.kind} task `{p.task.name}`, measured on {s.probe_examples} probe "
            f"examples ({s.n_loss_tokens:,} loss tokens; base loss {_fmt(card.base_loss, 4)}). "
            f"resnorm² is the share of the loss gradient a linear correction of a module can "
            f"explain (covariance-normalized gradient norm, ridge ε = {s.ridge_eps:g}); "
            f"rank-{s.rank} is what LoRA of rank {s.rank} can reach; predicted gain is "
            f"½ vᵀR⁻¹v with v = √resnorm² and R the coupling matrix. See docs/layercard.md."
        ),
        "## Findings",
        "\n".join(f"- {line}" for line in findings(card)),
        "## Per layer",
        _markdown_table(*layer_table(card)),
        "## Per module type",
        _markdown_table(*module_table(card)),
        "## Plots",
        "![resnorm](resnorm.png) ![conditioning](conditioning.png) "
        "![coupling](coupling.png)" + (" ![cost](cost.png)" if card.cost else "")
        + " ![gain vs cost](gain_vs_cost.png)",
        "## Provenance",
        "\n".join([
            f"- model: `{p.model.id}` → `{p.model.source}`, "
            f"weights sha256 `{p.model.weights_hash}`",
            f"- task: `{p.task.name}` from `{p.task.source}`, data sha256 `{p.task.data_hash}`, "
            f"split seed {p.task.split_seed}, sizes "
            + ", ".join(f"{k} {v}" for k, v in sorted(p.task.split_sizes.items())),
            f"- settings: seed {s.seed}, probe examples {s.probe_examples}, batch size "
            f"{s.batch_size}, max length {s.max_length}, rank {s.rank}, ridge ε {s.ridge_eps:g}, "
            f"coupling examples {s.coupling_examples}, probe steps {s.probe_steps}, LoRA alpha "
            f"{s.lora.alpha:g}, lr {s.lora.lr:g}",
            f"- versions: {versions}",
            f"- machine: {p.machine.platform}, {p.machine.processor or 'unknown CPU'}, "
            f"{p.machine.cpu_count} cores, {p.machine.torch_threads} torch threads, "
            f"{_bytes(p.machine.memory_bytes)} RAM, device {p.machine.device}",
            f"- build time: {_fmt(card.timings.stages.get('total', math.nan))} s "
            "(wall-clock quantities are under `timings` in card.json)",
        ]),
    ]
    return "\n\n".join(sections) + "\n"


_WIDE_ONLY = {"resnorm²", "grad norm", "LoRA params", "train mem (fit)"}  # in card.md only


def render_text(card: Card, width: int = 100) -> str:
    """Plain-text rendering for the terminal: header, per-layer table with gain bars, findings."""
    p = card.provenance
    full_header, full_rows = layer_table(card)
    keep = [i for i, h in enumerate(full_header) if h not in _WIDE_ONLY]
    header = [full_header[i] for i in keep] + ["pred. gain (bar)"]
    gains = [entry.predicted_gain for entry in card.layers]
    top = max(max(gains, default=0.0), 1e-300)
    rows = [
        [row[i] for i in keep] + [("#" * round(16 * max(gain, 0.0) / top)).ljust(16)]
        for row, gain in zip(full_rows, gains, strict=True)
    ]
    wrap = textwrap.TextWrapper(width=width, initial_indent="- ", subsequent_indent="  ")
    lines = [
        f"Layer Card ({card.schema}): {p.model.id} on {p.task.name}",
        f"{p.model.n_layers} blocks, {p.settings.probe_examples} probe examples, rank "
        f"{p.settings.rank}, ridge ε {p.settings.ridge_eps:g}, seed {p.settings.seed}, "
        f"base loss {_fmt(card.base_loss, 4)}",
        "",
        _text_table(header, rows),
        "",
        "Findings",
        *(wrap.fill(line) for line in findings(card)),
    ]
    return "\n".join(lines) + "\n"
