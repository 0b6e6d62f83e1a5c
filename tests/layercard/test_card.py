"""Card schema, JSON round trip, Markdown, terminal rendering and plots on synthetic card data."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from layercard.codec import CardFormatError, card_to_dict, from_json, read_card, to_json
from layercard.decide import cost_model, greedy_order, set_gain
from layercard.findings import findings
from layercard.output import OutDirError, write_card_dir
from layercard.plots import write_plots
from layercard.render import render_text, to_markdown
from layercard.schema import (
    SCHEMA,
    Card,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("cost", "probe"), [(True, True), (False, False)])
def test_json_round_trip_is_exact(synthetic_card, cost: bool, probe: bool) -> None:
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


def test_json_layout_is_stable_and_pinned(synthetic_card) -> None:
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


def test_non_finite_numbers_are_written_as_null(synthetic_card) -> None:
    card = synthetic_card()
    card.sites[0] = replace(card.sites[0], condition_number=math.inf)
    text = to_json(card)
    json.loads(text)  # strict JSON, no Infinity literal
    assert "Infinity" not in text
    assert math.isnan(from_json(text).sites[0].condition_number)


def test_from_json_rejects_other_schemas_and_malformed_cards(
    synthetic_card, tmp_path: Path
) -> None:
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
    for part, edit, message in (
        ("layers", lambda d: d["layers"].pop(3), r"missing \[3\]"),
        ("sites", lambda d: d.update(sites=[s for s in d["sites"] if s["layer"] != 1]),
         r"layers without sites \[1\]"),
        ("coupling", lambda d: d["coupling"]["matrix"].pop(), "coupling.matrix"),
        ("probe", lambda d: d["probe"]["gains"].pop(), "probe.gains"),
    ):
        broken = json.loads(json.dumps(data))
        edit(broken)
        with pytest.raises(CardFormatError, match=message):
            from_json(json.dumps(broken), source=part)
    with pytest.raises(CardFormatError, match="cannot read"):
        read_card(tmp_path / "missing.json")


def test_predicted_gain_is_additive_without_coupling_and_greedy_skips_duplicates(
    synthetic_card
) -> None:
    card = synthetic_card(rho=0.0, probe=False)
    gains = [entry.predicted_gain for entry in card.layers]
    assert set_gain(card, [1, 3, 4]) == pytest.approx(gains[1] + gains[3] + gains[4])
    order = greedy_order(card)
    assert [layer for layer, _ in order] == sorted(range(6), key=lambda i: -gains[i])
    assert order[-1][1] == pytest.approx(sum(gains))

    coupled = synthetic_card(rho=0.0, probe=False)
    coupled.coupling.matrix[0][1] = coupled.coupling.matrix[1][0] = 0.99
    for i in (0, 1):
        coupled.layers[i].predicted_gain = 10.0
    first, second = (layer for layer, _ in greedy_order(coupled)[:2])
    assert first == 0 and second != 1  # layer 1 is nearly a copy of layer 0


def test_decisions_follow_the_probes_when_the_card_has_them(synthetic_card) -> None:
    card = synthetic_card(rho=0.0)  # probe gains differ from the predicted ones
    probed = card.probe.gains
    assert [layer for layer, _ in greedy_order(card)] == sorted(range(6), key=lambda i: -probed[i])
    assert set_gain(card, [0, 5]) == pytest.approx(probed[0] + probed[5])


def test_markdown_has_front_matter_findings_and_table(synthetic_card) -> None:
    card = synthetic_card()
    text = to_markdown(card)
    assert text.startswith("---\n")
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["base_model"] == "tiny-llama"
    assert meta["library_name"] == "peft"
    assert meta["layercard"]["schema"] == SCHEMA
    assert meta["layercard"]["spearman_predicted_vs_probed"] == 0.6
    assert "## Findings" in body and "## Per layer" in body and "## Placement" in body
    assert "`layercard place card.json --max-layers 4`: Layers " in body
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


def test_signal_finding_names_the_top_layers_and_their_shares(synthetic_card) -> None:
    card = synthetic_card(n_layers=6, seed=3)
    gains = [0.5 * entry.resnorm2 for entry in card.layers]
    top = sorted(range(6), key=lambda i: -gains[i])[:3]
    line = _finding(card, "Correctable signal")
    numbers = _numbers(line)
    assert numbers[:3] == top
    assert numbers[3] == round(100 * sum(gains[i] for i in top) / sum(gains))
    thirds = [round(100 * (gains[2 * k] + gains[2 * k + 1]) / sum(gains)) for k in range(3)]
    assert numbers[4:7] == thirds


def test_conditioning_finding_reports_the_worst_layer_and_the_ill_conditioned_ones(
    synthetic_card
) -> None:
    card = synthetic_card(n_layers=6)
    amplification = [1.0, 1.2, 9.0, 1.1, 2.7, 1.3]  # median 1.3: layers 2 and 4 reach 2.6
    for entry, amp in zip(card.layers, amplification, strict=True):
        entry.max_noise_amplification = amp
    line = _finding(card, "Conditioning")
    assert "worst module input is in layer 2 (noise amplification 9," in line
    assert "median over layers 1.3" in line
    assert "Layers 2, 4 are ill-conditioned" in line


@pytest.mark.parametrize("rho", [0.05, 0.5, 0.9])
def test_coupling_finding_reports_mean_coupling_of_neighbours_and_far_layers(
    synthetic_card, rho: float
) -> None:
    card = synthetic_card(n_layers=6, rho=rho)
    numbers = _numbers(_finding(card, "Coupling"))
    far = [rho ** (j - i) for i in range(6) for j in range(i + 2, 6)]
    assert numbers[0] == 32  # examples
    assert numbers[1] == pytest.approx(rho, rel=1e-2)  # neighbours: ρ^1 everywhere
    assert numbers[-1] == pytest.approx(sum(far) / len(far), rel=1e-2)
    assert ("approximately" in _finding(card, "Coupling")) == (rho < 0.3)


def test_greedy_finding_counts_layers_per_share_of_the_all_layer_gain(synthetic_card) -> None:
    card = synthetic_card(n_layers=6, rho=0.0, seed=5, probe=False)  # no coupling: gains add up
    gains = sorted((0.5 * entry.resnorm2 for entry in card.layers), reverse=True)
    order = sorted(range(6), key=lambda i: -card.layers[i].resnorm2)
    cumulative = [sum(gains[:k]) for k in range(1, 7)]
    needed = [next(k for k, c in enumerate(cumulative, 1) if c >= share * cumulative[-1])
              for share in (0.5, 0.8, 0.9)]
    numbers = _numbers(_finding(card, "Greedy"))
    assert numbers[:5] == order[:5]
    assert numbers[5] == pytest.approx(cumulative[-1], rel=1e-2)
    assert numbers[6:] == [needed[0], 50, needed[1], 80, needed[2], 90]


def test_cost_finding_reads_its_numbers_off_the_fitted_cost_model(synthetic_card) -> None:
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


def test_probe_finding_reports_spearman_and_the_best_probed_layer(synthetic_card) -> None:
    card = synthetic_card(n_layers=6, seed=2)
    best = max(range(6), key=lambda i: card.probe.gains[i])
    line = _finding(card, "Predicted vs probed")
    assert "Spearman ρ = 0.6, good" in line
    assert f"largest probed drop is at layer {best} ({card.probe.gains[best]:.3g})" in line
    assert "--probe-steps 0" in _finding(synthetic_card(probe=False), "No probes")


def test_near_singular_coupling_is_flagged_in_the_greedy_finding(synthetic_card) -> None:
    near_singular = synthetic_card(rho=0.0, probe=False)
    near_singular.coupling.matrix[0][1] = near_singular.coupling.matrix[1][0] = 0.999
    near_singular.layers[0].predicted_gain, near_singular.layers[1].predicted_gain = 0.5, 0.005
    assert "nearly singular" in _finding(near_singular, "Greedy")
    assert "Caution" not in _finding(synthetic_card(rho=0.05), "Greedy")


def test_render_text_shows_every_layer_and_findings(synthetic_card) -> None:
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
def test_plots_are_valid_png_files(synthetic_card, tmp_path: Path, cost: bool) -> None:
    paths = write_plots(synthetic_card(cost=cost), tmp_path)
    names = {p.name for p in paths}
    expected = {"resnorm.png", "conditioning.png", "coupling.png", "gain_vs_cost.png"}
    assert names == (expected | {"cost.png"} if cost else expected)
    for path in paths:
        content = path.read_bytes()
        assert content.startswith(PNG_SIGNATURE) and len(content) > 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temp files left


def test_write_card_dir_replaces_a_previous_card_and_refuses_other_dirs(
    synthetic_card, tmp_path: Path
) -> None:
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


def test_failed_write_leaves_the_previous_card_in_place(synthetic_card, tmp_path: Path) -> None:
    out = tmp_path / "card"
    write_card_dir(synthetic_card(seed=1), out)

    def fail(_: Path) -> None:
        raise RuntimeError("plotting failed")

    with pytest.raises(RuntimeError):
        write_card_dir(synthetic_card(seed=2), out, extra=fail)
    assert read_card(out / "card.json") == synthetic_card(seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card"]


def test_out_dirs_the_tool_did_not_write_are_never_replaced(synthetic_card,
                                                            tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "card.json").write_text('{"name": "my own card"}')
    (foreign / "data.csv").write_text("a,b\n")
    with pytest.raises(OutDirError, match="not a previous layer card"):
        write_card_dir(synthetic_card(), foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["card.json", "data.csv"]
    card = write_card_dir(synthetic_card(seed=1), tmp_path / "card")
    (card / "notes.txt").write_text("mine")
    with pytest.raises(OutDirError, match=r"notes\.txt"):
        write_card_dir(synthetic_card(seed=2), card)
    assert (card / "notes.txt").read_text() == "mine"
    assert read_card(card / "card.json") == synthetic_card(seed=1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutDirError, match="cannot be created"):
        write_card_dir(synthetic_card(), tmp_path / "file" / "sub")
