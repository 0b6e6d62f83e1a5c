"""Property tests of the task reader: every valid JSONL / CSV / datasets file loads exactly, and
damaged files give the project's DataError, never another exception."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections import Counter
from pathlib import Path

import datasets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layercard.data import SPLITS, DataError, load_task

datasets.disable_progress_bars()

TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1,
    max_size=30,
).filter(str.strip)
ROWS = st.lists(st.tuples(TEXT, TEXT), min_size=3, max_size=25)
FORMATS = st.sampled_from(["jsonl", "csv", "datasets"])
RUN = settings(max_examples=15, deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _write(directory: Path, fmt: str, column: str, rows: list[tuple[str, str]]) -> Path:
    """The rows as a task file (or datasets directory) of the format, columns prompt + column."""
    if fmt == "jsonl":
        path = directory / "task.jsonl"
        path.write_text("".join(json.dumps({"prompt": p, column: c}) + "\n" for p, c in rows),
                        encoding="utf-8")
    elif fmt == "csv":
        path = directory / "task.csv"
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerow(["prompt", column])
        writer.writerows(rows)
        path.write_bytes(buffer.getvalue().encode("utf-8"))
    else:
        path = directory / "task"
        datasets.Dataset.from_dict(
            {"prompt": [p for p, _ in rows], column: [c for _, c in rows]}
        ).save_to_disk(str(path))
    return path


def _loaded(path: Path) -> Counter:
    task = load_task(str(path))
    return Counter((e.prompt, e.completion) for s in SPLITS for e in getattr(task, s))


@RUN
@given(rows=ROWS, fmt=FORMATS, labelled=st.booleans())
def test_valid_tasks_load_every_row_exactly(rows, fmt, labelled) -> None:
    column = "label" if labelled else "completion"
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), fmt, column, rows)
        expected = Counter((p, " " + c.strip() if labelled else c) for p, c in rows)
        assert _loaded(path) == expected
        task = load_task(str(path))
        assert task.kind == ("classification" if labelled else "generation")
        if labelled:
            assert task.label_words == sorted({" " + c.strip() for _, c in rows})


@RUN
@given(rows=ROWS, fmt=st.sampled_from(["jsonl", "csv"]), data=st.data())
def test_damaged_text_files_give_a_data_error(rows, fmt, data) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), fmt, "completion", rows)
        raw = bytearray(path.read_bytes())
        for _ in range(data.draw(st.integers(1, 4))):
            where = data.draw(st.integers(0, len(raw) - 1))
            action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
            if action == "flip":
                raw[where] = data.draw(st.integers(0, 255))
            elif action == "cut":
                del raw[where:]
                if not raw:
                    break
            else:
                raw[where:where] = data.draw(st.sampled_from([b'"', b",", b"\n", b"{", b"\xff"]))
        path.write_bytes(bytes(raw))
        try:
            load_task(str(path))
        except DataError as err:
            assert str(path) in str(err)


@settings(max_examples=5, deadline=None)
@given(rows=ROWS, keep=st.floats(0.0, 0.95))
def test_damaged_datasets_directories_give_a_data_error(rows, keep) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), "datasets", "completion", rows)
        arrow = next(path.glob("*.arrow"))
        raw = arrow.read_bytes()
        arrow.write_bytes(raw[: int(keep * len(raw))])
        try:
            load_task(str(path))
        except DataError as err:
            assert str(path) in str(err)
