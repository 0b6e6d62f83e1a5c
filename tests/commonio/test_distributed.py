"""`end_process_group`: a command leaves its process group (so no process aborts at exit)."""

from __future__ import annotations

import subprocess
import sys

import torch.distributed as dist

from commonio.distributed import end_process_group


def test_it_destroys_an_initialised_group_and_is_a_no_op_without_one(tmp_path) -> None:
    end_process_group(wait=True)  # no group: nothing to do
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    assert dist.is_initialized()
    end_process_group(wait=True)
    assert not dist.is_initialized()
    end_process_group(wait=False)  # twice is harmless


def test_it_never_loads_torch_itself() -> None:
    code = ("import sys; from commonio.distributed import end_process_group; "
            "end_process_group(wait=True); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
