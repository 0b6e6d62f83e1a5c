"""Atomic writes: the target is whole or untouched, and no temporary file is left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from commonio import atomic


def test_write_text_and_bytes_create_parents_and_leave_nothing_else(tmp_path: Path) -> None:
    atomic.write_text(tmp_path / "a" / "b.json", "{}\n")
    atomic.write_bytes(tmp_path / "a" / "c.bin", b"\x00\x01")
    assert (tmp_path / "a" / "b.json").read_text(encoding="utf-8") == "{}\n"
    assert (tmp_path / "a" / "c.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.json", "c.bin"]


def test_the_usual_file_mode(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(mask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_a_failing_writer_leaves_the_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")
    seen: list[Path] = []

    def half_then_fail(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_bytes(b"ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert seen[0].parent == tmp_path and seen[0].suffix == ".pt"  # a sibling, same suffix
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_an_interrupt_also_cleans_up(tmp_path: Path) -> None:
    def interrupted(tmp: Path) -> None:
        tmp.write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_write(tmp_path / "never.txt", interrupted)
    assert list(tmp_path.iterdir()) == []


def test_replace_dir_swaps_in_the_new_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")

    def fill(staging: Path) -> None:
        assert staging.parent == tmp_path and staging != out
        (staging / "new.txt").write_text("new")

    assert atomic.replace_dir(out, fill) == out
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # staging and old copy are gone


def test_replace_dir_keeps_the_old_directory_when_filling_fails(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")

    def fail(staging: Path) -> None:
        (staging / "half.txt").write_text("half")
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        atomic.replace_dir(out, fail)
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_replace_dir_restores_the_old_directory_when_the_swap_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")
    real = os.replace

    def swap_fails(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst) == out and ".tmp-" in Path(src).name:  # staging -> out
            raise OSError("swap failed")
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", swap_fails)
    with pytest.raises(OSError, match="swap failed"):
        atomic.replace_dir(out, lambda staging: (staging / "new.txt").write_text("new"))
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert (out / "old.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging or old-* left
