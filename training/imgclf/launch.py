"""Which launcher started this process, and so the process group it joins: read from the environment alone
(pure, no torch, so the launch rules are unit-tested without it; imgclf.distributed sets the group up).

- torchrun (or any launcher setting RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT / LOCAL_RANK).
- SageMaker multi-instance: SM_HOSTS (JSON list) and SM_CURRENT_HOST. One process per host: rank = the
  index of the current host in SM_HOSTS, world size = number of hosts, master = the first host, port
  MASTER_PORT (default 29500). MASTER_ADDR, when set, overrides the master's host name: that is how a
  test runs two "hosts" on one machine (SM_HOSTS='["algo-1","algo-2"]', MASTER_ADDR=127.0.0.1).
- Otherwise a single process, no process group.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_MASTER_PORT = 29500


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
