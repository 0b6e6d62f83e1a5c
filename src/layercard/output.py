"""The card directory: card.json, card.md and the plots, written together in one move."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from commonio.atomic import replace_dir
from layercard.codec import to_json
from layercard.render import to_markdown
from layercard.schema import Card


class OutDirError(ValueError):
    """The output directory cannot take the result: it holds something the tool did not write,
    or it cannot be created (names --out)."""


def _json_field(path: Path, key: str) -> object:
    """`key` of the JSON object in `path`, or None when the file is not such JSON."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record.get(key) if isinstance(record, dict) else None


def check_replaceable(
    out: Path, marker: str, key: str, prefix: str, what: str, others: tuple[str, ...] = ()
) -> None:
    """OutDirError unless `out` can take a new result: absent (and creatable), empty, or a
    previous output of the tool: its `marker` file is JSON whose `key` starts with `prefix`,
    and every other entry is one of the files `others` or a Markdown or PNG file."""
    if not out.exists():
        ancestor = out.parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
            raise OutDirError(f"--out {out}: cannot be created ({ancestor} is not a writable "
                              "directory)")
        return
    if not out.is_dir():
        raise OutDirError(f"--out {out}: exists and is not a directory")
    entries = list(out.iterdir())
    if not entries:
        return
    value = _json_field(out / marker, key)
    if not (isinstance(value, str) and value.startswith(prefix)):
        raise OutDirError(f"--out {out}: not empty and not a previous {what} ({marker} with "
                          f"{key} {prefix}...); choose another directory")
    foreign = sorted(p.name for p in entries
                     if p.name != marker and not (p.is_file() and p.suffix in (".md", ".png")))
    if foreign:
        raise OutDirError(f"--out {out}: a previous {what}, but also holds {', '.join(foreign)}, "
                          "which layercard did not write; move them or choose another directory")


def check_out_dir(out: Path) -> None:
    """OutDirError (naming --out) unless `out` can take a card (see `check_replaceable`)."""
    check_replaceable(out, "card.json", "schema", "layercard/card@", "layer card")


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
