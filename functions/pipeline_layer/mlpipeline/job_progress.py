"""Job progress: pure functions of the Describe* answers (tuning job, training job, endpoint) that say
whether a phase is done, still running, or failed (DescribeJobFunction answers with them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlpipeline.errors import EndpointDeploymentFailed, SageMakerJobFailed


def _status_of(description: Mapping[str, Any], kind: str, key: str) -> tuple[str, str]:
    """(status, name) of a tuning or training job; SageMakerJobFailed when it failed or was stopped."""
    status, name = description[f"{key}Status"], description[f"{key}Name"]
    if status in ("Failed", "Stopped"):
        reason = description.get("FailureReason") or "no reason given"
        raise SageMakerJobFailed(f"{kind} job {name} {status.lower()}: {reason}")
    return status, name


def tuning_progress(description: Mapping[str, Any]) -> dict[str, Any]:
    """{"done", "status", "best_training_job"}; raises SageMakerJobFailed for Failed/Stopped, no best job."""
    status, name = _status_of(description, "tuning", "HyperParameterTuningJob")
    if status != "Completed":
        return {"done": False, "status": status}
    best = description.get("BestTrainingJob")
    if not best or best.get("TrainingJobStatus") != "Completed":
        counters = description.get("TrainingJobStatusCounters", {})
        raise SageMakerJobFailed(
            f"tuning job {name} completed without a successful training job ({counters})"
        )
    return {
        "done": True,
        "status": status,
        "best_training_job": {
            "TrainingJobName": best["TrainingJobName"],
            "TunedHyperParameters": dict(best.get("TunedHyperParameters", {})),
            "FinalObjectiveValue": (best.get("FinalHyperParameterTuningJobObjectiveMetric") or {}).get(
                "Value"
            ),
        },
    }


def training_progress(description: Mapping[str, Any]) -> dict[str, Any]:
    """{"done", "status", "secondary_status", "rule_issues"}; raises SageMakerJobFailed for Failed/Stopped."""
    status, _name = _status_of(description, "training", "TrainingJob")
    issues = [
        r["RuleConfigurationName"]
        for r in description.get("DebugRuleEvaluationStatuses", [])
        + description.get("ProfilerRuleEvaluationStatuses", [])
        if r.get("RuleEvaluationStatus") == "IssuesFound"
    ]
    return {
        "done": status == "Completed",
        "status": status,
        "secondary_status": description.get("SecondaryStatus"),
        "rule_issues": issues,
    }


# DescribeEndpoint's EndpointStatus values
# (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DescribeEndpoint.html#sagemaker-DescribeEndpoint-response-EndpointStatus).
# These end a deployment: Failed (DeleteEndpoint is the only operation left), OutOfService (not available
# to take requests), UpdateRollbackFailed (both the deployment and its rollback failed: the endpoint serves
# a mix of the old and new configs until an operator remedies it) and Deleting. Creating, Updating,
# SystemUpdating and RollingBack pass by themselves; only InService is ready.
ENDPOINT_TERMINAL_STATUSES = {
    "Failed": "failed",
    "OutOfService": "is out of service (not available to take requests)",
    "UpdateRollbackFailed": (
        "is UpdateRollbackFailed: both the deployment and its automatic rollback failed, and it serves a mix "
        "of the old and new endpoint configs until an operator restores it (see Rolling Deployments)"
    ),
    "Deleting": "is being deleted",
}


def configs_in_use(endpoint: Mapping[str, Any] | None) -> set[str]:
    """The endpoint configs an endpoint serves or is deploying. While an update is in progress,
    EndpointConfigName still names the old config and the new one is PendingDeploymentSummary's
    (returned "only when the endpoint is creating or updating with a new endpoint configuration":
    https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DescribeEndpoint.html)."""
    if endpoint is None:
        return set()
    pending = endpoint.get("PendingDeploymentSummary") or {}
    return {name for name in (endpoint.get("EndpointConfigName"), pending.get("EndpointConfigName")) if name}


def terminal_reason(description: Mapping[str, Any]) -> str:
    status = description["EndpointStatus"]
    reason = description.get("FailureReason") or "no reason given"
    return f"endpoint {description['EndpointName']} {ENDPOINT_TERMINAL_STATUSES[status]}: {reason}"


def endpoint_progress(description: Mapping[str, Any], expected_config: str) -> dict[str, Any]:
    """Done when InService with `expected_config`; raises EndpointDeploymentFailed when the endpoint reached
    a terminal status or a blue/green update rolled back."""
    status = description["EndpointStatus"]
    name = description["EndpointName"]
    if status in ENDPOINT_TERMINAL_STATUSES:
        raise EndpointDeploymentFailed(terminal_reason(description))
    if status == "InService" and description.get("EndpointConfigName") != expected_config:
        # UpdateEndpoint switches the status to Updating synchronously, so InService on the old config
        # after our update means the blue/green deployment rolled back (an alarm fired or it failed).
        reason = description.get("FailureReason") or "an endpoint alarm fired during the baking period"
        raise EndpointDeploymentFailed(
            f"endpoint {name} rolled back to {description.get('EndpointConfigName')}: {reason}"
        )
    return {
        "done": status == "InService",
        "status": status,
        "pending_config": (description.get("PendingDeploymentSummary") or {}).get("EndpointConfigName"),
    }


def unknown_progress(reason: str) -> dict[str, Any]:
    """A status check AWS throttled or failed transiently: not done as far as we know, poll again (it
    counts against the phase's poll cap, so a lasting outage still ends in Cleanup)."""
    return {"done": False, "status": f"unknown ({reason})"}
