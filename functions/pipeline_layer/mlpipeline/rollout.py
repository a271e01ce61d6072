"""How an update shifts traffic to the new fleet: SageMaker deployment guardrails' blue/green
TrafficRoutingConfig (ALL_AT_ONCE, CANARY, LINEAR), and the combinations AWS refuses, checked before any
money is spent (by the settings, at Validate) and again against the live fleet (by Deploy).

AWS's rules, from the API reference:
- TrafficRoutingConfig (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_TrafficRoutingConfig.html):
  Type ALL_AT_ONCE | CANARY | LINEAR; WaitIntervalInSeconds 0..3600 (the wait between steps, the baking
  period); CanarySize "must be less than or equal to 50% of the variant's total instance count";
  LinearStepSize "must be 10-50% of the variant's total instance count".
- CapacitySize (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CapacitySize.html):
  Type INSTANCE_COUNT | CAPACITY_PERCENT, Value >= 1.
- BlueGreenUpdatePolicy (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_BlueGreenUpdatePolicy.html):
  MaximumExecutionTimeoutInSeconds 600..28800, TerminationWaitInSeconds 0..3600.
Every step (a canary, each linear step, the all-at-once shift) is followed by a baking period in which
the auto-rollback alarms watch the new fleet; an alarm in any of them rolls all traffic back to the old
fleet (https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-blue-green-canary.html,
https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-blue-green-linear.html).

Our own rule on top (AWS leaves the rounding of a percentage unstated): a canary or linear step must be
at least one whole instance, so that the step is a real fraction of the fleet and not the whole of it
or nothing.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # settings imports this module: only its type here
    from mlpipeline.settings import Settings

STRATEGIES = ("ALL_AT_ONCE", "CANARY", "LINEAR")
STEP_TYPES = ("INSTANCE_COUNT", "CAPACITY_PERCENT")
MAX_WAIT_INTERVAL_SECONDS = 3600
MIN_EXECUTION_TIMEOUT_SECONDS = 600
MAX_EXECUTION_TIMEOUT_SECONDS = 28800
# Our floor for MaximumExecutionTimeoutInSeconds (what every update had before strategies existed).
DEFAULT_EXECUTION_TIMEOUT_SECONDS = 3600
# Time an update takes besides its baking periods: provisioning the new fleet, pulling the image,
# loading the model, health checks.
PROVISIONING_SECONDS = 1800


def step_instances(step_type: str, step_size: int, fleet: int) -> int:
    """Whole instances one step turns on (a percentage rounds down: our rule, see the module doc)."""
    if step_type == "INSTANCE_COUNT":
        return step_size
    return math.floor(step_size * fleet / 100)


def shift_steps(strategy: str, step_type: str, step_size: int, fleet: int) -> int:
    """How many traffic-shift steps (each followed by a baking period) an update of `fleet` instances has."""
    if strategy == "ALL_AT_ONCE":
        return 1
    if strategy == "CANARY":
        return 2
    return math.ceil(fleet / max(1, step_instances(step_type, step_size, fleet)))


def problems(strategy: str, step_type: str, step_size: int, wait_seconds: int, fleet: int) -> list[str]:
    """What AWS (or our whole-instance rule) refuses about this rollout for a variant of `fleet` instances."""
    found = []
    if strategy not in STRATEGIES:
        return [f"rollout_strategy must be one of {list(STRATEGIES)}, got {strategy!r}"]
    if not 0 <= wait_seconds <= MAX_WAIT_INTERVAL_SECONDS:
        found.append(
            f"rollout_wait_seconds (WaitIntervalInSeconds) must be in 0..{MAX_WAIT_INTERVAL_SECONDS}, "
            f"got {wait_seconds}"
        )
    if strategy == "ALL_AT_ONCE":
        return found
    if step_type not in STEP_TYPES:
        return [*found, f"rollout_step_type must be one of {list(STEP_TYPES)}, got {step_type!r}"]
    if step_size < 1:
        return [*found, f"rollout_step_size must be >= 1 (CapacitySize.Value), got {step_size}"]
    unit = "%" if step_type == "CAPACITY_PERCENT" else " instance(s)"
    percent = step_size if step_type == "CAPACITY_PERCENT" else 100 * step_size / fleet
    low = 10 if strategy == "LINEAR" else 0
    if not low <= percent <= 50:
        rule = "10-50%" if strategy == "LINEAR" else "at most 50%"
        found.append(
            f"a {strategy} step of {step_size}{unit} is {percent:.0f}% of the {fleet}-instance fleet; AWS "
            f"requires {rule} of the variant's instance count"
        )
    elif step_instances(step_type, step_size, fleet) < 1:
        found.append(
            f"a {strategy} step of {step_size}% of a {fleet}-instance fleet is less than one instance: "
            "raise rollout_step_size or the instance count"
        )
    if not found:
        timeout = execution_timeout_seconds(strategy, step_type, step_size, wait_seconds, fleet)
        if timeout > MAX_EXECUTION_TIMEOUT_SECONDS:
            steps = shift_steps(strategy, step_type, step_size, fleet)
            found.append(
                f"{steps} steps of {wait_seconds} s baking need {timeout} s, more than the "
                f"{MAX_EXECUTION_TIMEOUT_SECONDS} s MaximumExecutionTimeoutInSeconds allows: larger steps "
                "or a shorter rollout_wait_seconds"
            )
    return found


def execution_timeout_seconds(strategy: str, step_type: str, step_size: int, wait_seconds: int, fleet: int) -> int:
    """MaximumExecutionTimeoutInSeconds for this rollout: provisioning plus every baking period, at least
    our default; may exceed AWS's maximum (problems() reports that)."""
    baking = shift_steps(strategy, step_type, step_size, fleet) * wait_seconds
    return max(DEFAULT_EXECUTION_TIMEOUT_SECONDS, MIN_EXECUTION_TIMEOUT_SECONDS, PROVISIONING_SECONDS + baking)


