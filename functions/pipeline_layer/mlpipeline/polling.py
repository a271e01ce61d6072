"""How the state machine waits for the tuning job, the training job and the endpoint: the one place that
decides every poll interval and every poll cap (pure).

Why bounds at all: a Standard execution fails, uncatchably (no Catch, no Cleanup), when its history
reaches 25,000 events, and it runs at most one year ("Maximum execution history size", "Maximum
execution time": https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html#service-limits-state-machine-executions).
Every poll of a Wait -> DescribeJob -> Choice loop adds a fixed number of events, so the number of polls
per phase is capped (MAX_POLLS); tests/pipeline/test_history_budget.py counts the events per state
from the ASL graph and checks the worst case against the limit. When a phase may legitimately take long,
the interval grows instead of the number of polls: the waits back off exponentially from the stack's
PollSeconds (BACKOFF_RATE) up to an interval derived from the phase's time budget, so that the allowed
polls always cover that budget. A phase still not done after its last poll raises PollLimitExceeded, which
the ASL catches into Cleanup (which stops the job).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlpipeline import deployment_requests, rollout, training_requests
from mlpipeline.errors import InvalidDataset, PollLimitExceeded
from mlpipeline.settings import Settings

HISTORY_EVENT_LIMIT = 25_000
MAX_EXECUTION_SECONDS = 365 * 24 * 3600
# The most DescribeJob polls one phase may use (the history budget; the test derives the events).
MAX_POLLS: dict[str, int] = {"tuning": 400, "training": 200, "extraction": 40, "endpoint": 60}
BACKOFF_RATE = 2
# Time a job takes besides MaxRuntimeInSeconds: provisioning, image pull, data download, model upload.
# (AWS: MaxRuntimeInSeconds is at most 28 days, the whole job at most 30 days including publishing metrics
# and uploading after it stopped; https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_StoppingCondition.html.)
JOB_OVERHEAD_SECONDS = 3600
# Room in the execution's year for everything that is not polling (tasks, their retries, notifications).
NON_POLLING_SECONDS = 24 * 3600


def job_time_limit_seconds(settings: Settings) -> int:
    """How long SageMaker lets one training job (or tuning trial) run: MaxWaitTimeInSeconds with spot."""
    factor = training_requests.SPOT_WAIT_FACTOR if settings.use_spot_instances else 1
    return factor * settings.max_runtime_seconds


def budget_seconds(kind: str, settings: Settings) -> int:
    """How long a phase may legitimately take.

    Tuning: the tuner keeps up to MaxParallelTrainingJobs trials in flight, so its trials run in
    ceil(max_jobs / max_parallel_jobs) waves, each at most one job's time limit.
    """
    job = job_time_limit_seconds(settings) + JOB_OVERHEAD_SECONDS
    if kind == "tuning":
        return math.ceil(settings.max_jobs / settings.max_parallel_jobs) * job + JOB_OVERHEAD_SECONDS
    if kind in ("training", "extraction"):  # the feature extraction is one training job
        return job
    if kind == "endpoint":
        # A blue/green deployment ends within MaximumExecutionTimeoutInSeconds (the rollout's steps and
        # baking periods), then may roll back as long again; CreateEndpoint has no documented bound, and
        # the same covers its provisioning and health checks.
        return 2 * rollout.max_execution_timeout_seconds(settings) + deployment_requests.TERMINATION_WAIT_SECONDS
    raise ValueError(f"unknown kind {kind!r}: expected one of {sorted(MAX_POLLS)}")


@dataclass(frozen=True)
class PollPlan:
    """The waits before polls 1..max_polls: 0 before the first (right after the job started), then
    base * BACKOFF_RATE**k capped at max_interval."""

    kind: str
    base_seconds: int
    max_interval_seconds: int
    max_polls: int
    budget_seconds: int

    def wait_before(self, poll: int) -> int:
        """Seconds to wait before poll number `poll` (1-based)."""
        return _wait(poll, self.base_seconds, self.max_interval_seconds)

    def covered_seconds(self, polls: int | None = None) -> int:
        """How long `polls` polls (default: all of them) wait in total."""
        return _covered(self.max_polls if polls is None else polls, self.base_seconds, self.max_interval_seconds)


def _wait(poll: int, base: int, cap: int) -> int:
    if poll <= 1 or base == 0:
        return 0
    exponent = poll - 2
    # base * rate**exponent without building huge integers once it is past the cap anyway
    if exponent >= math.log(max(cap, 1) / base, BACKOFF_RATE) + 1:
        return cap
    return min(base * BACKOFF_RATE**exponent, cap)


def _covered(polls: int, base: int, cap: int) -> int:
    return sum(_wait(poll, base, cap) for poll in range(1, polls + 1))


def poll_plan(kind: str, settings: Settings, base_seconds: int) -> PollPlan:
    """The smallest interval cap (>= the base) whose MAX_POLLS polls cover the phase's budget, and the
    fewest polls that do. With a base of 0 s (the offline test world) every wait is 0 and the cap is
    MAX_POLLS."""
    if base_seconds < 0:
        raise ValueError(f"poll interval must be >= 0 s, got {base_seconds}")
    budget = budget_seconds(kind, settings)
    limit = MAX_POLLS[kind]
    if base_seconds == 0:
        return PollPlan(kind, 0, 0, limit, budget)
    low, high = base_seconds, max(base_seconds, budget)
    while low < high:  # _covered(limit, base, cap) grows with cap: bisect for the smallest that suffices
        middle = (low + high) // 2
        if _covered(limit, base_seconds, middle) >= budget:
            high = middle
        else:
            low = middle + 1
    covered, polls = 0, 0
    while covered < budget:  # ends by poll `limit` at the latest: the cap was chosen so
        polls += 1
        covered += _wait(polls, base_seconds, low)
    return PollPlan(kind, base_seconds, low, polls, budget)


def check_run_fits_one_execution(settings: Settings, base_seconds: int) -> None:
    """Raise InvalidDataset (before anything is started) when the phases' budgets cannot all be watched
    within one execution's year: the execution would time out, uncatchably, with jobs still running."""
    if base_seconds == 0:
        return
    plans = [poll_plan(kind, settings, base_seconds) for kind in MAX_POLLS]
    total = sum(plan.covered_seconds() for plan in plans) + NON_POLLING_SECONDS
    if total > MAX_EXECUTION_SECONDS:
        days = {plan.kind: round(plan.budget_seconds / 86400, 1) for plan in plans}
        raise InvalidDataset(
            f"this run may take {total / 86400:.0f} days (tuning, training, endpoint: {days} days), more than "
            f"a Step Functions execution's {MAX_EXECUTION_SECONDS // 86400} days: lower max_runtime_seconds "
            "or max_jobs, raise max_parallel_jobs, or turn use_spot_instances off"
        )


def next_poll(
    kind: str,
    name: str,
    progress: Mapping[str, Any],
    poll: Mapping[str, Any],
    settings: Settings,
    base_seconds: int,
) -> dict[str, int]:
    """The poll state after one more status check: {"attempt": polls so far, "wait_seconds": the wait
    before the next (0 once done)}. Raises PollLimitExceeded when the check found `progress` not done and
    it was the phase's last poll."""
    attempt = int(poll["attempt"]) + 1
    if progress["done"]:
        return {"attempt": attempt, "wait_seconds": 0}
    plan = poll_plan(kind, settings, base_seconds)
    if attempt >= plan.max_polls:
        raise PollLimitExceeded(
            f"{kind} {name} is still {progress.get('status')} after {attempt} status checks over "
            f"{plan.covered_seconds(attempt)} s; its budget is {plan.budget_seconds} s "
            "(mlpipeline.polling.budget_seconds)"
        )
    return {"attempt": attempt, "wait_seconds": plan.wait_before(attempt + 1)}
