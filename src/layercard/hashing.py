"""sha256 of checkpoint weights, remembered per file in the cache (keyed by path, size, mtime)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from commonio.atomic import write_text
from layercard import resources

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def read_json(path: Path) -> object:
    """The JSON value in `path`, or None when it is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered in a sidecar in the cache keyed by path, size and mtime."""
    stat = path.stat()
    key = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    sidecars = resources.cache_dir() / "hashes"
    sidecar = sidecars / (hashlib.sha256(key["path"].encode()).hexdigest() + ".json")
    record = read_json(sidecar)
    if isinstance(record, dict) and all(record.get(k) == v for k, v in key.items()):
        return record["sha256"]
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    write_text(sidecar, json.dumps({**key, "sha256": digest.hexdigest()}))
    return digest.hexdigest()


def weight_files(directory: Path) -> list[Path]:
    """The checkpoint's weight files (.safetensors / .bin / .pt / .pth), sorted by name."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def weights_hash(files: list[Path]) -> str:
    """sha256 over weight files: of the lines `<file sha256>  <name>`, in the given order."""
    lines = "".join(f"{file_sha256(p)}  {p.name}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()
