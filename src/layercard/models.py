"""Model loading (built-in SmolLM2, local checkpoints, hub ids) and generic block discovery."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.pytorch_utils import Conv1D

from layercard.checkpoint import smollm2_checkpoint
from layercard.hashing import WEIGHT_SUFFIXES, weight_files, weights_hash
from layercard.sites import Site


class ModelStructureError(ValueError):
    """The model has no list of repeated transformer blocks that layercard can adapt."""


def _num_layers(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(text, key, None)
        if isinstance(value, int):
            return value
    return None


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """Return (dotted path, ModuleList) of the model's repeated decoder blocks.

    Generic: the longest ModuleList whose children all share one class; when the config states
    the number of layers, the list must have exactly that length.
    """
    expected = _num_layers(model)
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        if expected is not None and len(module) != expected:
            continue
        if best is None or len(module) > len(best[1]):
            best = (name, module)
    if best is None:
        what = f" of length {expected} (config.num_hidden_layers)" if expected else ""
        raise ModelStructureError(
            f"{type(model).__name__} has no list of repeated transformer blocks{what}; "
            "layercard supports decoder-only models whose blocks live in one nn.ModuleList "
            "(Llama, Qwen2/3, Mistral, GPT-2, GPT-NeoX, Phi, ...)."
        )
    return best


def _dims(module: nn.Module) -> tuple[int, int] | None:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):  # GPT-2 style: weight is (in, out)
        d_in, d_out = module.weight.shape
        return int(d_in), int(d_out)
    return None


def adaptable_sites(model: nn.Module) -> list[Site]:
    """Every linear module (nn.Linear or GPT-2 Conv1D) inside the blocks, in block order."""
    _, blocks = find_blocks(model)
    sites = []
    for layer, block in enumerate(blocks):
        for name, module in block.named_modules():
            dims = _dims(module)
            if dims is not None:
                sites.append(Site(layer, name, *dims))
    if not sites:
        raise ModelStructureError(f"{type(model).__name__}: its blocks contain no linear modules.")
    return sites


def site_module(model: nn.Module, site: Site, blocks: nn.ModuleList | None = None) -> nn.Module:
    """The module object a Site refers to; pass the model's `blocks` (from `find_blocks`) when
    looking up many sites, to walk the model once."""
    if blocks is None:
        _, blocks = find_blocks(model)
    return blocks[site.layer].get_submodule(site.module)


class ModelLoadError(ValueError):
    """A model spec could not be resolved or loaded (the message says what to pass instead)."""


BUILTIN_MODELS = ("smollm2-135m",)


@dataclass
class LoadedModel:
    """A frozen causal LM ready for measurement, with its tokenizer and provenance."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    model_id: str
    source: str
    weights_hash: str
    blocks_path: str
    n_layers: int


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split()).rstrip(".")


def _from_hub(spec: str, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    try:
        model = AutoModelForCausalLM.from_pretrained(spec, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(spec)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"--model {spec!r}: not a local directory, and loading it from the Hugging Face hub "
            f"failed (the hub is unreachable from this machine?): {_one_line(err)}. Pass a local "
            f"checkpoint directory, or a built-in model: {', '.join(BUILTIN_MODELS)}."
        ) from err
    return model, tokenizer


def load_model(spec: str, *, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load a causal LM frozen for measurement: `smollm2-135m`, a checkpoint dir, or a hub id.

    The model is in eval mode with requires_grad False everywhere; the tokenizer pads on the
    right with its pad token (the eos token when it has none).
    """
    path = Path(spec).expanduser()
    if spec in BUILTIN_MODELS:
        directory: Path | None = smollm2_checkpoint()
    elif path.exists() or spec.startswith(("/", ".", "~")):
        if not path.is_dir():
            raise ModelLoadError(f"--model {spec!r}: not a checkpoint directory")
        directory = path
    else:
        directory = None
    if directory is None:
        model, tokenizer = _from_hub(spec, dtype)
        source = spec
        revision = getattr(model.config, "_commit_hash", None) or "unknown"
        digest = f"hub:{spec}@{revision}"
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(directory)
        except (OSError, ValueError) as err:
            raise ModelLoadError(
                f"--model {spec!r}: cannot load {directory}: {_one_line(err)}"
            ) from err
        files = weight_files(directory)
        if not files:
            raise ModelLoadError(f"{directory}: no weight files ({', '.join(WEIGHT_SUFFIXES)})")
        source = str(directory.resolve())
        digest = weights_hash(files)
    return frozen_model(model, tokenizer, spec, source=source, weights_hash=digest)


@torch.no_grad()
def check_causal(model: PreTrainedModel, model_id: str, length: int = 8) -> None:
    """ModelLoadError unless the model is causal: changing the last token of a random sequence
    must leave the predictions at every earlier position unchanged. An encoder (BERT without
    is_decoder) sees the answer it is asked to predict, so its card would be meaningless."""
    vocab = model.get_input_embeddings().num_embeddings
    device = next(model.parameters()).device
    ids = torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(0))
    other = ids.clone()
    other[0, -1] = (ids[0, -1] + 1) % vocab
    before = model(input_ids=ids.to(device)).logits[0, :-1].float()
    after = model(input_ids=other.to(device)).logits[0, :-1].float()
    if not torch.allclose(before, after, rtol=1e-3, atol=1e-3 * float(before.abs().max())):
        raise ModelLoadError(
            f"--model {model_id!r}: not a causal LM (changing a token changes the predictions "
            "before it, as in an encoder such as BERT); layercard needs a decoder-only model"
        )


def frozen_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    model_id: str,
    *,
    source: str | None = None,
    weights_hash: str = "in-memory",
) -> LoadedModel:
    """A model the caller already has, prepared for measurement as `load_model` prepares one:
    eval mode, requires_grad False everywhere, padding on the right with a pad token."""
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(
                f"--model {model_id!r}: the tokenizer has neither a pad nor an eos token"
            )
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    check_causal(model, model_id)
    blocks_path, blocks = find_blocks(model)
    return LoadedModel(
        model, tokenizer, model_id, source or model_id, weights_hash, blocks_path, len(blocks)
    )
