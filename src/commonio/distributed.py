"""The end of a multi-process command (torchrun / ``accelerate launch``): leave the process
group, then the process, without interpreter finalization.

A process whose gloo threads are alive at interpreter finalization can abort
("terminate called without an active exception", SIGABRT: a thread that asks for the GIL
then is unwound by the finalizing interpreter). `destroy_process_group` does not stop them
once DistributedDataParallel has used the group (measured with torch 2.13: the
``gloo_tcp_loop`` and ``pt_gloo_runloop`` threads outlive it even after the model is
collected), and in CI the rank that finished first aborted so, failing a complete run. So a
process that had a group ends with ``os._exit`` after flushing what it printed and logged.
"""

from __future__ import annotations

import logging
import os
import sys


def end_process_group(*, wait: bool) -> bool:
    """Destroy this process's process group, if it has one; first wait for every process when
    `wait` (a successful command: the main process may still be writing). Imports nothing: a
    command that never loaded torch.distributed has no group. True when there was one."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not (dist.is_available() and dist.is_initialized()):
        return False
    if wait:
        dist.barrier()
    dist.destroy_process_group()
    return True


def end_command(status: int) -> int:
    """A CLI's last step: `status` back to the caller when there is no process group; with one,
    leave it (`end_process_group`) and exit the process with `status` at once."""
    if not end_process_group(wait=status == 0):
        return status
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
