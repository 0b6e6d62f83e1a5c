"""The built-in model as a plain checkpoint: the packaged GGUF converted once into the cache."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from commonio.atomic import replace_dir
from layercard import resources
from layercard.hashing import read_json

MARKER = "layercard-conversion.json"
SMOLLM2_CONVERSION = 1  # bump when the conversion changes, so cached checkpoints are rebuilt


def smollm2_checkpoint() -> Path:
    """Plain checkpoint dir of SmolLM2-135M-Instruct, converted once from the packaged GGUF.

    transformers dequantizes the Q4_1 GGUF to float32 (about 24 s) but refuses to save a
    GGUF-loaded model, so its state dict is copied into a fresh model of the same config and
    saved with the tokenizer into `<cache>/models/smollm2-135m`. The checkpoint is built in a
    temporary folder and renamed into place, with a marker naming its origin; a folder without
    the current marker (older or foreign conversion) is rebuilt.
    """
    target = resources.cache_dir() / "models" / "smollm2-135m"
    marker = {
        "from": f"{'=='.join(resources.SMOLLM2_WHEEL)}:{resources.SMOLLM2_GGUF}",
        "conversion": SMOLLM2_CONVERSION,
    }
    if read_json(target / MARKER) == marker:
        return target
    gguf = resources.smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = copy.deepcopy(loaded.config)
    # Without this the saved checkpoint would reload as a "GGUF-quantized" model.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)

    def fill(directory: Path) -> None:
        plain.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        (directory / MARKER).write_text(json.dumps(marker))

    try:
        replace_dir(target, fill)  # a stale conversion is moved aside, then deleted
    except OSError:
        if read_json(target / MARKER) != marker:  # unless a concurrent run finished first
            raise
    return target


def fetch_all() -> dict[str, Path]:
    """Fetch everything the built-in model and tasks need; returns name -> local path.

    Also converts the GGUF model once into the cached plain checkpoint that `load_model` uses.
    """
    return {
        "sentiment": resources.sentiment_file(),
        "dialog": resources.dialog_file(),
        "smollm2-135m (gguf)": resources.smollm2_gguf(),
        "smollm2-135m": smollm2_checkpoint(),
    }
