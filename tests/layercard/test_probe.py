import math

import pytest
import torch
from peft.tuners.lora import LoraLayer
from transformers import LlamaForCausalLM

from layercard.config import LoraSettings
from layercard.probe import probe_gains, spearman

N_LAYERS = 4


def teacher_batch(teacher, n: int, g: torch.Generator) -> dict:
    """Random 4-token prompts continued greedily by the teacher for 12 tokens (the completion)."""
    ids = torch.randint(0, 64, (n, 4), generator=g)
    with torch.no_grad():
        for _ in range(12):
            ids = torch.cat([ids, teacher(input_ids=ids).logits[:, -1:].argmax(-1)], dim=1)
    labels = ids.clone()
    labels[:, :4] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def planted_task(tiny_lm, layer: int) -> tuple[LlamaForCausalLM, list[dict], list[dict]]:
    """A student that equals the teacher except for a rank-1 error in `layer`'s down_proj."""
    teacher = tiny_lm("llama", N_LAYERS, init_range=0.2)
    with torch.no_grad():
        teacher.lm_head.weight.mul_(2)  # confident teacher: its greedy text is learnable
    g = torch.Generator().manual_seed(1)
    train = [teacher_batch(teacher, 16, g) for _ in range(4)]
    dev = [teacher_batch(teacher, 32, g)]
    with torch.no_grad():
        weight = teacher.model.layers[layer].mlp.down_proj.weight
        u = torch.randn(weight.shape[0], 1, generator=g)
        v = torch.randn(1, weight.shape[1], generator=g)
        weight.add_(2 * weight.norm() * (u @ v) / (u.norm() * v.norm()))
    return teacher, train, dev


@pytest.mark.parametrize("planted", [1, 3])
def test_probe_ranks_the_planted_layer_first(tiny_lm, planted):
    student, train, dev = planted_task(tiny_lm, planted)
    settings = LoraSettings(rank=2, lr=1e-2, target_modules=("mlp.down_proj",))
    gains = probe_gains(
        student, train, dev, range(N_LAYERS), steps=30, settings=settings, seed=0, progress=False
    )
    assert sorted(gains) == list(range(N_LAYERS))
    assert all(math.isfinite(v) for v in gains.values())
    assert max(gains, key=gains.get) == planted
    assert gains[planted] > 0.5  # nats of dev loss recovered
    assert not any(isinstance(m, LoraLayer) for m in student.modules())


def test_probe_is_deterministic_per_seed(tiny_lm):
    student, train, dev = planted_task(tiny_lm, 2)
    settings = LoraSettings(rank=2, lr=1e-2)
    run = {"steps": 3, "settings": settings, "progress": False}
    first = probe_gains(student, train, dev, [0, 2], seed=0, **run)
    assert probe_gains(student, train, dev, [0, 2], seed=0, **run) == first
    assert probe_gains(student, train, dev, [0, 2], seed=1, **run) != first


def test_spearman():
    predicted = {0: 0.1, 1: 0.5, 2: 0.3, 3: 0.9}
    assert spearman(predicted, {0: 1.0, 1: 3.0, 2: 2.0, 3: 4.0}) == pytest.approx(1.0)
    assert spearman(predicted, {0: 4.0, 1: 2.0, 2: 3.0, 3: 1.0}) == pytest.approx(-1.0)
    # only common layers count; 5 is ignored
    assert spearman(predicted, {1: 3.0, 2: 2.0, 3: 4.0, 5: -9.0}) == pytest.approx(1.0)
    assert math.isnan(spearman(predicted, dict.fromkeys(predicted, 0.0)))
    with pytest.raises(ValueError, match="at least 2"):
        spearman(predicted, {0: 1.0})
