"""Property tests of every event-data format: random valid datasets round-trip exactly through
its writer and reader (windows, time scale and type names included, where the format holds
them), and random corruptions of a written file give a DataError, never another exception."""

from __future__ import annotations

import json
import pickle
import random
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from neuraltpp.data import (
    DataError,
    EventDataset,
    EventSequence,
    load_dataset,
    write_easytpp_json,
    write_hf_dataset,
    write_pickle,
    write_table,
)

FAST = settings(max_examples=25, deadline=None)
SLOW = settings(max_examples=8, deadline=None)  # Hugging Face directories and Parquet files

TIMES = st.floats(-1e9, 1e9, allow_nan=False, allow_infinity=False)
MARGINS = st.none() | st.floats(0, 1e3, allow_nan=False)
NAME_TEXT = st.text(min_size=1, max_size=8)
# CSV is text: a name pandas reads as a number, boolean or missing value would come back as
# one, so table names are letters; ids are any printable text without line breaks.
TABLE_NAME = st.text("abcxyz_-", min_size=1, max_size=6)
TABLE_ID = st.text(st.characters(codec="ascii", categories=["L", "N", "P", "Zs"]), min_size=1)


@st.composite
def datasets(draw: st.DrawFn, *, table: bool = False) -> EventDataset:
    """A random valid dataset. Ids are sequence indices except in tables (any text); in tables
    every type occurs (a table holds only the types that occur)."""
    k = draw(st.integers(1, 4))
    n = draw(st.integers(1, 4))
    sequences = []
    for i in range(n):
        times = sorted(draw(st.lists(TIMES, min_size=1, max_size=6)))
        types = draw(st.lists(st.integers(0, k - 1), min_size=len(times), max_size=len(times)))
        before, after = draw(MARGINS), draw(MARGINS)
        seq_id = draw(TABLE_ID) if table else str(i)
        sequences.append(
            EventSequence(
                times,
                types,
                seq_id,
                None if before is None else times[0] - before,
                None if after is None else times[-1] + after,
            )
        )
    if table:
        k = _relabel_to_occurring(sequences)
        if len({s.seq_id for s in sequences}) < n:  # one id, one sequence
            for i, s in enumerate(sequences):
                s.seq_id = f"{s.seq_id}#{i}"
    names = draw(
        st.none()
        | st.lists(TABLE_NAME if table else NAME_TEXT, min_size=k, max_size=k, unique=True)
    )
    if table and names is not None:
        names.sort()  # a table maps names to types in sorted order
    scale = draw(st.just(1.0) | st.floats(1e-6, 1e6))
    return EventDataset(sequences, k, "generated", time_scale=scale, type_names=names)


def _relabel_to_occurring(sequences: list[EventSequence]) -> int:
    """Renumber the types that occur as 0..m-1 (keeping their order); returns m."""
    used = np.unique(np.concatenate([s.types for s in sequences]))
    for s in sequences:
        s.types = np.searchsorted(used, s.types)
    return len(used)


def assert_same(read: EventDataset, written: EventDataset) -> None:
    """Everything a dataset holds, exactly: types, names, scale, ids, times, windows."""
    assert (read.num_types, read.type_names) == (written.num_types, written.type_names)
    assert read.time_scale == written.time_scale
    assert len(read) == len(written)
    for a, b in zip(read.sequences, written.sequences, strict=True):
        assert a.seq_id == b.seq_id
        assert a.times.dtype == np.float64 and a.types.dtype == np.int64
        np.testing.assert_array_equal(a.times, b.times)
        np.testing.assert_array_equal(a.types, b.types)
        assert (a.window_start, a.window_end) == (b.window_start, b.window_end)


@contextmanager
def directory() -> Iterator[Path]:
    """A fresh temporary directory (hypothesis runs the body many times per test)."""
    with tempfile.TemporaryDirectory() as name, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # datasets' and pandas' chatter is not under test
        yield Path(name)


WRITERS: dict[str, Callable[[EventDataset, Path], Path]] = {}


def writer(name: str) -> Callable[[Callable[[EventDataset, Path], Path]], Any]:
    def register(write: Callable[[EventDataset, Path], Path]) -> Any:
        WRITERS[name] = write
        return write

    return register


@writer("json")
def _json(ds: EventDataset, d: Path) -> Path:
    write_easytpp_json(ds, d / "train.json")
    return d / "train.json"


@writer("jsonl")
def _jsonl(ds: EventDataset, d: Path) -> Path:
    write_easytpp_json(ds, d / "train.jsonl")
    return d / "train.jsonl"


@writer("pickle")
def _pickle(ds: EventDataset, d: Path) -> Path:
    write_pickle({"train": ds}, d)
    return d / "train.pkl"


