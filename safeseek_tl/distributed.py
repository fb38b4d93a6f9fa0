"""Data parallelism over ``torch.distributed`` (launched with ``torchrun``): exact, not approximate.

Every process (rank) holds all records and draws the same batch order, so a global batch is the
same everywhere; each rank runs the model on its shard of it (:meth:`~safeseek_tl.distributed.DataParallel.shard`). A
token-mean loss over the global batch is the sum of each rank's token sum divided by the *global*
token count, which every rank can count from the labels it holds; :meth:`~safeseek_tl.distributed.DataParallel.globalize`
then gives every rank the global value of a term while its gradient stays the rank's own share,
so nonlinear functions of a mean (SafeSeek's bounded negative cross-entropy) are exact too. The
mask gradients are summed over ranks (:meth:`~safeseek_tl.distributed.DataParallel.all_reduce_gradients`) before clipping
and the optimizer step, which therefore move the masks identically on every rank.

Without an initialized process group everything here is the identity (one rank).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from jaxtyping import Int
from torch import Tensor

from safeseek_tl.errors import InputError


@dataclass(frozen=True)
class DataParallel:
    """This process's place in the data-parallel group: ``rank`` of ``world_size``."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> DataParallel:
        """The group of the initialized default process group, or a single rank without one."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files and shows progress."""
        return self.rank == 0

    def shard(self, index: Int[Tensor, " n"]) -> Int[Tensor, " n_local"]:
        """This rank's contiguous part of a global batch (sizes differ by at most one; may be empty)."""
        return torch.tensor_split(index, self.world_size)[self.rank]

    def globalize(self, local: Tensor) -> Tensor:
        """``local + (sum over ranks of local - local)``: the global value, with the local gradient.

        ``local`` must be this rank's additive share of the global value (e.g. its token sum
        divided by the global token count). Every rank must call this, in the same order.
        """
        if self.world_size == 1:
            return local
        total = local.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return local + (total - local.detach())

    def all_reduce_gradients(self, parameters: Iterable[Tensor]) -> None:
        """Sum the gradients of ``parameters`` over ranks, in place (a missing gradient counts as 0)."""
        if self.world_size == 1:
            return
        for param in parameters:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)


def init_from_environment(device: str = "cpu") -> tuple[DataParallel, str]:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Returns the group and the device this rank should use: under ``torchrun`` with a CUDA
    ``device`` (``"cuda"``), each rank takes the GPU of its ``LOCAL_RANK``; the backend is NCCL on
    CUDA and gloo on CPU. Without ``WORLD_SIZE`` > 1 in the environment nothing is initialized.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1 or not dist.is_available():
        return DataParallel.current(), device
    cuda = torch.device(device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise InputError(f"device {device!r}: no CUDA GPU is available to torch here; use cpu (the gloo backend)")
    if cuda and torch.device(device).index is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DataParallel.current(), device
