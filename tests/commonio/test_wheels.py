"""The registry cache: cache root, atomic downloads with a fake `python`, member extraction."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from commonio import wheels
from commonio.wheels import FetchError


def _fake_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\n" + script)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(wheels.sys, "executable", str(fake))


def test_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOOL_CACHE", str(tmp_path / "c"))
    assert wheels.cache_root("TOOL_CACHE", "tool") == tmp_path / "c"
    monkeypatch.setenv("TOOL_CACHE", "~/x")
    assert wheels.cache_root("TOOL_CACHE", "tool") == Path.home() / "x"
    monkeypatch.delenv("TOOL_CACHE")
    assert wheels.cache_root("TOOL_CACHE", "tool") == Path.home() / ".cache" / "tool"
    for empty in ("", "  "):
        monkeypatch.setenv("TOOL_CACHE", empty)
        with pytest.raises(FetchError, match=r"TOOL_CACHE is set but empty.*~/\.cache/tool"):
            wheels.cache_root("TOOL_CACHE", "tool")
    assert issubclass(FetchError, ValueError)  # the CLIs print it as `error: ...`, exit 2


def test_failed_download_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pip writes a partial file into the download folder, then fails
    _fake_python(
        tmp_path,
        monkeypatch,
        'while [ "$1" != -d ]; do shift; done\n'
        'echo partial > "$2/pkg-1.0-py3-none-any.whl"\n'
        "echo 'ERROR: network unreachable' >&2\nexit 1\n",
    )
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match=r"pkg==1\.0.*exited with 1.*network unreachable"):
        wheels.fetch_wheel(cache, "pkg", "1.0")
    assert list((cache / "wheels").iterdir()) == []


def test_download_moves_the_wheel_into_place(
    make_wheel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = make_wheel(tmp_path / "made" / "my_pkg-1.0-py3-none-any.whl", {"my_pkg/a.txt": b"A"})
    _fake_python(tmp_path, monkeypatch, f'while [ "$1" != -d ]; do shift; done\ncp {made} "$2"/\n')
    cache = tmp_path / "cache"
    wheel = wheels.fetch_wheel(cache, "my-pkg", "1.0")  # normalised name, as pip writes it
    assert wheel == cache / "wheels" / made.name and wheel.read_bytes() == made.read_bytes()
    assert [p.name for p in (cache / "wheels").iterdir()] == [made.name]
    _fake_python(tmp_path, monkeypatch, "exit 1\n")  # cached: pip is not called again
    assert wheels.fetch_wheel(cache, "my-pkg", "1.0") == wheel


def test_member_extraction_is_atomic_and_checked(
    make_wheel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_python(tmp_path, monkeypatch, "exit 1\n")  # any download attempt would fail
    cache = tmp_path / "cache"
    make_wheel(cache / "wheels" / "pkg-1.0-py3-none-any.whl", {"pkg/data/x.csv": b"a,b\n1,2\n"})
    path = wheels.wheel_member(cache, "pkg", "1.0", "pkg/data/x.csv")
    assert path == cache / "files" / "pkg-1.0" / "pkg" / "data" / "x.csv"
    assert path.read_bytes() == b"a,b\n1,2\n"
    assert [p.name for p in path.parent.iterdir()] == ["x.csv"]  # no temporary file left
    path.write_bytes(b"trunc")  # a file of the wrong size is extracted again
    assert wheels.wheel_member(cache, "pkg", "1.0", "pkg/data/x.csv").read_bytes() == b"a,b\n1,2\n"
    with pytest.raises(FetchError, match=r"has no file pkg/missing\.csv"):
        wheels.wheel_member(cache, "pkg", "1.0", "pkg/missing.csv")


def test_failed_extraction_leaves_no_partial_file(
    make_wheel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    make_wheel(cache / "wheels" / "pkg-1.0-py3-none-any.whl", {"pkg/big.bin": b"x" * 100_000})

    def fails(src: object, dst: object, length: int = 0) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(wheels.shutil, "copyfileobj", fails)
    with pytest.raises(OSError, match="disk full"):
        wheels.wheel_member(cache, "pkg", "1.0", "pkg/big.bin")
    files = cache / "files"
    assert [p for p in files.rglob("*") if p.is_file()] == []


def test_a_corrupt_wheel_is_a_clear_error(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    (cache / "wheels" / "pkg-1.0-py3-none-any.whl").write_bytes(b"not a zip")
    with pytest.raises(FetchError, match=r"not a readable wheel.*delete it and retry"):
        wheels.wheel_member(cache, "pkg", "1.0", "pkg/a.txt")
