"""Split names, random train/dev/test splits over sequences, and per-sequence time splits."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from neuraltpp.data.containers import DataError, EventDataset, EventSequence

SPLITS = ("train", "dev", "test")
SPLIT_ALIASES = {"valid": "dev", "validation": "dev", "val": "dev"}


def split_name(name: str) -> str:
    """The canonical split name of ``name`` (``valid``/``validation``/``val`` are ``dev``)."""
    return SPLIT_ALIASES.get(name, name)


def _subset(ds: EventDataset, sequences: list[EventSequence], **metadata: Any) -> EventDataset:
    return replace(ds, sequences=sequences, metadata={**ds.metadata, **metadata})


def split_sizes(n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> tuple[int, int, int]:
    """How many of ``n`` sequences `split_dataset` puts in train, dev and test."""
    n_train, n_dev = round(fractions[0] * n), round(fractions[1] * n)
    return n_train, n_dev, n - n_train - n_dev


def split_dataset(
    ds: EventDataset, fractions: Sequence[float] = (0.8, 0.1, 0.1), *, seed: int = 0
) -> dict[str, EventDataset]:
    """Shuffle sequences with ``seed`` and cut into train/dev/test by ``fractions`` (sum 1)."""
    if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0):
        raise DataError(f"fractions must be three non-negative numbers summing to 1: {fractions}")
    order = np.random.default_rng(seed).permutation(len(ds))
    n_train, n_dev, _ = split_sizes(len(ds), fractions)
    cuts = {
        "train": order[:n_train],
        "dev": order[n_train : n_train + n_dev],
        "test": order[n_train + n_dev :],
    }
    return {
        name: _subset(
            ds,
            [ds.sequences[i] for i in sorted(idx)],
            split=name,
            split_seed=seed,
            split_fractions=list(fractions),
        )
        for name, idx in cuts.items()
    }


@dataclass
class FutureSplit:
    """Per-sequence time split: ``prefix`` on [start, split] for training, ``full`` for scoring.

    The suffix log-likelihood conditioned on the prefix is exact by the chain rule:
    ``LL(full on [start, end]) - LL(prefix on [start, split])`` (with the tail compensator on).
    ``split_times[i]`` is the split time of sequence ``i``; ``n_prefix[i]`` its prefix length.
    """

    prefix: EventDataset
    full: EventDataset
    split_times: np.ndarray
    n_prefix: np.ndarray
    excluded: list[str]  # seq_ids with no event in the prefix (cannot be conditioned on)


def future_split(ds: EventDataset, fraction: float = 0.7) -> FutureSplit:
    """Split each sequence at ``start + fraction * (end - start)`` of its window.

    Prefix events are those with time <= split time; the prefix keeps ``window_end`` = split
    time. Sequences with no prefix event are excluded and listed in ``excluded``.
    """
    if not 0 < fraction < 1:
        raise DataError(f"future_split fraction must be in (0, 1), got {fraction}")
    prefixes, fulls, cuts, counts, excluded = [], [], [], [], []
    for seq in ds.sequences:
        start = seq.times[0] if seq.window_start is None else seq.window_start
        end = seq.times[-1] if seq.window_end is None else seq.window_end
        cut = start + fraction * (end - start)
        n = int(np.searchsorted(seq.times, cut, side="right"))
        if n == 0:
            excluded.append(seq.seq_id)
            continue
        prefixes.append(
            EventSequence(seq.times[:n], seq.types[:n], seq.seq_id, float(start), float(cut))
        )
        fulls.append(EventSequence(seq.times, seq.types, seq.seq_id, float(start), float(end)))
        cuts.append(cut)
        counts.append(n)
    return FutureSplit(
        prefix=_subset(ds, prefixes, future_split="prefix", future_fraction=fraction),
        full=_subset(ds, fulls, future_split="full", future_fraction=fraction),
        split_times=np.asarray(cuts, dtype=np.float64),
        n_prefix=np.asarray(counts, dtype=np.int64),
        excluded=excluded,
    )