@writer("hf")
def _hf(ds: EventDataset, d: Path) -> Path:
    write_hf_dataset({"train": ds}, d / "hf")
    return d / "hf"


@writer("csv")
def _csv(ds: EventDataset, d: Path) -> Path:
    write_table(ds, d / "train.csv")
    return d / "train.csv"


@writer("parquet")
def _parquet(ds: EventDataset, d: Path) -> Path:
    write_table(ds, d / "train.parquet")
    return d / "train.parquet"


def _round_trip(fmt: str, ds: EventDataset) -> None:
    with directory() as d:
        splits = load_dataset(WRITERS[fmt](ds, d))
    assert list(splits) == ["train"]
    assert_same(splits["train"], ds)


@FAST
@given(ds=datasets(), fmt=st.sampled_from(["json", "jsonl", "pickle"]))
def test_records_round_trip(ds: EventDataset, fmt: str) -> None:
    _round_trip(fmt, ds)


@FAST
@given(ds=datasets(table=True))
def test_csv_round_trip(ds: EventDataset) -> None:
    _round_trip("csv", ds)


@SLOW
@given(ds=datasets(table=True))
def test_parquet_round_trip(ds: EventDataset) -> None:
    _round_trip("parquet", ds)


@SLOW
@given(ds=datasets())
def test_hf_round_trip(ds: EventDataset) -> None:
    _round_trip("hf", ds)


# ----------------------------------------------------------------------------- corruptions


def _damage(data: bytes, rng: random.Random) -> bytes:
    """Truncate, overwrite a few bytes, or insert a few random bytes."""
    out = bytearray(data)
    op = rng.choice(["truncate", "overwrite", "insert"])
    if op == "truncate":
        return bytes(out[: rng.randrange(len(out))])
    if op == "overwrite":
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    at = rng.randrange(len(out) + 1)
    out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(out)


def _loads_or_data_error(path: Path) -> None:
    """The property: a damaged input loads (the damage kept it valid) or raises DataError."""
    with suppress(DataError):
        load_dataset(path)


@FAST
@given(
    ds=datasets(),
    fmt=st.sampled_from(["json", "jsonl", "pickle", "csv"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_damaged_bytes_give_a_data_error(ds: EventDataset, fmt: str, seed: int) -> None:
    with directory() as d:
        path = WRITERS[fmt](ds, d)
        path.write_bytes(_damage(path.read_bytes(), random.Random(seed)))
        _loads_or_data_error(path)


@SLOW
@given(ds=datasets(table=True), fmt=st.sampled_from(["hf", "parquet"]), seed=st.integers(0))
def test_damaged_binary_files_give_a_data_error(ds: EventDataset, fmt: str, seed: int) -> None:
    rng = random.Random(seed)
    with directory() as d:
        path = WRITERS[fmt](ds, d)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        target = rng.choice(files)
        target.write_bytes(_damage(target.read_bytes(), rng))
        _loads_or_data_error(path)


# Any JSON value (also what a pickle of plain Python values holds), to put where data belongs.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


def _replace_somewhere(obj: Any, value: Any, rng: random.Random) -> Any:
    """``obj`` with one randomly chosen node (possibly the root) replaced by ``value``."""
    if rng.random() < 0.25 or not isinstance(obj, dict | list) or not obj:
        return value
    key = rng.choice(list(obj.keys()) if isinstance(obj, dict) else range(len(obj)))
    obj[key] = _replace_somewhere(obj[key], value, rng)
    return obj


@FAST
@given(
    ds=datasets(), value=JSON_VALUES, seed=st.integers(0), fmt=st.sampled_from(["json", "pickle"])
)
def test_wrong_values_give_a_data_error(ds: EventDataset, value: Any, seed: int, fmt: str) -> None:
    """A value of any type in place of any part of the records, the pickle or the extras."""
    rng = random.Random(seed)
    with directory() as d:
        path = WRITERS[fmt](ds, d)
        if fmt == "json":
            records = _replace_somewhere(json.loads(path.read_text()), value, rng)
            path.write_text(json.dumps(records))
        else:
            payload = _replace_somewhere(pickle.loads(path.read_bytes()), value, rng)
            path.write_bytes(pickle.dumps(payload))
        _loads_or_data_error(path)


@FAST
@given(ds=datasets(table=True), cell=st.text(max_size=6), seed=st.integers(0))
def test_wrong_csv_cells_give_a_data_error(ds: EventDataset, cell: str, seed: int) -> None:
    rng = random.Random(seed)
    with directory() as d:
        path = WRITERS["csv"](ds, d)
        lines = path.read_text().splitlines()
        row = rng.randrange(len(lines))
        cells = lines[row].split(",")
        cells[rng.randrange(len(cells))] = cell
        lines[row] = ",".join(cells)
        path.write_text("\n".join(lines) + "\n")
        _loads_or_data_error(path)
