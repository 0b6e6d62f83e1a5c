"""Tests of model loading and generic block discovery (tiny random models; real SmolLM2 marked)."""

from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    BertConfig,
    BertLMHeadModel,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    PhiConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)
from transformers.pytorch_utils import Conv1D

from layercard import models as lcm
from layercard.checkpoint import fetch_all
from layercard.hashing import weight_files, weights_hash
from layercard.sites import Site

SMALL = {"vocab_size": 32}
DECODER = {
    **SMALL,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
}
LLAMA_MODULES = [  # the Llama family: Llama, Qwen2, Mistral
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
]
CASES = {
    # config, blocks path, module names per block
    "llama": (
        LlamaConfig(**DECODER),
        "model.layers",
        LLAMA_MODULES,
    ),
    "qwen2": (
        Qwen2Config(**DECODER),
        "model.layers",
        LLAMA_MODULES,
    ),
    "mistral": (
        MistralConfig(**DECODER),
        "model.layers",
        LLAMA_MODULES,
    ),
    "phi": (
        PhiConfig(**DECODER),
        "model.layers",
        [
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.dense",
            "mlp.fc1",
            "mlp.fc2",
        ],
    ),
    "gpt2": (
        GPT2Config(**SMALL, n_embd=16, n_layer=3, n_head=2),
        "transformer.h",
        ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"],
    ),
    "gpt_neox": (
        GPTNeoXConfig(
            **SMALL,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=3,
            num_attention_heads=2,
        ),
        "gpt_neox.layers",
        ["attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"],
    ),
}


@pytest.mark.parametrize("arch", CASES)
def test_block_discovery_on_common_architectures(arch: str) -> None:
    config, path, names = CASES[arch]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    found_path, blocks = lcm.find_blocks(model)
    assert (found_path, len(blocks)) == (path, 3)
    sites = lcm.adaptable_sites(model)
    assert [s.module for s in sites if s.layer == 0] == names
    assert [s.layer for s in sites] == sorted([0, 1, 2] * len(names))
    for site in sites:
        module = lcm.site_module(model, site)
        assert isinstance(module, nn.Linear | Conv1D)
        y = module(torch.zeros(1, site.d_in))  # the recorded dims are the module's real dims
        assert y.shape == (1, site.d_out)


class _WithConfig(nn.Module):
    def __init__(self, n_layers: int, blocks: nn.ModuleList | None) -> None:
        super().__init__()
        self.config = PretrainedConfig(num_hidden_layers=n_layers)
        self.proj = nn.Linear(4, 4)
        self.blocks = blocks


@pytest.mark.parametrize(
    "model",
    [
        _WithConfig(2, None),  # no list at all
        _WithConfig(4, nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])),  # wrong length
        _WithConfig(2, nn.ModuleList([nn.Linear(4, 4), nn.ReLU()])),  # not repeated blocks
    ],
    ids=["no-list", "length-mismatch", "mixed-classes"],
)
def test_model_without_block_list_is_a_structure_error(model: nn.Module) -> None:
    with pytest.raises(lcm.ModelStructureError, match="no list of repeated transformer blocks"):
        lcm.find_blocks(model)


def test_blocks_without_linear_modules_is_a_structure_error() -> None:
    model = _WithConfig(2, nn.ModuleList([nn.LayerNorm(4), nn.LayerNorm(4)]))
    with pytest.raises(lcm.ModelStructureError, match="no linear modules"):
        lcm.adaptable_sites(model)


