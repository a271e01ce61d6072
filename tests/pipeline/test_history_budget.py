"""A Standard execution stops, uncatchably, at 25,000 history events ("Maximum execution history size",
https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html#service-limits-state-machine-executions):
no Catch, no Cleanup, the jobs keep running. This computes the worst-case event count of one execution
from the real ASL graph, for every corner of what the template's parameters allow, and keeps it under
the limit with margin.

Events per visit of a state, by the history event types of the Step Functions API
(https://docs.aws.amazon.com/step-functions/latest/apireference/API_HistoryEvent.html, the HistoryEventType
enum of botocore's service model):
- Task whose Resource is a Lambda function ARN: TaskStateEntered; per attempt LambdaFunctionScheduled,
  LambdaFunctionStarted and one of LambdaFunctionSucceeded/Failed/TimedOut (ScheduleFailed or StartFailed
  end an attempt sooner); TaskStateExited. Attempts: 1 + every retrier's MaxAttempts (3 when omitted).
- Task calling Lambda through the service integration (arn:aws:states:::lambda:invoke, here with
  .waitForTaskToken: WaitForApproval): per attempt TaskScheduled, TaskStarted, TaskSubmitted and one of
  TaskSucceeded/Failed/TimedOut, as moto's interpreter records them too; a wait adds no event.
- Wait, Choice, Pass, Succeed: <Type>StateEntered and <Type>StateExited.
- Fail: FailStateEntered (the enum has no FailStateExited).
- The execution: ExecutionStarted and one of ExecutionSucceeded/Failed/TimedOut/Aborted.
A poll loop (a cycle in the graph) runs at most the poll cap of its DescribeJob task's kind
(mlpipeline.polling). The cost model is checked against the events moto's ASL interpreter records for
real executions.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from functools import cache
from typing import Any

import botocore.session
import pipeline_world as pw
import pytest
from mlpipeline import polling
from mlpipeline.errors import InvalidDataset
from mlpipeline.settings import Settings, build_settings
from test_requests import asl_defaults

LAMBDA_ATTEMPT_EVENTS = ("LambdaFunctionScheduled", "LambdaFunctionStarted", "LambdaFunctionSucceeded")
SERVICE_TASK_ATTEMPT_EVENTS = ("TaskScheduled", "TaskStarted", "TaskSubmitted", "TaskSucceeded")
STATE_EVENTS = {
    "Task": ("TaskStateEntered", "TaskStateExited"),
    "Wait": ("WaitStateEntered", "WaitStateExited"),
    "Choice": ("ChoiceStateEntered", "ChoiceStateExited"),
    "Pass": ("PassStateEntered", "PassStateExited"),
    "Succeed": ("SucceedStateEntered", "SucceedStateExited"),
    "Fail": ("FailStateEntered",),
}
EXECUTION_EVENTS = ("ExecutionStarted", "ExecutionFailed")
DEFAULT_MAX_ATTEMPTS = 3  # ASL: a retrier without MaxAttempts retries 3 times
MARGIN = 0.8  # the worst case must stay under 80 % of the limit


def asl(poll_seconds: int = 60) -> dict[str, Any]:
    return json.loads(pw.substitute(pw.ASL_PATH.read_text(), pw.resolve_substitutions(poll_seconds=poll_seconds)))


def is_lambda_task(state: dict[str, Any]) -> bool:
    return state["Type"] == "Task" and state["Resource"].startswith("arn:aws:lambda:")


def is_lambda_integration_task(state: dict[str, Any]) -> bool:
    return state["Type"] == "Task" and state["Resource"].startswith("arn:aws:states:::lambda:invoke")


def attempts(state: dict[str, Any]) -> int:
    return 1 + sum(r.get("MaxAttempts", DEFAULT_MAX_ATTEMPTS) for r in state.get("Retry", []))


def visit_events(state: dict[str, Any], lambda_attempts: int | None = None) -> int:
    """Events one visit emits; a Task's attempts default to its worst case (every retry used)."""
    if state["Type"] == "Task":
        integration = is_lambda_integration_task(state)
        assert integration or is_lambda_task(state), f"only Lambda tasks are modelled, not {state['Resource']}"
        tries = attempts(state) if lambda_attempts is None else lambda_attempts
        per_attempt = SERVICE_TASK_ATTEMPT_EVENTS if integration else LAMBDA_ATTEMPT_EVENTS
        return len(STATE_EVENTS["Task"]) + tries * len(per_attempt)
    assert state["Type"] in STATE_EVENTS, f"no event model for {state['Type']} states"
    return len(STATE_EVENTS[state["Type"]])


def successors(state: dict[str, Any]) -> set[str]:
    out = {state["Next"]} if "Next" in state else set()
    out |= {choice["Next"] for choice in state.get("Choices", [])}
    out |= {state["Default"]} if "Default" in state else set()
    out |= {catch["Next"] for catch in state.get("Catch", [])}
    return out


