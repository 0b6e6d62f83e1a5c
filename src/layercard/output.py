"""The card directory: card.json, card.md and the plots, written together in one move."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from commonio.atomic import replace_dir
from layercard.codec import to_json
from layercard.render import to_markdown
from layercard.schema import Card


class OutDirError(ValueError):
    """The output directory exists and is neither empty nor a previous card (names --out)."""


def check_out_dir(out: Path) -> None:
    """OutDirError (naming --out) unless `out` is absent, empty, or a previous card dir."""
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / "card.json").is_file())
    ):
        raise OutDirError(
            f"--out {out}: exists and is not an empty directory or a previous layer card"
        )


def write_card_dir(
    card: Card, out: str | os.PathLike[str], extra: Callable[[Path], None] | None = None
) -> Path:
    """Write card.json, card.md (and whatever `extra(dir)` adds, e.g. plots) into `out` at once.

    Files are written into a fresh directory beside `out`, which then replaces `out`; an
    existing `out` must be empty or hold a previous card (card.json), else OutDirError.
    """
    out = Path(out)
    check_out_dir(out)

    def fill(staging: Path) -> None:
        (staging / "card.json").write_text(to_json(card), encoding="utf-8")
        (staging / "card.md").write_text(to_markdown(card), encoding="utf-8")
        if extra is not None:
            extra(staging)

    return replace_dir(out, fill)