def _tiny_checkpoint(tiny_lm, directory: Path) -> Path:
    """A saved 2-layer random Llama with a word-level tokenizer that has eos but no pad token."""
    words = ["<unk>", "</s>", "the", "cat", "sat"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", eos_token="</s>", padding_side="left"
    )
    tiny_lm("llama", 2, vocab=len(words)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty layercard cache for the test."""
    monkeypatch.setenv("LAYERCARD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_load_local_checkpoint(tiny_lm, tmp_path: Path, cache: Path) -> None:
    directory = _tiny_checkpoint(tiny_lm, tmp_path / "ckpt")
    loaded = lcm.load_model(str(directory))
    assert (loaded.model_id, loaded.source) == (str(directory), str(directory.resolve()))
    assert (loaded.blocks_path, loaded.n_layers) == ("model.layers", 2)
    assert not loaded.model.training
    assert all(not p.requires_grad for p in loaded.model.parameters())
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token == "</s>"
    assert loaded.tokenizer.padding_side == "right"
    weights = directory / "model.safetensors"
    file_hash = hashlib.sha256(weights.read_bytes()).hexdigest()
    expected = hashlib.sha256(f"{file_hash}  model.safetensors\n".encode()).hexdigest()
    assert loaded.weights_hash == expected


def test_weights_hash_sidecar_is_reused_until_the_file_changes(
    tiny_lm, tmp_path: Path, cache: Path
) -> None:
    directory = _tiny_checkpoint(tiny_lm, tmp_path / "ckpt")
    first = weights_hash(weight_files(directory))
    [sidecar] = (cache / "hashes").iterdir()
    # Plant a marker in the sidecar: if the cache is used, the marker shows up in the hash.
    sidecar.write_text(re.sub(r'"sha256": "\w+"', '"sha256": "marker"', sidecar.read_text()))
    marked = hashlib.sha256(b"marker  model.safetensors\n").hexdigest()
    assert weights_hash(weight_files(directory)) == marked
    weights = directory / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert weights_hash(weight_files(directory)) == first  # new mtime: recomputed from the bytes


@pytest.mark.parametrize("spec", ["./no/such/dir", "/no/such/dir"])
def test_missing_local_path_is_a_clear_error(spec: str, cache: Path) -> None:
    with pytest.raises(lcm.ModelLoadError, match="not a checkpoint directory"):
        lcm.load_model(spec)


def test_unreachable_hub_says_what_works(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    # Offline mode fails the same way as the unreachable hub, without waiting for retries.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(lcm.ModelLoadError, match=r"hub.*local checkpoint directory.*smollm2-135m"):
        lcm.load_model("some-org/some-model")


# ---------------------------------------------------------------- real model (integration)


@pytest.fixture(scope="session")
def smollm2() -> lcm.LoadedModel:
    """SmolLM2-135M-Instruct from the cache (fetched and converted on first use)."""
    fetch_all()
    return lcm.load_model("smollm2-135m")


@pytest.mark.integration
def test_smollm2_structure(smollm2: lcm.LoadedModel) -> None:
    assert smollm2.model_id == "smollm2-135m"
    assert (smollm2.blocks_path, smollm2.n_layers) == ("model.layers", 30)
    sites = lcm.adaptable_sites(smollm2.model)
    assert len(sites) == 210
    assert Site(0, "self_attn.q_proj", 576, 576) in sites
    assert Site(29, "mlp.down_proj", 1536, 576) in sites
    assert re.fullmatch(r"[0-9a-f]{64}", smollm2.weights_hash)
    assert not getattr(smollm2.model, "is_quantized", False)  # a plain float32 checkpoint
    assert all(not p.requires_grad and p.dtype == torch.float32 for p in smollm2.model.parameters())
    tok = smollm2.tokenizer
    assert (tok.pad_token, tok.eos_token, tok.padding_side) == ("<|im_end|>", "<|im_end|>", "right")
    assert len(tok) == smollm2.model.config.vocab_size == 49152


@pytest.mark.integration
def test_smollm2_is_a_pretrained_model(smollm2: lcm.LoadedModel) -> None:
    text = (
        "The quick brown fox jumps over the lazy dog. Paris is the capital of France, "
        "and Berlin is the capital of Germany."
    )
    ids = smollm2.tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        loss = smollm2.model(ids, labels=ids).loss.item()
        torch.manual_seed(0)
        random_model = AutoModelForCausalLM.from_config(smollm2.model.config)
        random_loss = random_model(ids, labels=ids).loss.item()
    assert math.exp(loss) < 40  # measured: about 14
    assert random_loss > math.log(smollm2.model.config.vocab_size) - 0.5  # about uniform


@pytest.mark.integration
def test_smollm2_reload_is_identical(smollm2: lcm.LoadedModel) -> None:
    again = lcm.load_model("smollm2-135m")
    assert again.weights_hash == smollm2.weights_hash
    a, b = smollm2.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_encoder_is_refused_and_a_decoder_accepted(tiny_lm) -> None:
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, is_decoder=False)
    torch.manual_seed(0)
    with pytest.raises(lcm.ModelLoadError, match="not a causal LM"):
        lcm.check_causal(BertLMHeadModel(config).eval(), "bert")
    config.is_decoder = True
    lcm.check_causal(BertLMHeadModel(config).eval(), "bert-decoder")
    lcm.check_causal(tiny_lm("gpt2", 2), "gpt2")
