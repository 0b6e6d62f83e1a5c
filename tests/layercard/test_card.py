"""Card schema, JSON round trip, Markdown, terminal rendering and plots on synthetic card data."""

from __future__ import annotations

import json
import math
import random
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


def test_findings_describe_coupling_cost_and_missing_probes() -> None:
    weak = findings(synthetic_card(rho=0.05, cost=False, probe=False))
    assert any("approximately" in line for line in weak)
    assert any("--no-cost" in line for line in weak)
    assert any("--probe-steps 0" in line for line in weak)
    strong = findings(synthetic_card(rho=0.9))
    assert any("partly redundant" in line for line in strong)
    assert not any("Caution" in line for line in weak)
    near_singular = synthetic_card(rho=0.0)
    near_singular.coupling.matrix[0][1] = near_singular.coupling.matrix[1][0] = 0.999
    near_singular.layers[0].resnorm2, near_singular.layers[1].resnorm2 = 1.0, 0.01
    assert any("nearly singular" in line for line in findings(near_singular))
    cost_line = next(line for line in strong if line.startswith("Cost of going deep"))
    # per_depth > 0 in the synthetic fit: the bottom layer costs more than the top one
    assert "×1.0 time" not in cost_line


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
