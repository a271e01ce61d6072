"""The words of the SNS notification for a run's outcome (pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

SUBJECT_MAX = 100  # SNS limit for e-mail subjects


def _cause(error: Mapping[str, Any]) -> str:
    """Step Functions puts a Lambda error's JSON ({"errorMessage", "errorType", ...}) in Cause."""
    cause = error.get("Cause", "")
    try:
        parsed = json.loads(cause)
    except (TypeError, ValueError):
        return str(cause)
    return str(parsed.get("errorMessage", cause)) if isinstance(parsed, dict) else str(cause)


def compose(outcome: str, state: Mapping[str, Any]) -> tuple[str, str]:
    """(subject, body) for outcome 'succeeded', 'rejected' or 'failed' and the execution state."""
    run = state.get("run") or {}
    what = f"{run.get('dataset', '?')} ({run.get('run_id', 'no run id')})"
    lines = [f"Image-classifier pipeline, dataset {what}: {outcome.upper()}", ""]
    gate = state.get("gate") or {}
    if outcome == "succeeded":
        deployment = state.get("deployment") or {}
        lines += [
            f"Endpoint {deployment.get('endpoint_name')} now serves model {deployment.get('model_name')} "
            f"({deployment.get('action')}).",
            f"Quality gate: {gate.get('reason')}",
            f"Autoscaling: {json.dumps(state.get('autoscaling'))}",
        ]
    elif outcome == "rejected":
        lines += [
            "The model was NOT deployed; the live endpoint is unchanged.",
            f"Quality gate: {gate.get('reason')}",
            f"Model package: {gate.get('model_package_arn')}",
        ]
    else:
        error = state.get("error") or {}
        lines += [
            f"Error: {error.get('Error', 'unknown')}",
            f"Cause: {_cause(error)}",
            f"Cleanup: {json.dumps((state.get('cleanup') or {}).get('actions', []))}",
        ]
        if state.get("cleanup_error"):
            lines.append(f"Cleanup itself failed: {_cause(state['cleanup_error'])}")
    subject = f"[imgclf] {outcome}: {run.get('dataset', 'pipeline')}"
    subject = subject.encode("ascii", "replace").decode()[:SUBJECT_MAX]
    return subject, "\n".join(lines)