def fleet_sizes(settings: Settings) -> list[int]:
    """The fleet sizes an update may meet: the configured count, and the smallest and largest autoscaling
    may scale the live variant to (RetainAllVariantProperties keeps the live count). A step's share of the
    fleet only falls as the fleet grows, and its whole instances only fall as it shrinks, so these bound
    every count in between."""
    return sorted(
        {
            settings.endpoint_instance_count,
            settings.autoscaling_min_capacity,
            settings.autoscaling_max_capacity,
        }
    )


def settings_problems(settings: Settings) -> list[str]:
    """problems() for every fleet size the settings allow, reported once each."""
    found: list[str] = []
    for fleet in fleet_sizes(settings):
        for problem in fleet_problems(settings, fleet):
            if problem not in found:
                found.append(problem)
    return found


def fleet_problems(settings: Settings, fleet: int) -> list[str]:
    """problems() of the settings' rollout on a fleet of `fleet` instances."""
    return problems(*_args(settings), fleet)


def _args(settings: Settings) -> tuple[str, str, int, int]:
    return (
        settings.rollout_strategy,
        settings.rollout_step_type,
        settings.rollout_step_size,
        settings.rollout_wait_seconds,
    )


def max_execution_timeout_seconds(settings: Settings) -> int:
    """The longest MaximumExecutionTimeoutInSeconds the settings' fleets can need (for the poll budget):
    a linear rollout has most steps on the largest fleet autoscaling allows."""
    return min(
        MAX_EXECUTION_TIMEOUT_SECONDS,
        max(execution_timeout_seconds(*_args(settings), fleet) for fleet in fleet_sizes(settings)),
    )


def traffic_routing(settings: Settings, fleet: int) -> dict[str, Any]:
    """TrafficRoutingConfiguration for an update of `fleet` instances (checked: raises ValueError)."""
    strategy, step_type, step_size, wait_seconds = _args(settings)
    found = fleet_problems(settings, fleet)
    if found:
        raise ValueError("; ".join(found))
    routing: dict[str, Any] = {"Type": strategy, "WaitIntervalInSeconds": wait_seconds}
    size = {"Type": step_type, "Value": step_size}
    if strategy == "CANARY":
        routing["CanarySize"] = size
    elif strategy == "LINEAR":
        routing["LinearStepSize"] = size
    return routing
