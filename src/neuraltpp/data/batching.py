"""Padded batches of event sequences for the models (float64 times, windows, masks)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from neuraltpp.data.containers import EventDataset, EventSequence


class Batch(NamedTuple):
    """Right-padded batch: times/window float64, types long (pad 0), mask True on real events."""

    times: Tensor  # [B, L] float64; padding repeats the sequence's last time
    types: Tensor  # [B, L] long
    mask: Tensor  # [B, L] bool
    window_start: Tensor  # [B] float64
    window_end: Tensor  # [B] float64


def pad_sequences(sequences: Sequence[EventSequence]) -> Batch:
    """Right-pad sequences into a :class:`Batch` (pad time = last real time, pad type = 0).

    Unknown windows default to the first and last event times.
    """
    lengths = [len(s) for s in sequences]
    width = max(lengths)
    times = np.empty((len(sequences), width), dtype=np.float64)
    types = np.zeros((len(sequences), width), dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=bool)
    for b, s in enumerate(sequences):
        n = lengths[b]
        times[b, :n] = s.times
        times[b, n:] = s.times[-1]
        types[b, :n] = s.types
        mask[b, :n] = True
    start = [s.times[0] if s.window_start is None else s.window_start for s in sequences]
    end = [s.times[-1] if s.window_end is None else s.window_end for s in sequences]
    return Batch(
        times=torch.from_numpy(times),
        types=torch.from_numpy(types),
        mask=torch.from_numpy(mask),
        window_start=torch.tensor(start, dtype=torch.float64),
        window_end=torch.tensor(end, dtype=torch.float64),
    )


def batch_indices(
    ds: EventDataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    sort_by_length: bool = False,
) -> list[np.ndarray]:
    """The sequence indices of each batch, in order; deterministic given ``seed``: sequences
    are permuted (if ``shuffle``), optionally stably sorted by length into buckets (sequences
    of similar length share a batch), and the buckets themselves are permuted (if ``shuffle``).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ds)) if shuffle else np.arange(len(ds))
    if sort_by_length:
        lengths = np.array([len(ds.sequences[i]) for i in order])
        order = order[np.argsort(lengths, kind="stable")]
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if shuffle and sort_by_length:
        chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    return chunks


def batches(
    ds: EventDataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    sort_by_length: bool = False,
) -> Iterator[Batch]:
    """Yield the padded batches of `batch_indices`."""
    for chunk in batch_indices(
        ds, batch_size, shuffle=shuffle, seed=seed, sort_by_length=sort_by_length
    ):
        yield pad_sequences([ds.sequences[i] for i in chunk])
