"""Shared builders of the layercard tests: tiny random causal LMs, batches, cards, and a saved
tiny model with a word-level tokenizer plus a review task file for the CLI-level tests.

They are fixtures that return the builder, so each test picks sizes without a copy of its own.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from layercard.config import LoraSettings
from layercard.costmodel import CostFit, MemoryMeasurements, TimingMeasurements
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


MODULES = ("self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj")


def _synthetic_card(
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


@pytest.fixture(scope="session")
def synthetic_card() -> Callable[..., Card]:
    """Builder of cards with random but plausible numbers (see `_synthetic_card`)."""
    return _synthetic_card


# the tiny review task and the vocabulary of the tiny_model tokenizer
WORDS = ["good", "bad", "film", "plot", "great", "awful", "the", "a", "acting", "dull"]
VOCAB = ["[UNK]", "[PAD]", "</s>", "Review", ":", "Sentiment", "positive", "negative", *WORDS]
POSITIVE, NEGATIVE = {"good", "great"}, {"bad", "awful", "dull"}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-layer random Llama saved with save_pretrained, with a word-level tokenizer beside it."""
    directory = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>"
    ).save_pretrained(directory)
    _tiny_lm("llama", 3, vocab=len(VOCAB)).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 labelled review snippets over the tiny vocabulary, as JSONL."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("task") / "reviews.jsonl"
    rows = []
    for _ in range(80):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
        score = sum((w in POSITIVE) - (w in NEGATIVE) for w in text.split())
        label = "positive" if score > 0 or (score == 0 and rng.random() < 0.5) else "negative"
        rows.append(json.dumps({"prompt": f"Review: {text}\nSentiment:", "label": label}))
    path.write_text("\n".join(rows) + "\n")
    return path
