"""Rendering a card: per-layer and per-module tables, card.md (YAML front matter) and text."""

from __future__ import annotations

import math
import textwrap
from typing import Any

import yaml

from layercard.decide import PlacementError, candidates, cost_model, place, standard_objectives
from layercard.findings import findings
from layercard.formatting import fmt, fmt_bytes
from layercard.schema import Card


def layer_table(card: Card) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-layer table (cost and probe columns when measured)."""
    rank = card.provenance.settings.rank
    header = ["layer", "resnorm²", f"resnorm² r={rank}", "rel. resnorm", "grad norm",
              "pred. gain", "max cond.", "max noise amp.", "LoRA params"]
    model = cost_model(card)
    if model is not None:
        header += ["train mem (fit)", "step s (fit)"]
    if card.probe is not None:
        header.append("probe gain")
    rows = []
    for entry in card.layers:
        row = [str(entry.layer), fmt(entry.resnorm2), fmt(entry.resnorm2_rank),
               fmt(entry.rel_resnorm), fmt(entry.grad_norm), fmt(entry.predicted_gain),
               fmt(entry.max_condition_number), fmt(entry.max_noise_amplification),
               f"{entry.lora_params:,}"]
        if model is not None:
            seconds, memory = model.predict([entry.layer])
            row += [fmt_bytes(memory), fmt(seconds)]
        if card.probe is not None:
            row.append(fmt(card.probe.gains[entry.layer]))
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
            fmt(sum(s.resnorm2 for s in sites) / n),
            fmt(sum(s.rel_resnorm for s in sites) / n),
            fmt(sum(s.condition_number for s in sites) / n),
            fmt(sum(s.noise_amplification for s in sites) / n),
            fmt(sum(s.effective_rank for s in sites) / n),
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


def placement_text(card: Card) -> str:
    """Why which layers: the recommended placement for each standard objective, with the
    command that reproduces it (`layercard place card.json ...`)."""
    cands = candidates(card)
    lines = []
    for objective in standard_objectives(card):
        try:
            text = place(card, objective, cands).reason
        except PlacementError as err:
            text = str(err)
        lines.append(f"- `layercard place card.json {objective.describe()}`: {text}")
    return "\n".join(lines)


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
            f"examples ({s.n_loss_tokens:,} loss tokens; base loss {fmt(card.base_loss, 4)}). "
            f"resnorm² is the share of the loss gradient a linear correction of a module can "
            f"explain (covariance-normalized gradient norm, ridge ε = {s.ridge_eps:g}); "
            f"rank-{s.rank} is what LoRA of rank {s.rank} can reach; predicted gain is "
            f"½ vᵀR⁻¹v with v = √resnorm² and R the coupling matrix. See docs/layercard.md."
        ),
        "## Findings",
        "\n".join(f"- {line}" for line in findings(card)),
        "## Placement",
        placement_text(card),
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
            f"{fmt_bytes(p.machine.memory_bytes)} RAM, device {p.machine.device}",
            f"- build time: {fmt(card.timings.stages.get('total', math.nan))} s "
            "(timed quantities are under `timings` in card.json)",
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
        f"base loss {fmt(card.base_loss, 4)}",
        "",
        _text_table(header, rows),
        "",
        "Findings",
        *(wrap.fill(line) for line in findings(card)),
    ]
    return "\n".join(lines) + "\n"
