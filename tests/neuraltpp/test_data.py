"""Readers/writers round trips, validation errors, batching and splits of neuraltpp.data."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from neuraltpp.data import (
    DataError,
    EventDataset,
    EventSequence,
    batches,
    future_split,
    load_dataset,
    split_dataset,
    write_easytpp_json,
    write_hf_dataset,
    write_pickle,
    write_table,
)


def _dataset(source: str = "mem") -> EventDataset:
    rng = np.random.default_rng(0)
    seqs = []
    for i, n in enumerate([5, 1, 8]):
        times = np.cumsum(rng.exponential(0.7, n)) + 0.1 * i
        times[min(2, n - 1)] = times[min(1, n - 1)]  # a tie (allowed)
        seqs.append(EventSequence(np.sort(times), rng.integers(0, 3, n), str(i)))
    return EventDataset(seqs, num_types=3, source=source)


def _assert_same(a: EventDataset, b: EventDataset) -> None:
    assert a.num_types == b.num_types
    assert [s.seq_id for s in a.sequences] == [s.seq_id for s in b.sequences]
    for x, y in zip(a.sequences, b.sequences, strict=True):
        np.testing.assert_array_equal(x.times, y.times)
        np.testing.assert_array_equal(x.types, y.types)
        assert x.times.dtype == np.float64 and x.types.dtype == np.int64


def _splits() -> dict[str, EventDataset]:
    return {"train": _dataset(), "dev": _dataset(), "test": _dataset()}


def test_pickle_round_trip(tmp_path: Path) -> None:
    write_pickle(_splits(), tmp_path)
    loaded = load_dataset(tmp_path)
    assert sorted(loaded) == ["dev", "test", "train"]
    for split in loaded:
        _assert_same(loaded[split], _dataset())


def _py2_pickle(obj: object) -> bytes:
    """Pickle the way Python 2 did: str as byte strings (SHORT_BINSTRING), protocol 2."""

    def enc(x: object) -> bytes:
        if isinstance(x, dict):
            body = b"".join(enc(k) + enc(v) for k, v in x.items())
            return b"}(" + body + b"u"
        if isinstance(x, list):
            return b"](" + b"".join(enc(v) for v in x) + b"e"
        if isinstance(x, str):
            raw = x.encode("latin1")
            return b"U" + bytes([len(raw)]) + raw
        if isinstance(x, float):
            return b"G" + struct.pack(">d", x)
        assert isinstance(x, int)
        return b"K" + bytes([x])

    return b"\x80\x02" + enc(obj) + b"."


def test_pickle_latin1_fallback(tmp_path: Path) -> None:
    events = [
        {"time_since_start": 0.5, "time_since_last_event": 0.0, "type_event": 1},
        {"time_since_start": 1.25, "time_since_last_event": 0.75, "type_event": 0},
    ]
    path = tmp_path / "train.pkl"
    path.write_bytes(_py2_pickle({"dim_process": 2, "train": [events], "note": "caf\xe9"}))
    with pytest.raises(UnicodeDecodeError), path.open("rb") as fh:
        pickle.load(fh)
    ds = load_dataset(path)["train"]
    np.testing.assert_array_equal(ds.sequences[0].times, [0.5, 1.25])
    np.testing.assert_array_equal(ds.sequences[0].types, [1, 0])


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_easytpp_json_round_trip(tmp_path: Path, suffix: str) -> None:
    for split, ds in _splits().items():
        write_easytpp_json(ds, tmp_path / f"{split}{suffix}")
    loaded = load_dataset(tmp_path)
    for split in ("train", "dev", "test"):
        _assert_same(loaded[split], _dataset())
    single = load_dataset(tmp_path / f"dev{suffix}")
    assert list(single) == ["dev"]
    record = (
        json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])
        if suffix == (".jsonl")
        else json.loads((tmp_path / "train.json").read_text())[0]
    )
    assert set(record) == {
        "time_since_start",
        "time_since_last_event",
        "type_event",
        "dim_process",
        "seq_len",
        "seq_idx",
    }


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_round_trip(tmp_path: Path, suffix: str) -> None:
    for split, ds in _splits().items():
        write_table(ds, tmp_path / f"{split}{suffix}")
    loaded = load_dataset(tmp_path)
    for split in ("train", "dev", "test"):
        _assert_same(loaded[split], _dataset())


def test_table_string_types_sorted_mapping(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("seq_id,time,type\na,0.5,sell\na,1.0,buy\nb,2.0,hold\n")
    (tmp_path / "test.csv").write_text("seq_id,time,type\nc,0.1,buy\n")
    loaded = load_dataset(tmp_path)
    train = loaded["train"]
    assert train.type_names == ["buy", "hold", "sell"] == loaded["test"].type_names
    assert train.num_types == 3
    np.testing.assert_array_equal(train.sequences[0].types, [2, 0])
    write_table(train, tmp_path / "out" / "all.csv")
    again = load_dataset(tmp_path / "out" / "all.csv")["all"]
    _assert_same(again, train)
    assert again.type_names == train.type_names


def test_hf_datasets_round_trip(tmp_path: Path) -> None:
    write_hf_dataset(_splits(), tmp_path / "hf")
    loaded = load_dataset(tmp_path / "hf")
    for split in ("train", "dev", "test"):
        _assert_same(loaded[split], _dataset())


def test_time_scale_recorded(tmp_path: Path) -> None:
    write_pickle(_splits(), tmp_path)
    scaled = load_dataset(tmp_path, time_scale=10.0)["train"]
    assert scaled.time_scale == 10.0
    np.testing.assert_allclose(scaled.sequences[0].times, _dataset().sequences[0].times / 10.0)
    with pytest.raises(DataError, match="positive"):
        load_dataset(tmp_path, time_scale=0.0)


# ----------------------------------------------------------------------------- errors


def _write_events(path: Path, seqs: list[list[tuple[float, float, int]]], dim: int = 3) -> None:
    data = [
        [{"time_since_start": t, "time_since_last_event": g, "type_event": k} for t, g, k in s]
        for s in seqs
    ]
    path.write_bytes(pickle.dumps({"dim_process": dim, "train": data}))


GOOD = [(0.0, 0.0, 0), (1.0, 1.0, 1)]


def _bad_load(tmp_path: Path, bad_seq: list[tuple[float, float, int]]) -> str:
    path = tmp_path / "train.pkl"
    _write_events(path, [GOOD, bad_seq])
    with pytest.raises(DataError) as info:
        load_dataset(path)
    message = str(info.value)
    assert str(path) in message and "sequence 1" in message
    return message


def test_error_non_finite_time(tmp_path: Path) -> None:
    message = _bad_load(tmp_path, [(0.0, 0.0, 0), (1.0, 1.0, 0), (float("nan"), 0.0, 1)])
    assert "position 2" in message and "non-finite" in message


def test_error_decreasing_time(tmp_path: Path) -> None:
    message = _bad_load(tmp_path, [(0.0, 0.0, 0), (2.0, 2.0, 0), (1.5, -0.5, 1)])
    assert "position 2" in message and "before the previous" in message


def test_error_type_out_of_range(tmp_path: Path) -> None:
    message = _bad_load(tmp_path, [(0.0, 0.0, 0), (1.0, 1.0, 0), (2.0, 1.0, 3)])
    assert "position 2" in message and "not in [0, 3)" in message


def test_error_negative_type(tmp_path: Path) -> None:
    message = _bad_load(tmp_path, [(0.0, 0.0, 0), (1.0, 1.0, -1)])
    assert "position 1" in message and "type -1" in message


def test_error_empty_sequence(tmp_path: Path) -> None:
    assert "empty sequence" in _bad_load(tmp_path, [])


def test_error_inconsistent_gap(tmp_path: Path) -> None:
    message = _bad_load(tmp_path, [(0.0, 0.0, 0), (1.0, 1.0, 0), (2.0, 0.5, 1)])
    assert "position 2" in message and "time_since_last_event" in message


def test_error_table_names_row(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("seq_id,time,type\na,0.5,0\nb,1.0,1\nb,0.7,1\n")
    with pytest.raises(DataError) as info:
        load_dataset(path)
    message = str(info.value)
    assert str(path) in message and "sequence 1 (id 'b')" in message
    assert "position 1" in message and "data row 2" in message


def test_error_splits_disagree_on_types(tmp_path: Path) -> None:
    _write_events(tmp_path / "train.pkl", [GOOD], dim=3)
    _write_events(tmp_path / "test.pkl", [GOOD], dim=4)
    with pytest.raises(DataError, match="disagree on the number of types"):
        load_dataset(tmp_path)


def test_repair_sort_and_dedupe_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("seq_id,time,type\na,0.5,0\na,0.2,1\na,0.9,1\na,0.9,1\n")
    with pytest.warns(UserWarning, match="repaired"):
        ds = load_dataset(path, repair=("sort", "dedupe"))["train"]
    np.testing.assert_array_equal(ds.sequences[0].times, [0.2, 0.5, 0.9])
    np.testing.assert_array_equal(ds.sequences[0].types, [1, 0, 1])
    assert len(ds.repairs) == 2
    assert "sorted" in ds.repairs[0] and "dropped 1 exact duplicate" in ds.repairs[1]
    with pytest.raises(DataError, match="unknown repair"):
        load_dataset(path, repair=("magic",))


# ----------------------------------------------------------------------------- batching, splits


def test_batches_padding_and_mask() -> None:
    ds = _dataset()
    ds.sequences[2].window_start, ds.sequences[2].window_end = -1.0, 100.0
    (batch,) = list(batches(ds, 8, shuffle=False, seed=0))
    assert batch.times.dtype == torch.float64 and batch.types.dtype == torch.long
    assert batch.mask.dtype == torch.bool and batch.times.shape == (3, 8)
    assert batch.mask.sum(dim=1).tolist() == [5, 1, 8]
    for b, seq in enumerate(ds.sequences):
        n = len(seq)
        np.testing.assert_array_equal(batch.times[b, :n].numpy(), seq.times)
        np.testing.assert_array_equal(batch.types[b, :n].numpy(), seq.types)
        assert torch.all(batch.types[b, n:] == 0)
        assert torch.all(batch.times[b, n:] == seq.times[-1])  # pad repeats the last time
    assert batch.window_start.tolist() == [ds.sequences[0].times[0], ds.sequences[1].times[0], -1.0]
    assert batch.window_end.tolist() == [
        ds.sequences[0].times[-1],
        ds.sequences[1].times[-1],
        100.0,
    ]


@pytest.mark.parametrize("sort_by_length", [False, True])
def test_batches_deterministic_and_complete(sort_by_length: bool) -> None:
    seqs = [EventSequence(np.arange(n, dtype=float), np.zeros(n), str(n)) for n in range(1, 12)]
    ds = EventDataset(seqs, 1, "mem")

    def ids(seed: int) -> list[list[int]]:
        out = batches(ds, 3, shuffle=True, seed=seed, sort_by_length=sort_by_length)
        return [b.mask.sum(dim=1).tolist() for b in out]

    assert ids(1) == ids(1)
    assert sorted(x for b in ids(1) for x in b) == list(range(1, 12))
    if sort_by_length:
        assert all(max(b) - min(b) <= 2 for b in ids(1))


def test_split_dataset_deterministic_partition() -> None:
    seqs = [EventSequence([0.0, 1.0], [0, 0], str(i)) for i in range(20)]
    ds = EventDataset(seqs, 1, "mem")
    a = split_dataset(ds, (0.7, 0.2, 0.1), seed=3)
    b = split_dataset(ds, (0.7, 0.2, 0.1), seed=3)
    assert {k: len(v) for k, v in a.items()} == {"train": 14, "dev": 4, "test": 2}
    ids = [s.seq_id for part in a.values() for s in part.sequences]
    assert sorted(ids, key=int) == [str(i) for i in range(20)]
    assert ids == [s.seq_id for part in b.values() for s in part.sequences]
    assert a["dev"].metadata["split_seed"] == 3


def test_future_split_windows() -> None:
    seqs = [
        EventSequence([1.0, 2.0, 6.0, 9.0], [0, 1, 0, 1], "a", 0.0, 10.0),
        EventSequence([8.0, 9.5], [0, 0], "late", 0.0, 10.0),
        EventSequence([0.0, 3.0, 10.0], [1, 1, 0], "nowindow"),
    ]
    fs = future_split(EventDataset(seqs, 2, "mem"), 0.7)
    assert fs.excluded == ["late"]
    np.testing.assert_allclose(fs.split_times, [7.0, 7.0])
    assert fs.n_prefix.tolist() == [3, 2]
    first = fs.prefix.sequences[0]
    np.testing.assert_array_equal(first.times, [1.0, 2.0, 6.0])
    assert (first.window_start, first.window_end) == (0.0, 7.0)
    assert (fs.full.sequences[0].window_start, fs.full.sequences[0].window_end) == (0.0, 10.0)
    assert (fs.full.sequences[1].window_start, fs.full.sequences[1].window_end) == (0.0, 10.0)


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"garbage, not a pickle", "not a readable pickle"),
        (pickle.dumps({"dim_process": 2, "train": [[]]})[:-5], "not a readable pickle"),
        (b"", "not a readable pickle (EOFError"),
    ],
)
def test_error_unreadable_pickle_names_the_file(tmp_path: Path, content: bytes, detail: str):
    path = tmp_path / "train.pkl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"train\.pkl: ") as info:
        load_dataset(path)
    assert detail in str(info.value)


def test_error_string_time_in_a_pickle_names_sequence_and_position(tmp_path: Path):
    message = _bad_load(tmp_path, [(0.0, 0.0, 0), ("1.5", 1.5, 1)])  # type: ignore[list-item]
    assert "position 1: time_since_start '1.5' is not a number" in message


def test_error_event_that_is_not_a_dict_names_its_position(tmp_path: Path):
    path = tmp_path / "train.pkl"
    event = {"time_since_start": 0.0, "time_since_last_event": 0.0, "type_event": 0}
    path.write_bytes(pickle.dumps({"dim_process": 1, "train": [[event, 7]]}))
    with pytest.raises(DataError, match=r"sequence 0 \(id '0'\), position 1: expected a dict"):
        load_dataset(path)


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("", "empty file (need a header seq_id,time,type)"),
        ("seq_id,time,type\n", "no data rows"),
        ("seq_id,time,type\na,0.5,0\na,soon,1\n", "data row 1: time 'soon' is not a number"),
        ("seq_id,time,type\na,0.5,0\na,0.7,1.5\n", "data row 1: type 1.5 is not an integer"),
    ],
)
def test_error_bad_csv_names_the_file_and_row(tmp_path: Path, text: str, detail: str):
    path = tmp_path / "events.csv"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        load_dataset(path)
    assert str(path) in str(info.value) and detail in str(info.value)


def test_error_unsorted_times_say_how_to_fix_them(tmp_path: Path):
    message = _bad_load(tmp_path, [(0.0, 0.0, 0), (2.0, 2.0, 0), (1.5, -0.5, 1)])
    assert "sort the events of each sequence by time" in message


def test_windows_time_scale_and_names_survive_every_format(tmp_path: Path):
    """What simulated data and the earthquake catalogs carry is kept by every writer."""
    seqs = [EventSequence([0.5, 1.0], [0, 2], "0", 0.0, 4.0), EventSequence([2.0], [1], "1")]
    ds = EventDataset(seqs, 3, "mem", time_scale=86400.0, type_names=["M3", "M4", "M5"])
    write_easytpp_json(ds, tmp_path / "json" / "train.json")
    write_pickle({"train": ds}, tmp_path / "pkl")
    write_hf_dataset({"train": ds}, tmp_path / "hf")
    write_table(ds, tmp_path / "csv" / "train.csv")
    for name in ("json", "pkl", "hf", "csv"):
        read = load_dataset(tmp_path / name)["train"]
        assert (read.time_scale, read.type_names) == (86400.0, ["M3", "M4", "M5"]), name
        windows = [(s.window_start, s.window_end) for s in read.sequences]
        assert windows == [(0.0, 4.0), (None, None)], name


def test_easytpp_seq_idx_keeps_only_ids_that_fit_int64() -> None:
    """EasyTPP's seq_idx column is int64 (Arrow): a longer digit id falls back to the index."""
    from neuraltpp.data.containers import EventDataset, EventSequence
    from neuraltpp.data.easytpp import easytpp_records

    seqs = [EventSequence(times=np.array([0.0]), types=np.array([0]), seq_id=s)
            for s in ("42", str(2**63), "a7")]
    records = easytpp_records(EventDataset(sequences=seqs, num_types=1, source="test"))
    assert [r["seq_idx"] for r in records] == [42, 1, 2]
