"""Integration: a Layer Card of the real default model (smollm2-135m) on the real sentiment task."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from layercard.cli import main
from layercard.codec import read_card
from layercard.schema import SCHEMA


@pytest.mark.integration
def test_smollm2_sentiment_card(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "card"
    status = main([
        "build", "--model", "smollm2-135m", "--task", "sentiment", "--out", str(out),
        "--probe-examples", "32", "--coupling-examples", "16",
        "--cost-depths", "2", "--cost-steps", "1", "--quiet",
    ])
    assert status == 0
    card = read_card(out / "card.json")
    assert card.schema == SCHEMA
    assert card.n_layers == card.provenance.model.n_layers == 30
    assert card.provenance.settings.probe_examples == 32
    assert card.provenance.task.name == "sentiment"
    assert len(card.sites) == 30 * 7
    assert {s.module for s in card.sites} == {
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
    }
    # all quantities finite: strict JSON has no NaN/Infinity, and null marks a non-finite value
    data = json.loads((out / "card.json").read_text())
    assert "null" not in json.dumps({k: v for k, v in data.items() if k not in ("probe",)})
    for site in card.sites:
        assert 0.0 <= site.rel_resnorm <= 1.0
        assert 0.0 <= site.resnorm2_rank <= site.resnorm2
        assert site.condition_number >= 1.0 and site.noise_amplification >= 1.0 - 1e-6
        assert 1.0 <= site.effective_rank <= site.d_in
    for layer in card.layers:
        assert 0.0 <= layer.rel_resnorm <= 1.0 and math.isfinite(layer.predicted_gain)
    rho = torch.tensor(card.coupling.matrix, dtype=torch.float64)
    assert rho.shape == (30, 30)
    assert torch.equal(rho, rho.T)
    assert torch.equal(rho.diagonal(), torch.ones(30, dtype=torch.float64))
    assert bool((rho.abs() <= 1).all())
    assert 0 < card.base_loss < 20
    assert card.cost is not None and card.cost.memory.all_layers_bytes > 0
    for name in ("card.md", "resnorm.png", "conditioning.png", "coupling.png", "cost.png",
                 "gain_vs_cost.png"):
        assert (out / name).stat().st_size > 0
    assert main(["show", str(out)]) == 0
    assert "smollm2-135m on sentiment" in capsys.readouterr().out
