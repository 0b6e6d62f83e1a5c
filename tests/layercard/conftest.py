"""Shared builders of the layercard tests: tiny random causal LMs and batches for them.

They are fixtures that return the builder, so each test picks sizes without a copy of its own.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)


def _tiny_lm(
    arch: str = "llama",
    n_layers: int = 3,
    *,
    vocab: int = 64,
    intermediate: int = 64,
    init_range: float | None = None,
) -> PreTrainedModel:
    """A random `arch` model (hidden 32, 4 heads; Llama with 2 kv heads), eval mode, frozen,
    seed 0. `init_range` 0.2 makes middle layers move the logits enough to train."""
    torch.manual_seed(0)
    init = {} if init_range is None else {"initializer_range": init_range}
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=vocab, hidden_size=32, intermediate_size=intermediate,
            num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=64, **init,
        )  # fmt: skip
        model: PreTrainedModel = LlamaForCausalLM(config)
    elif arch == "gpt2":
        config = GPT2Config(
            vocab_size=vocab, n_embd=32, n_layer=n_layers, n_head=4, n_positions=64,
            bos_token_id=0, eos_token_id=0, **init,
        )  # fmt: skip
        model = GPT2LMHeadModel(config)
    else:
        raise ValueError(f"unknown architecture {arch!r}")
    return model.eval().requires_grad_(False)


def _random_batches(
    n: int, *, batch_size: int = 4, length: int = 12, vocab: int = 64, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """Batches like layercard.data.batches: prompt of 4 tokens, right padding on some rows."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(1, vocab, (batch_size, length), generator=g)
        mask = torch.ones_like(ids)
        lengths = torch.randint(6, length + 1, (batch_size,), generator=g)
        for row, used in enumerate(lengths.tolist()):
            ids[row, used:] = 0
            mask[row, used:] = 0
        labels = ids.masked_fill(mask == 0, -100)
        labels[:, :4] = -100
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


@pytest.fixture(scope="session")
def tiny_lm() -> Callable[..., PreTrainedModel]:
    """Builder of tiny random Llama / GPT-2 models: `tiny_lm("gpt2", n_layers=4)`."""
    return _tiny_lm


@pytest.fixture(scope="session")
def random_batches() -> Callable[..., list[dict[str, torch.Tensor]]]:
    """Builder of padded random token batches with completion-only labels."""
    return _random_batches
