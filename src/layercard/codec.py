"""card.json: the card as strict JSON and back, checked against the schema's type hints.

Keys appear in dataclass field order (mappings sorted by key), floats are written with Python's
round-trip repr (non-finite ones as null), so two CPU builds with the same seed give
byte-identical files once "timings" is removed. Reading names the file and key of any mismatch.
"""

from __future__ import annotations

import json
import math
import os
import types
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from layercard.schema import SCHEMA, Card


class CardFormatError(ValueError):
    """A card file is not valid JSON of the supported schema (the message names file and key)."""


def _encode(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def card_to_dict(card: Card) -> dict[str, Any]:
    """The card as plain JSON data (non-finite floats become null)."""
    return _encode(card)


def to_json(card: Card) -> str:
    """card.json text: stable key order, exact floats, trailing newline."""
    return json.dumps(card_to_dict(card), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _fits(kind: Any, value: Any) -> bool:
    origin = get_origin(kind) or kind
    if origin in (list, tuple):
        return isinstance(value, list)
    if origin is dict or is_dataclass(origin):
        return isinstance(value, dict)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, origin)


def _decode(kind: Any, value: Any, where: str) -> Any:
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        arms = get_args(kind)
        if value is None and type(None) in arms:
            return None
        for arm in arms:
            if arm is not type(None) and _fits(arm, value):
                return _decode(arm, value, where)
        raise CardFormatError(f"{where}: unexpected value {value!r}")
    if is_dataclass(kind):
        if not isinstance(value, dict):
            raise CardFormatError(f"{where}: expected an object, got {value!r}")
        hints = get_type_hints(kind)
        names = [f.name for f in fields(kind)]
        if set(value) != set(names):
            missing, extra = sorted(set(names) - set(value)), sorted(set(value) - set(names))
            raise CardFormatError(f"{where}: missing keys {missing}, unknown keys {extra}")
        return kind(**{n: _decode(hints[n], value[n], f"{where}.{n}") for n in names})
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise CardFormatError(f"{where}: expected a list, got {value!r}")
        item = get_args(kind)[0]
        items = [_decode(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise CardFormatError(f"{where}: expected an object, got {value!r}")
        key_kind, value_kind = get_args(kind)
        return {key_kind(k): _decode(value_kind, v, f"{where}.{k}") for k, v in value.items()}
    if kind is float:
        if value is None:
            return math.nan
        if not _fits(float, value):
            raise CardFormatError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if kind is Any:
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CardFormatError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def from_json(text: str, *, source: str = "card.json") -> Card:
    """Parse card.json text; CardFormatError (naming `source` and the key) if it does not fit."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise CardFormatError(f"{source}: not valid JSON: {err}") from err
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else None
        raise CardFormatError(f"{source}: schema {found!r} is not supported (expected {SCHEMA!r})")
    card = _decode(Card, data, source)
    check_consistent(card, source)
    return card


def check_consistent(card: Card, source: str) -> None:
    """CardFormatError unless the card's parts agree on its depth: one layer entry per block
    0..n-1 in order, sites on those layers only and on every one, an n×n coupling matrix and
    one probe gain per layer."""
    n = card.provenance.model.n_layers
    found = [e.layer for e in card.layers]
    if found != list(range(n)):
        missing = sorted(set(range(n)) - set(found))
        raise CardFormatError(f"{source}: layers: expected entries for the model's {n} blocks "
                              f"0..{n - 1} in order, got {len(found)} (missing {missing})")
    bare = sorted(set(range(n)) - {s.layer for s in card.sites})
    stray = sorted({s.layer for s in card.sites} - set(range(n)))
    if bare or stray:
        raise CardFormatError(f"{source}: sites: layers without sites {bare}, sites on unknown "
                              f"layers {stray}")
    matrix = card.coupling.matrix
    if len(matrix) != n or any(len(row) != n for row in matrix):
        raise CardFormatError(f"{source}: coupling.matrix: expected {n}×{n}")
    if card.probe is not None and len(card.probe.gains) != n:
        raise CardFormatError(f"{source}: probe.gains: expected {n} values, got "
                              f"{len(card.probe.gains)}")


def read_card(path: str | os.PathLike[str]) -> Card:
    """Load a card.json file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise CardFormatError(f"{path}: cannot read: {err.strerror}") from err
    return from_json(text, source=str(path))
