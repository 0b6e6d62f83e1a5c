"""Suite-wide settings and shared builders.

One intra-op torch thread per test process: the suite runs with one pytest worker per core
(`make test`), and its tensors are small, so extra intra-op threads only contend for the same
cores.
"""

import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


def _make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    """A zip file at `path` (parents created) holding `members`: a stand-in wheel."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return path


@pytest.fixture(scope="session")
def make_wheel() -> Callable[[Path, dict[str, bytes]], Path]:
    """Builder of stand-in wheel files for the registry-cache tests."""
    return _make_wheel


Launch = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="session")
def launch() -> Launch:
    """Run ``python -m <module> <args>`` under ``accelerate launch`` with `processes` CPU
    processes (its torchrun launcher; gloo), one thread each, as the README shows."""

    def run(processes: int, module: str, *args: str) -> subprocess.CompletedProcess:
        accelerate = Path(sys.executable).parent / "accelerate"
        command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", str(processes),
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "-m", module, *args]
        return subprocess.run(command, capture_output=True, text=True, check=False,
                              env={**os.environ, "OMP_NUM_THREADS": "1",
                                   "PYTHONFAULTHANDLER": "1"})  # a crash shows every stack

    return run
