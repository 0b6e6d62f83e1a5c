"""Layer choices of the fine-tuning strategies: fixed rules, card rankings and explicit lists."""

from __future__ import annotations

import pytest

from layercard.decide import Objective, place
from layercard.strategies import (
    FIXED,
    LayerSpecError,
    card_layers,
    fixed_layers,
    parse_layer_list,
)


def test_fixed_strategies_pick_k_distinct_layers_where_their_rule_says() -> None:
    assert fixed_layers("first", 30, 8) == list(range(8))
    assert fixed_layers("last", 30, 8) == list(range(22, 30))
    assert fixed_layers("middle", 30, 8) == list(range(11, 19))
    assert fixed_layers("uniform", 30, 8) == [1, 5, 9, 13, 16, 20, 24, 28]
    assert fixed_layers("uniform", 30, 30) == list(range(30))
    for strategy in FIXED:
        for k in (1, 4, 8, 30):
            chosen = fixed_layers(strategy, 30, k, seed=3)
            assert len(set(chosen)) == k and chosen == sorted(chosen)
            assert all(0 <= i < 30 for i in chosen)


def test_random_layers_are_deterministic_per_seed_and_differ_across_seeds() -> None:
    assert fixed_layers("random", 30, 8, seed=1) == fixed_layers("random", 30, 8, seed=1)
    draws = {tuple(fixed_layers("random", 30, 8, seed=s)) for s in range(5)}
    assert len(draws) == 5


def test_card_strategies_rank_by_the_card(synthetic_card) -> None:
    card = synthetic_card(n_layers=8)
    by_grad = sorted(range(8), key=lambda i: -card.layers[i].grad_norm)[:3]
    by_res = sorted(range(8), key=lambda i: -card.layers[i].resnorm2)[:3]
    assert card_layers("gradnorm", card, 3) == sorted(by_grad)
    assert card_layers("resnorm", card, 3) == sorted(by_res)
    assert card_layers("card", card, 3) == place(card, Objective(max_layers=3)).chosen.layers


def test_bad_specs_name_the_flag(synthetic_card) -> None:
    with pytest.raises(LayerSpecError, match="--k"):
        fixed_layers("first", 30, 31)
    with pytest.raises(LayerSpecError, match="--k"):
        card_layers("card", synthetic_card(n_layers=4), 0)
    with pytest.raises(LayerSpecError, match="--layers"):
        parse_layer_list("0,40", 30)
    with pytest.raises(LayerSpecError, match="--layers 'top'"):
        parse_layer_list("top", 30)
    assert parse_layer_list("3-5, 9,4", 30) == [3, 4, 5, 9]
