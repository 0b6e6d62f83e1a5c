"""Card schema, JSON round trip, Markdown, terminal rendering and plots on synthetic card data."""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from layercard.codec import CardFormatError, card_to_dict, from_json, read_card, to_json
from layercard.config import LoraSettings
from layercard.costmodel import CostFit, MemoryMeasurements, TimingMeasurements
from layercard.decide import cost_model, greedy_order, set_gain
from layercard.findings import findings
from layercard.output import OutDirError, write_card_dir
from layercard.plots import write_plots
from layercard.render import render_text, to_markdown
from layercard.schema import (
    SCHEMA,
    BuildSettings,
    Card,
    CostSection,
    Coupling,
    LayerEntry,
    Machine,
    ModelInfo,
    ProbeSection,
    Provenance,
    SiteEntry,
    TaskInfo,
    Timings,
)

MODULES = ("self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def synthetic_card(
    n_layers: int = 6,
    *,
    cost: bool = True,
    probe: bool = True,
    rho: float = 0.1,
    seed: int = 0,
) -> Card:
    """A card with random but plausible numbers; coupling ρ^|i-j| between layers."""
    rng = random.Random(seed)
    sites = []
    for layer in range(n_layers):
        for module in MODULES:
            energy = rng.uniform(1.0, 2.0)
            res2 = rng.uniform(0.01, 0.5) * energy
            sites.append(SiteEntry(
                layer=layer, module=module, d_in=64, d_out=32 if "q" in module else 64,
                resnorm2=res2, resnorm2_rank=0.7 * res2, rel_resnorm=res2 / energy,
                grad_norm=rng.uniform(0.1, 1.0), act_energy=rng.uniform(0.5, 3.0),
                condition_number=rng.uniform(10, 1e4), effective_rank=rng.uniform(5, 60),
                noise_amplification=rng.uniform(1, 50), ridge=1e-3, rank=8,
                residual_energy=energy,
            ))
    layers = []
    for layer in range(n_layers):
        mine = [s for s in sites if s.layer == layer]
        res2 = sum(s.resnorm2 for s in mine)
        layers.append(LayerEntry(
            layer=layer, resnorm2=res2, resnorm2_rank=0.7 * res2,
            rel_resnorm=res2 / sum(s.residual_energy for s in mine),
            grad_norm=math.sqrt(sum(s.grad_norm**2 for s in mine)),
            max_condition_number=max(s.condition_number for s in mine),
            max_noise_amplification=max(s.noise_amplification for s in mine),
            predicted_gain=0.5 * res2, lora_params=8 * 3 * 128,
        ))
    matrix = [[rho ** abs(i - j) for j in range(n_layers)] for i in range(n_layers)]
    fit_sets = [(0,), (n_layers // 2,), (n_layers - 1,), tuple(range(n_layers))]
    check_sets = [(1, n_layers - 1)]
    time_fit = CostFit(intercept=0.2, per_depth=0.05, per_adapter=0.001)
    memory_fit = CostFit(intercept=1e6, per_depth=2e6, per_adapter=1e4)
    cost_section = timing = None
    if cost:
        cost_section = CostSection(
            params_per_layer=dict.fromkeys(range(n_layers), 8 * 3 * 128),
            fit_sets=fit_sets,
            check_sets=check_sets,
            memory=MemoryMeasurements(
                method="saved-tensors",
                fit_bytes=[round(memory_fit.predict(s, n_layers)) for s in fit_sets],
                check_bytes=[round(memory_fit.predict(s, n_layers) * 1.02) for s in check_sets],
                all_layers_bytes=round(memory_fit.predict(fit_sets[-1], n_layers)),
                fit=memory_fit,
                check_errors=[-0.02],
            ),
        )
        timing = TimingMeasurements(
            device="cpu", threads=2,
            fit_seconds=[time_fit.predict(s, n_layers) for s in fit_sets],
            check_seconds=[time_fit.predict(s, n_layers) * 0.95 for s in check_sets],
            all_layers_seconds=time_fit.predict(fit_sets[-1], n_layers),
            fit=time_fit, check_errors=[0.05],
            serving_layers=[0, n_layers // 2, n_layers],
            serving_seconds_per_token=[0.01, 0.012, 0.014],
            serving_base_seconds=0.01, serving_seconds_per_layer=0.0004,
        )
    probe_section = None
    if probe:
        probe_section = ProbeSection(
            steps=10, n_dev_examples=32, base_dev_loss=2.5,
            gains=[e.predicted_gain * rng.uniform(0.5, 1.5) for e in layers], spearman=0.6,
        )
    return Card(
        schema=SCHEMA,
        provenance=Provenance(
            model=ModelInfo(
                id="tiny-llama", source="/tmp/tiny", weights_hash="ab" * 32,
                architecture="LlamaForCausalLM", blocks_path="model.layers",
                n_layers=n_layers, n_params=123456,
            ),
            task=TaskInfo(
                name="toy", kind="classification", source="/tmp/toy.jsonl",
                data_hash="cd" * 32, split_seed=0,
                split_sizes={"train": 80, "dev": 10, "test": 10},
            ),
            settings=BuildSettings(
                seed=0, probe_examples=64, n_probe_tokens=900, n_loss_tokens=64, batch_size=8,
                max_length=64, rank=8, ridge_eps=1e-3, coupling_examples=32,
                coupling_method="empirical-fisher", probe_steps=10 if probe else 0,
                lora=LoraSettings(rank=8, alpha=16.0),
            ),
            versions={"torch": "2.13.0", "python": "3.11.9"},
            machine=Machine(
                platform="Linux x86_64", processor="test CPU", cpu_count=2, torch_threads=2,
                memory_bytes=8 * 2**30, device="cpu",
            ),
        ),
        base_loss=2.75,
        layers=layers,
        sites=sites,
        coupling=Coupling(method="empirical-fisher", n_examples=32, matrix=matrix),
        cost=cost_section,
        probe=probe_section,
        timings=Timings(
            stages={"load": 1.0, "measure": 2.0, "total": 3.5}, cost=timing
        ),
    )


@pytest.mark.parametrize(("cost", "probe"), [(True, True), (False, False)])
def test_json_round_trip_is_exact(cost: bool, probe: bool) -> None:
    card = synthetic_card(cost=cost, probe=probe)
    text = to_json(card)
    again = from_json(text)
    assert again == card
    assert to_json(again) == text
    if cost:
        assert again.cost.fit_sets[-1] == tuple(range(card.n_layers))
        assert cost_model(again).predict([0, 2]) == cost_model(card).predict([0, 2])
    else:
        assert cost_model(again) is None


def test_json_layout_is_stable_and_pinned() -> None:
    data = card_to_dict(synthetic_card())
    assert list(data) == [
        "schema", "provenance", "base_loss", "layers", "sites", "coupling", "cost", "probe",
        "timings",
    ]
    assert data["schema"] == SCHEMA == "layercard/card@1"
    assert list(data["provenance"]) == ["model", "task", "settings", "versions", "machine"]
    assert list(data["provenance"]["task"]["split_sizes"]) == ["dev", "test", "train"]
    assert list(data["cost"]["params_per_layer"]) == [str(i) for i in range(6)]
    assert set(data["sites"][0]) >= {
        "layer", "module", "resnorm2", "resnorm2_rank", "rel_resnorm", "grad_norm",
        "act_energy", "condition_number", "effective_rank", "noise_amplification",
    }
    # every wall-clock quantity sits under "timings"
    assert "seconds" not in json.dumps({k: v for k, v in data.items() if k != "timings"})


def test_non_finite_numbers_are_written_as_null() -> None:
    card = synthetic_card()
    card.sites[0] = replace(card.sites[0], condition_number=math.inf)
    text = to_json(card)
    json.loads(text)  # strict JSON, no Infinity literal
    assert "Infinity" not in text
    assert math.isnan(from_json(text).sites[0].condition_number)


def test_from_json_rejects_other_schemas_and_malformed_cards(tmp_path: Path) -> None:
    data = card_to_dict(synthetic_card())
    with pytest.raises(CardFormatError, match="schema 'layercard/card@0'"):
        from_json(json.dumps({**data, "schema": "layercard/card@0"}))
    broken = json.loads(json.dumps(data))
    del broken["layers"][2]["resnorm2"]
    with pytest.raises(CardFormatError, match=r"layers\[2\]: missing keys \['resnorm2'\]"):
        from_json(json.dumps(broken))
    broken = json.loads(json.dumps(data))
    broken["coupling"]["n_examples"] = "many"
    with pytest.raises(CardFormatError, match=r"coupling\.n_examples"):
        from_json(json.dumps(broken))
    with pytest.raises(CardFormatError, match="not valid JSON"):
        from_json("{")
    with pytest.raises(CardFormatError, match="cannot read"):
        read_card(tmp_path / "missing.json")


def test_predicted_gain_is_additive_without_coupling_and_greedy_skips_duplicates() -> None:
    card = synthetic_card(rho=0.0)
    gains = [entry.predicted_gain for entry in card.layers]
    assert set_gain(card, [1, 3, 4]) == pytest.approx(gains[1] + gains[3] + gains[4])
    order = greedy_order(card)
    assert [layer for layer, _ in order] == sorted(range(6), key=lambda i: -gains[i])
    assert order[-1][1] == pytest.approx(sum(gains))

    coupled = synthetic_card(rho=0.0)
    coupled.coupling.matrix[0][1] = coupled.coupling.matrix[1][0] = 0.99
    for i in (0, 1):
        coupled.layers[i].resnorm2 = 10.0
    first, second = (layer for layer, _ in greedy_order(coupled)[:2])
    assert first == 0 and second != 1  # layer 1 is nearly a copy of layer 0


def test_markdown_has_front_matter_findings_and_table() -> None:
    card = synthetic_card()
    text = to_markdown(card)
    assert text.startswith("---\n")
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["base_model"] == "tiny-llama"
    assert meta["library_name"] == "peft"
    assert meta["layercard"]["schema"] == SCHEMA
    assert meta["layercard"]["spearman_predicted_vs_probed"] == 0.6
    assert "## Findings" in body and "## Per layer" in body
    table = [line for line in body.splitlines() if line.startswith("| ")]
    header = table[0]
    assert "resnorm² r=8" in header and "probe gain" in header and "step s (fit)" in header
    layer_rows = [line for line in table if line.split("|")[1].strip().isdigit()]
    assert [int(line.split("|")[1]) for line in layer_rows] == list(range(6))
    assert "Spearman ρ = 0.6" in body


def _numbers(text: str) -> list[float]:
    """Every number in a line of text, in order (thousands separators removed)."""
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", text.replace(",", ""))]


def _finding(card: Card, start: str) -> str:
    return next(line for line in findings(card) if line.startswith(start))


def test_signal_finding_names_the_top_layers_and_their_shares() -> None:
    card = synthetic_card(n_layers=6, seed=3)
    gains = [0.5 * entry.resnorm2 for entry in card.layers]
    top = sorted(range(6), key=lambda i: -gains[i])[:3]
    line = _finding(card, "Correctable signal")
    numbers = _numbers(line)
    assert numbers[:3] == top
    assert numbers[3] == round(100 * sum(gains[i] for i in top) / sum(gains))
    thirds = [round(100 * (gains[2 * k] + gains[2 * k + 1]) / sum(gains)) for k in range(3)]
    assert numbers[4:7] == thirds


def test_conditioning_finding_reports_the_worst_layer_and_the_ill_conditioned_ones() -> None:
    card = synthetic_card(n_layers=6)
    amplification = [1.0, 1.2, 9.0, 1.1, 2.7, 1.3]  # median 1.3: layers 2 and 4 reach 2.6
    for entry, amp in zip(card.layers, amplification, strict=True):
        entry.max_noise_amplification = amp
    line = _finding(card, "Conditioning")
    assert "worst module input is in layer 2 (noise amplification 9," in line
    assert "median over layers 1.3" in line
    assert "Layers 2, 4 are ill-conditioned" in line


@pytest.mark.parametrize("rho", [0.05, 0.5, 0.9])
def test_coupling_finding_reports_mean_coupling_of_neighbours_and_far_layers(rho: float) -> None:
    card = synthetic_card(n_layers=6, rho=rho)
    numbers = _numbers(_finding(card, "Coupling"))
    far = [rho ** (j - i) for i in range(6) for j in range(i + 2, 6)]
    assert numbers[0] == 32  # examples
    assert numbers[1] == pytest.approx(rho, rel=1e-2)  # neighbours: ρ^1 everywhere
    assert numbers[-1] == pytest.approx(sum(far) / len(far), rel=1e-2)
    assert ("approximately" in _finding(card, "Coupling")) == (rho < 0.3)


def test_greedy_finding_counts_layers_per_share_of_the_all_layer_gain() -> None:
    card = synthetic_card(n_layers=6, rho=0.0, seed=5)  # no coupling: gains add up
    gains = sorted((0.5 * entry.resnorm2 for entry in card.layers), reverse=True)
    order = sorted(range(6), key=lambda i: -card.layers[i].resnorm2)
    cumulative = [sum(gains[:k]) for k in range(1, 7)]
    needed = [next(k for k, c in enumerate(cumulative, 1) if c >= share * cumulative[-1])
              for share in (0.5, 0.8, 0.9)]
    numbers = _numbers(_finding(card, "Greedy"))
    assert numbers[:5] == order[:5]
    assert numbers[5] == pytest.approx(cumulative[-1], rel=1e-2)
    assert numbers[6:] == [needed[0], 50, needed[1], 80, needed[2], 90]


def test_cost_finding_reads_its_numbers_off_the_fitted_cost_model() -> None:
    # synthetic fits: time 0.2 + 0.05·depth + 0.001·|S|, memory 1e6 + 2e6·depth + 1e4·|S|
    card = synthetic_card(n_layers=6)
    line = _finding(card, "Cost of going deep")
    mib = 2.0**20
    top_s, bottom_s, all_s = 0.2 + 0.05 + 0.001, 0.2 + 0.05 * 6 + 0.001, 0.2 + 0.05 * 6 + 0.006
    top_b, bottom_b, all_b = 1e6 + 2e6 + 1e4, 1e6 + 12e6 + 1e4, 1e6 + 12e6 + 6e4
    assert f"top costs about {top_s:.3g} s per step and {top_b / mib:.1f} MiB" in line
    assert f"at the bottom {bottom_s:.3g} s and {bottom_b / mib:.1f} MiB" in line
    assert f"(×{bottom_s / top_s:.1f} time, ×{bottom_b / top_b:.1f} memory)" in line
    assert f"all layers {all_s:.3g} s and {all_b / mib:.1f} MiB" in line
    assert "off by at most 5% on 1 multi-layer check sets" in line  # max(|-0.02|, |0.05|)
    assert "adds 3,072 LoRA parameters" in line and "0.40 ms per generated token" in line
    assert _finding(synthetic_card(cost=False), "Cost") == "Cost was not measured (--no-cost)."


def test_probe_finding_reports_spearman_and_the_best_probed_layer() -> None:
    card = synthetic_card(n_layers=6, seed=2)
    best = max(range(6), key=lambda i: card.probe.gains[i])
    line = _finding(card, "Predicted vs probed")
    assert "Spearman ρ = 0.6, good" in line
    assert f"largest probed drop is at layer {best} ({card.probe.gains[best]:.3g})" in line
    assert "--probe-steps 0" in _finding(synthetic_card(probe=False), "No probes")


def test_near_singular_coupling_is_flagged_in_the_greedy_finding() -> None:
    near_singular = synthetic_card(rho=0.0)
    near_singular.coupling.matrix[0][1] = near_singular.coupling.matrix[1][0] = 0.999
    near_singular.layers[0].resnorm2, near_singular.layers[1].resnorm2 = 1.0, 0.01
    assert "nearly singular" in _finding(near_singular, "Greedy")
    assert "Caution" not in _finding(synthetic_card(rho=0.05), "Greedy")


def test_render_text_shows_every_layer_and_findings() -> None:
    card = synthetic_card(cost=False, probe=False)
    text = render_text(card)
    lines = text.splitlines()
    assert lines[0].startswith(f"Layer Card ({SCHEMA}): tiny-llama on toy")
    start = lines.index(next(line for line in lines if line.startswith("layer ")))
    rows = lines[start + 2 : start + 8]
    assert [int(row.split()[0]) for row in rows] == list(range(6))
    best = max(range(6), key=lambda i: card.layers[i].predicted_gain)
    assert rows[best].rstrip().endswith("#" * 16)
    assert "Findings" in lines
    assert "step s" not in text  # no cost columns without cost


@pytest.mark.parametrize("cost", [True, False])
def test_plots_are_valid_png_files(tmp_path: Path, cost: bool) -> None:
    paths = write_plots(synthetic_card(cost=cost), tmp_path)
    names = {p.name for p in paths}
    expected = {"resnorm.png", "conditioning.png", "coupling.png", "gain_vs_cost.png"}
    assert names == (expected | {"cost.png"} if cost else expected)
    for path in paths:
        content = path.read_bytes()
        assert content.startswith(PNG_SIGNATURE) and len(content) > 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temp files left


def test_write_card_dir_replaces_a_previous_card_and_refuses_other_dirs(tmp_path: Path) -> None:
    out = tmp_path / "card"
    write_card_dir(synthetic_card(seed=1), out)
    assert read_card(out / "card.json") == synthetic_card(seed=1)
    write_card_dir(synthetic_card(seed=2), out, extra=lambda d: (d / "note.txt").write_text("x"))
    assert read_card(out / "card.json") == synthetic_card(seed=2)
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "card.md", "note.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card"]  # no staging dirs left

    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(OutDirError, match="--out"):
        write_card_dir(synthetic_card(), other)
    assert [p.name for p in other.iterdir()] == ["keep.txt"]


def test_failed_write_leaves_the_previous_card_in_place(tmp_path: Path) -> None:
    out = tmp_path / "card"
    write_card_dir(synthetic_card(seed=1), out)

    def fail(_: Path) -> None:
        raise RuntimeError("plotting failed")

    with pytest.raises(RuntimeError):
        write_card_dir(synthetic_card(seed=2), out, extra=fail)
    assert read_card(out / "card.json") == synthetic_card(seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card"]
