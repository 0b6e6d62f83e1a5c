"""Number formatting shared by the card's findings, tables and Markdown."""

from __future__ import annotations

import math
from collections.abc import Sequence


def fmt(x: float, digits: int = 3) -> str:
    """`digits` significant digits; scientific notation outside [1e-3, 1e5); "n/a" if not finite."""
    if not math.isfinite(x):
        return "n/a"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def fmt_bytes(n: float) -> str:
    """Bytes as MiB with one decimal."""
    return f"{n / 2**20:.1f} MiB"


def fmt_layers(layers: Sequence[int]) -> str:
    """Layer indices as a comma-separated list."""
    return ", ".join(str(i) for i in layers)