def strongly_connected_components(states: dict[str, dict[str, Any]]) -> list[frozenset[str]]:
    """Tarjan's algorithm (the graph is ~25 states; no library needed for that)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[frozenset[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for successor in successors(states[name]):
            if successor not in index:
                visit(successor)
                low[name] = min(low[name], low[successor])
            elif successor in on_stack:
                low[name] = min(low[name], index[successor])
        if low[name] == index[name]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == name:
                    break
            components.append(frozenset(component))

    for name in states:
        if name not in index:
            visit(name)
    return components


def loop_kind(states: dict[str, dict[str, Any]], component: frozenset[str]) -> str:
    """The DescribeJob kind whose poll cap bounds this cycle (every cycle must have exactly one)."""
    describes = [
        states[name]["Parameters"]["kind"]
        for name in component
        if states[name]["Type"] == "Task" and states[name]["Resource"] == pw.function_arn("DescribeJobFunction")
    ]
    assert len(describes) == 1, f"the cycle {sorted(component)} is not bounded by one DescribeJob poll cap"
    return describes[0]


def worst_case_events(definition: dict[str, Any], max_polls: dict[str, int]) -> int:
    """The most events any path through the graph can emit, each poll loop run `max_polls[kind]` times."""
    states = definition["States"]
    components = strongly_connected_components(states)
    component_of = {name: component for component in components for name in component}

    def cost(component: frozenset[str]) -> int:
        events = sum(visit_events(states[name]) for name in component)
        cyclic = len(component) > 1 or any(name in successors(states[name]) for name in component)
        return events * max_polls[loop_kind(states, component)] if cyclic else events

    @cache
    def longest_from(component: frozenset[str]) -> int:
        following = {component_of[s] for name in component for s in successors(states[name])} - {component}
        return cost(component) + max((longest_from(c) for c in following), default=0)

    return len(EXECUTION_EVENTS) + longest_from(component_of[definition["StartAt"]])


def test_the_cost_model_uses_real_history_event_types() -> None:
    enum = set(botocore.session.get_session().get_service_model("stepfunctions").shape_for("HistoryEventType").enum)
    used = {event for events in STATE_EVENTS.values() for event in events} | set(LAMBDA_ATTEMPT_EVENTS)
    used |= set(SERVICE_TASK_ATTEMPT_EVENTS) | {"TaskFailed", "TaskTimedOut"}
    assert used | set(EXECUTION_EVENTS) <= enum
    assert "FailStateExited" not in enum
    for outcome in ("LambdaFunctionFailed", "LambdaFunctionTimedOut", "ExecutionSucceeded", "ExecutionTimedOut"):
        assert outcome in enum


def _parameter_range(name: str) -> list[Any]:
    spec = pw.template()["Parameters"][name]
    if "AllowedValues" in spec:
        return list(spec["AllowedValues"])
    assert "MinValue" in spec and "MaxValue" in spec, f"{name} needs bounds for the history budget"
    return [int(spec["MinValue"]), int(spec["MaxValue"])]


@cache
def stack_settings() -> Settings:
    return build_settings(asl_defaults())


def settings_with(**values: Any) -> Settings:
    """The stack's default settings with `values` (what sizes the polling) in their place."""
    return dataclasses.replace(stack_settings(), **values)


def default_rollout() -> dict[str, Any]:
    """The settings that size the endpoint phase (mlpipeline.rollout), at the stack's defaults."""
    d = pw.parameter_defaults()
    return {"rollout_strategy": d["RolloutStrategy"], "rollout_step_type": d["RolloutStepType"],
            "rollout_step_size": int(d["RolloutStepSize"]), "rollout_wait_seconds": int(d["RolloutWaitSeconds"]),
            "endpoint_instance_count": int(d["EndpointInstanceCount"]),
            "autoscaling_min_capacity": int(d["AutoscalingMinCapacity"]),
            "autoscaling_max_capacity": int(d["AutoscalingMaxCapacity"])}


# The longest rollout: ten linear steps, each baking the most WaitIntervalInSeconds allows (its
# MaximumExecutionTimeoutInSeconds is capped at BlueGreenUpdatePolicy's 28800 s).
LONGEST_ROLLOUT = {"rollout_strategy": "LINEAR", "rollout_step_type": "INSTANCE_COUNT", "rollout_step_size": 1,
                   "rollout_wait_seconds": 3600, "endpoint_instance_count": 10, "autoscaling_min_capacity": 10,
                   "autoscaling_max_capacity": 10}


def template_corners() -> list[tuple[Settings, int]]:
    """Every corner of the parameters that size the polling: (settings, PollSeconds)."""
    corners = []
    for jobs, parallel, runtime, spot, poll, rollout in itertools.product(
        _parameter_range("MaxTuningJobs"),
        _parameter_range("MaxParallelTuningJobs"),
        _parameter_range("MaxRuntimeSeconds"),
        _parameter_range("UseSpotInstances"),
        _parameter_range("PollSeconds"),
        (default_rollout(), LONGEST_ROLLOUT),
    ):
        settings = settings_with(max_jobs=jobs, max_parallel_jobs=min(parallel, jobs), max_runtime_seconds=runtime,
                                 use_spot_instances=spot == "true", **rollout)
        corners.append((settings, poll))
    return corners


