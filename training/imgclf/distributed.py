"""Data-parallel set-up from whichever launcher started us.

- torchrun (or any launcher setting RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT / LOCAL_RANK).
- SageMaker multi-instance: SM_HOSTS (JSON list) and SM_CURRENT_HOST. One process per host: rank = the
  index of the current host in SM_HOSTS, world size = number of hosts, master = the first host, port
  MASTER_PORT (default 29500). MASTER_ADDR, when set, overrides the master's host name: that is how a
  test runs two "hosts" on one machine (SM_HOSTS='["algo-1","algo-2"]', MASTER_ADDR=127.0.0.1).
- Otherwise a single process, no process group.

Backend: gloo on CPU, nccl on GPU. (The course's multi-instance job ran independent copies; this one
all-reduces gradients through DistributedDataParallel and all-reduces the metrics.)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

DEFAULT_MASTER_PORT = 29500


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


@dataclass(frozen=True)
class LaunchPlan:
    """What the environment says about the process group (pure: no side effects)."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int
    source: str  # "torchrun", "sagemaker" or "single"


def plan_from_env(env: Mapping[str, str]) -> LaunchPlan:
    port = int(env.get("MASTER_PORT", DEFAULT_MASTER_PORT))
    if "RANK" in env and "WORLD_SIZE" in env:
        return LaunchPlan(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                          int(env.get("LOCAL_WORLD_SIZE", 1)), env.get("MASTER_ADDR", "127.0.0.1"), port,
                          "torchrun")
    hosts_json = env.get("SM_HOSTS")
    current = env.get("SM_CURRENT_HOST")
    if hosts_json and current:
        hosts = json.loads(hosts_json)
        if len(hosts) > 1:
            if current not in hosts:
                raise ValueError(f"SM_CURRENT_HOST {current!r} is not in SM_HOSTS {hosts}")
            # SageMaker lists hosts in the same order on every instance; sort anyway, as its toolkit does.
            hosts = sorted(hosts)
            return LaunchPlan(hosts.index(current), len(hosts), 0, 1, env.get("MASTER_ADDR", hosts[0]), port,
                              "sagemaker")
    return LaunchPlan(0, 1, 0, 1, "127.0.0.1", port, "single")


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
