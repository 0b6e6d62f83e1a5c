"""Data parallelism of the card build over processes started by torchrun (torch.distributed).

Each process measures every `size`-th probe batch (`own`), and the streaming sums (Σ, G, loss)
and the per-example coupling gains are summed over processes (`all_reduce_`): every process
then holds the statistics of the whole probe set. Without torchrun (WORLD_SIZE unset or 1)
everything here is the identity.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init() -> None:
    """Join the process group torchrun describes (gloo: works on CPU), once; a no-op alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")


def rank_and_size() -> tuple[int, int]:
    """(this process's rank, number of processes); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process writes the results (rank 0)."""
    return rank_and_size()[0] == 0


def own(n_batches: int) -> list[int]:
    """Indices of the batches this process measures: every size-th one from its rank."""
    rank, size = rank_and_size()
    return list(range(rank, n_batches, size))


def all_reduce_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over the processes in place (float64 on the wire for exact-ish sums)."""
    if rank_and_size()[1] > 1:
        wire = tensor.to(torch.float64)
        dist.all_reduce(wire)
        tensor.copy_(wire)
    return tensor


def all_reduce_number(value: float) -> float:
    """A Python number summed over the processes."""
    return float(all_reduce_(torch.tensor([value], dtype=torch.float64))[0])


def barrier() -> None:
    """Wait for every process (e.g. while rank 0 measures cost alone)."""
    if rank_and_size()[1] > 1:
        dist.barrier()
