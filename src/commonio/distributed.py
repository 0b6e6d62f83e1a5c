"""The end of a multi-process run (torchrun / ``accelerate launch``): leave the process group.

A process that exits with its gloo process group still alive can abort at interpreter exit
("terminate called without an active exception", SIGABRT): gloo's worker threads are torn
down during interpreter finalization (pytorch/pytorch#190489). It happened in CI to the rank
that finished first while rank 0 still wrote, so both CLIs end the group explicitly, after
a barrier, as torch.distributed asks.
"""

from __future__ import annotations

import sys


def end_process_group(*, wait: bool) -> None:
    """Destroy this process's process group, if it has one; first wait for every process when
    `wait` (a successful command: the main process may still be writing). Imports nothing: a
    command that never loaded torch.distributed has no group."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not (dist.is_available() and dist.is_initialized()):
        return
    if wait:
        dist.barrier()
    dist.destroy_process_group()