def test_worst_case_history_stays_under_the_limit_for_every_allowed_budget() -> None:
    definition = asl()
    absolute = worst_case_events(definition, polling.MAX_POLLS)  # any settings, manifest overrides too
    assert absolute <= MARGIN * polling.HISTORY_EVENT_LIMIT, absolute
    watched = 0
    for settings, poll_seconds in template_corners():
        try:
            polling.check_run_fits_one_execution(settings, poll_seconds)
        except InvalidDataset:
            continue  # StartTuning refuses it before anything starts
        watched += 1
        plans = {kind: polling.poll_plan(kind, settings, poll_seconds) for kind in polling.MAX_POLLS}
        events = worst_case_events(definition, {kind: plan.max_polls for kind, plan in plans.items()})
        assert events <= absolute
        for plan in plans.values():  # the capped polls wait at least as long as the phase may take
            assert plan.covered_seconds() >= plan.budget_seconds, plan
    assert watched > 0
    # the largest budgets themselves: the most trials, one at a time, 28 days each, on spot
    biggest = settings_with(max_jobs=100, max_parallel_jobs=1, max_runtime_seconds=2419200, use_spot_instances=True,
                            **LONGEST_ROLLOUT)
    with pytest.raises(InvalidDataset, match="lower max_runtime_seconds or max_jobs"):
        polling.check_run_fits_one_execution(biggest, 60)


def test_without_poll_caps_the_worst_case_is_unbounded() -> None:
    """The test can fail: a loop that no poll cap bounds is refused."""
    definition = asl()
    states = definition["States"]
    states["NotifySuccess"]["Next"] = "ConfigureAutoscaling"  # a cycle no DescribeJob poll cap ends
    with pytest.raises(AssertionError, match="not bounded by one DescribeJob poll cap"):
        worst_case_events(definition, polling.MAX_POLLS)


def test_default_settings_poll_at_the_stack_interval_and_back_off() -> None:
    defaults = pw.parameter_defaults()
    settings = settings_with(max_jobs=int(defaults["MaxTuningJobs"]),
                             max_parallel_jobs=int(defaults["MaxParallelTuningJobs"]),
                             max_runtime_seconds=int(defaults["MaxRuntimeSeconds"]), use_spot_instances=False,
                             **default_rollout())
    base = int(defaults["PollSeconds"])
    for kind in polling.MAX_POLLS:
        plan = polling.poll_plan(kind, settings, base)
        waits = [plan.wait_before(n) for n in range(1, plan.max_polls + 1)]
        assert waits[:3] == [0, base, 2 * base]  # the first check right away, then exponential back-off
        assert waits == sorted(waits) and max(waits) == plan.max_interval_seconds
        assert plan.max_polls <= polling.MAX_POLLS[kind] and sum(waits) >= plan.budget_seconds


def _history(world: pw.PipelineWorld, execution: dict[str, Any]) -> list[dict[str, Any]]:
    return world.sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)["events"]


def _predicted(world: pw.PipelineWorld, execution: dict[str, Any]) -> int:
    """The events the cost model predicts for the path the execution took and its Lambda invocations."""
    states = asl(poll_seconds=0)["States"]
    total = len(EXECUTION_EVENTS)
    integration_attempts = 0  # these scenarios retry no integration task: one invocation per visit
    for name in world.states_entered(execution["executionArn"]):
        state = states[name]
        total += visit_events(state, lambda_attempts=0) if state["Type"] == "Task" else visit_events(state)
        if is_lambda_integration_task(state):
            integration_attempts += 1
    lambda_attempts = len(world.invocations) - integration_attempts
    total += integration_attempts * len(SERVICE_TASK_ATTEMPT_EVENTS)
    return total + lambda_attempts * len(LAMBDA_ATTEMPT_EVENTS)


@pytest.mark.filterwarnings("ignore:Exception\\(Throttled\\):UserWarning")
@pytest.mark.parametrize("scenario", ["happy", "retried", "failed", "approval-expired"])
def test_the_cost_model_matches_the_interpreters_history(
    world: pw.PipelineWorld, monkeypatch: pytest.MonkeyPatch, scenario: str
) -> None:
    """moto's ASL interpreter (LocalStack's) records the same events per state as the model counts, for a
    run with a retried Lambda task and for one that fails into Cleanup."""
    if scenario == "retried":
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        world.sim.throttle_create_training = 1
    if scenario == "failed":
        world.sim.tuning_outcome = "Failed"
    # ApprovalMode=manual, nobody decides within 2 s: the waitForTaskToken task times out (test_approval.py)
    overrides = {"approval_mode": "manual", "approval_timeout_hours": 0.0005} if scenario == "approval-expired" else {}
    execution = world.run(pw.upload_dataset(world.s3, manifest={"version": "v1", "overrides": overrides}), scenario)
    history = _history(world, execution)
    assert len(history) == _predicted(world, execution), [event["type"] for event in history]
    if scenario == "retried":
        assert [e["type"] for e in history].count("LambdaFunctionFailed") == 1
