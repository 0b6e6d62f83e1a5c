"""Placement: objectives and budgets, coupling, determinism, and the peft LoraConfig round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer

from layercard.cli import main
from layercard.decide import (
    Objective,
    PlacementError,
    candidates,
    cost_model,
    pareto_front,
    place,
    set_gain,
)
from layercard.output import write_card_dir
from layercard.placement import find_layer_targets, placement_lora_config, write_placement


def _brute_force_best(card, k: int) -> float:
    """The best gain of any set of at most k layers, by enumeration (small cards only)."""
    from itertools import combinations

    layers = range(card.n_layers)
    return max(set_gain(card, s) for size in range(1, k + 1) for s in combinations(layers, size))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_max_layers_respects_k_and_is_near_the_exhaustive_optimum(synthetic_card, k: int) -> None:
    card = synthetic_card(n_layers=6, rho=0.3, seed=4)
    chosen = place(card, Objective(max_layers=k)).chosen
    assert 1 <= len(chosen.layers) <= k
    assert chosen.gain == pytest.approx(set_gain(card, chosen.layers))
    assert chosen.gain >= 0.97 * _brute_force_best(card, k)


@pytest.mark.parametrize(("kind", "share"), [("time", 0.5), ("time", 0.8), ("memory", 0.6),
                                             ("params", 0.4)])
def test_budgets_are_respected_and_the_choice_is_the_best_that_fits(
    synthetic_card, kind: str, share: float
) -> None:
    card = synthetic_card(n_layers=6, rho=0.2, seed=1)
    model = cost_model(card)
    placement = place(card, Objective(budget=(kind, share)))
    everything = tuple(range(6))

    def cost(layers: tuple[int, ...]) -> float:  # independent of decide: the card's cost model
        seconds, memory = model.predict(layers)
        return {"time": seconds, "memory": memory,
                "params": sum(card.layers[i].lora_params for i in layers)}[kind]

    assert cost(placement.chosen.layers) <= share * cost(everything) + 1e-9
    fitting = [c for c in candidates(card) if cost(c.layers) <= share * cost(everything)]
    assert placement.chosen.gain == max(c.gain for c in fitting)


def test_target_gain_is_reached_at_the_lowest_cost(synthetic_card) -> None:
    card = synthetic_card(n_layers=6, rho=0.1, seed=2)
    everything = set_gain(card, range(6))
    placement = place(card, Objective(target_gain=0.8))
    assert placement.chosen.gain >= 0.8 * everything - 1e-12
    reaching = [c for c in candidates(card) if c.gain >= 0.8 * everything - 1e-12]
    assert placement.chosen.seconds == min(c.seconds for c in reaching)


def test_impossible_budget_and_bad_objectives_are_clear_errors(synthetic_card) -> None:
    card = synthetic_card(n_layers=6)
    with pytest.raises(PlacementError, match=r"--budget time=0.01: no layer set fits"):
        place(card, Objective(budget=("time", 0.01)))
    with pytest.raises(PlacementError, match="exactly one objective"):
        Objective(max_layers=2, target_gain=0.9)
    with pytest.raises(PlacementError, match="--target-gain"):
        Objective(target_gain=1.5)
    with pytest.raises(PlacementError, match="no cost measurement"):
        place(synthetic_card(cost=False), Objective(budget=("time", 0.5)))
    assert place(synthetic_card(cost=False), Objective(budget=("params", 0.5))).chosen.params > 0


def test_placement_is_deterministic(synthetic_card) -> None:
    objective = Objective(budget=("time", 0.7))
    first = place(synthetic_card(seed=3), objective)
    assert place(synthetic_card(seed=3), objective) == first


def test_coupling_makes_the_choice_skip_a_redundant_layer(synthetic_card) -> None:
    card = synthetic_card(n_layers=6, rho=0.0, probe=False)
    gains = [0.1, 0.1, 0.9, 0.85, 0.2, 0.1]
    for entry, gain in zip(card.layers, gains, strict=True):
        entry.predicted_gain = gain
    assert place(card, Objective(max_layers=2)).chosen.layers == (2, 3)  # independent layers
    card.coupling.matrix[2][3] = card.coupling.matrix[3][2] = 0.98  # layer 3 repeats layer 2
    chosen = place(card, Objective(max_layers=2)).chosen.layers
    assert 2 in chosen and 3 not in chosen


def test_pareto_front_is_non_dominated(synthetic_card) -> None:
    card = synthetic_card(n_layers=6, rho=0.3)
    cands = candidates(card)
    front = pareto_front(cands, "time")
    for c in front:
        assert not any(o.seconds < c.seconds and o.gain > c.gain for o in cands)
    assert [c.seconds for c in front] == sorted(c.seconds for c in front)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")
def test_lora_config_round_trips_and_adapts_exactly_the_chosen_modules(
    synthetic_card, tiny_lm, tmp_path: Path
) -> None:
    card = synthetic_card(n_layers=6, rho=0.2, seed=6)
    placement = place(card, Objective(max_layers=3))
    out = write_placement(card, placement, tmp_path / "place")
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json", "pareto.png", "placement.json", "placement.md",
    ]
    loaded = LoraConfig.from_pretrained(str(out))
    assert loaded.to_dict() == placement_lora_config(card, placement).to_dict()
    model = get_peft_model(tiny_lm("llama", 6), loaded)
    adapted = {name for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    expected = {
        f"base_model.model.model.layers.{layer}.{module}"
        for layer in placement.chosen.layers
        for module in ("self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj")
    }
    assert adapted == expected
    record = json.loads((out / "placement.json").read_text())
    assert record["chosen"]["layers"] == list(placement.chosen.layers)


def test_place_cli_prints_the_choice_and_refuses_foreign_out_dirs(
    synthetic_card, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card_dir = write_card_dir(synthetic_card(), tmp_path / "card")
    assert main(["place", str(card_dir), "--budget", "time=0.6", "--out", str(tmp_path / "p")]) == 0
    text = capsys.readouterr().out
    chosen = place(synthetic_card(), Objective(budget=("time", 0.6))).chosen
    assert f"layers: {', '.join(map(str, chosen.layers))}" in text
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    assert main(["place", str(card_dir), "--max-layers", "2", "--out", str(other)]) == 2
    assert "--out" in capsys.readouterr().err
    assert [p.name for p in other.iterdir()] == ["mine.txt"]
    assert main(["place", str(card_dir), "--budget", "cost=0.5"]) == 2


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")
def test_find_layer_targets_builds_a_card_and_returns_a_loadable_config(
    tiny_lm, tmp_path: Path
) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "[PAD]", "</s>", "good", "bad", "film", "plot", "Review:", "Sentiment:",
             "positive", "negative"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>"
    )
    task = tmp_path / "task.jsonl"
    rows = [{"prompt": f"Review: {w} film\nSentiment:", "label": label}
            for w, label in [("good", "positive"), ("bad", "negative")] * 20]
    task.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = tiny_lm("llama", 3, vocab=len(words))
    from layercard.config import BuildConfig

    config = BuildConfig(model="unused", task="unused", probe_examples=16, coupling_examples=8,
                         cost=False, progress=False, layer_groups=1)
    lora = find_layer_targets(model, tokenizer, str(task), Objective(max_layers=2), config=config)
    assert 1 <= len(lora.layers_to_transform) <= 2
    assert set(lora.target_modules) <= {
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
    }
    adapted = get_peft_model(tiny_lm("llama", 3, vocab=len(words)), lora)
    assert any(isinstance(m, LoraLayer) for m in adapted.modules())
