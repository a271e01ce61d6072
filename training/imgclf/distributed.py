"""Data-parallel set-up from whichever launcher started us (imgclf.launch reads which one from the
environment): one process group, gradients all-reduced through DistributedDataParallel and the metrics
all-reduced. Backend: gloo on CPU, nccl on GPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from imgclf.launch import plan_from_env

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(env: Mapping[str, str] | None = None, timeout_s: float = 1800) -> DistContext:
    """Join the process group the environment describes (no-op for a single process)."""
    env = os.environ if env is None else env
    plan = plan_from_env(env)
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(plan.local_rank % torch.cuda.device_count())
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    if plan.world_size <= 1:
        return DistContext(device=device)
    backend = "nccl" if use_cuda else "gloo"
    os.environ["MASTER_ADDR"] = plan.master_addr
    os.environ["MASTER_PORT"] = str(plan.master_port)
    logger.info("joining process group: %s rank %d/%d, master %s:%d, backend %s", plan.source, plan.rank,
                plan.world_size, plan.master_addr, plan.master_port, backend)
    dist.init_process_group(backend, init_method="env://", rank=plan.rank, world_size=plan.world_size,
                            timeout=timedelta(seconds=timeout_s))
    return DistContext(plan.rank, plan.world_size, plan.local_rank, plan.local_world_size, backend, device)


def cleanup(ctx: DistContext) -> None:
    if ctx.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a tensor over all processes (in place on a copy; float64 sums stay exact for counts)."""
    if not ctx.is_distributed:
        return values
    reduced = values.detach().clone().to(ctx.device)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.cpu()


def broadcast_flag(flag: bool, ctx: DistContext) -> bool:
    """Rank 0's decision, on every rank."""
    if not ctx.is_distributed:
        return flag
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int64, device=ctx.device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def barrier(ctx: DistContext) -> None:
    if ctx.is_distributed:
        dist.barrier()
