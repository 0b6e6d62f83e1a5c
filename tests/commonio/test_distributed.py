"""`end_process_group` and `end_command`: a command leaves its process group, and a process
that had one exits without interpreter finalization (where gloo's threads can abort it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch.distributed as dist

from commonio.distributed import end_command, end_process_group


def test_it_destroys_an_initialised_group_and_is_a_no_op_without_one(tmp_path) -> None:
    end_process_group(wait=True)  # no group: nothing to do
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    assert dist.is_initialized()
    assert end_process_group(wait=True)
    assert not dist.is_initialized()
    assert not end_process_group(wait=False)  # twice is harmless
    assert end_command(3) == 3  # no group: the status goes back to the caller


# Two ranks that train a DDP model one step, then end as the CLIs do. The atexit line would be
# printed only by a finalizing interpreter; a worker with status 0 must not print it.
WORKER = '''
import atexit, sys, torch, torch.distributed as dist
from commonio.distributed import end_command
dist.init_process_group("gloo")
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 1))
model(torch.ones(4, 2)).sum().backward()
atexit.register(print, "finalized")
print(f"rank {dist.get_rank()} trained", end="")  # unflushed: end_command flushes it
sys.exit(end_command(0))
'''


def test_a_process_with_a_group_exits_at_once_with_its_output_flushed(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", str(script)],
                          capture_output=True, text=True, check=False, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rank 0 trained" in proc.stdout and "rank 1 trained" in proc.stdout
    assert "finalized" not in proc.stdout


def test_it_never_loads_torch_itself() -> None:
    code = ("import sys; from commonio.distributed import end_process_group; "
            "end_process_group(wait=True); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
