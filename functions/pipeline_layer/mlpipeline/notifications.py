"""The words of the SNS notification for a run's outcome (pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mlpipeline import approval

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
    """(subject, body) for outcome 'succeeded', 'rejected', 'failed' or 'approval_requested' (ApprovalMode=manual:
    the model waits for a person) and the execution state."""
    run = state.get("run") or {}
    what = f"dataset {run.get('dataset', '?')} ({run.get('run_id', 'no run id')})"
    package = _redeployed_package(state)
    if package:
        what = f"redeploy of model package {package}, {what}" if run else f"redeploy of model package {package}"
    lines = [f"Image-classifier pipeline, {what}: {outcome.upper()}", ""]
    gate = state.get("gate") or {}
    if outcome == "succeeded":
        deployment = state.get("deployment") or {}
        lines += [
            f"Endpoint {deployment.get('endpoint_name')} now serves model {deployment.get('model_name')} "
            f"({deployment.get('action')}).",
            f"Redeployed by hand, no quality gate: {gate.get('reason')}" if package
            else f"Quality gate: {gate.get('reason')}",
            f"Autoscaling: {json.dumps(state.get('autoscaling'))}",
        ]
    elif outcome == "rejected":
        lines += [
            "The model was NOT deployed; the live endpoint is unchanged.",
            f"Quality gate: {gate.get('reason')}",
            f"Model package: {gate.get('model_package_arn')}",
        ]
        if state.get("approval"):
            lines.append(f"Manual approval: {state['approval'].get('reason')}")
    elif outcome == "approval_requested":
        lines += _approval_request_lines(run, gate)
    else:
        error = state.get("error") or {}
        lines += [
            f"Error: {error.get('Error', 'unknown')}",
            f"Cause: {_cause(error)}",
            f"Cleanup: {json.dumps((state.get('cleanup') or {}).get('actions', []))}",
        ]
        if state.get("cleanup_error"):
            lines.append(f"Cleanup itself failed: {_cause(state['cleanup_error'])}")
    lines += _report_lines(state)
    subject = f"[imgclf] {outcome}: {'redeploy ' if package else ''}{run.get('dataset', 'pipeline')}"
    subject = subject.encode("ascii", "replace").decode()[:SUBJECT_MAX]
    return subject, "\n".join(lines)


def _redeployed_package(state: Mapping[str, Any]) -> str | None:
    """The model package a redeploy by hand names (mlpipeline.redeploy): from its run once accepted, else
    from the execution's input, so a refused one says what was asked."""
    run = state.get("run") or {}
    if isinstance(run.get("redeploy"), Mapping):
        return str(run["redeploy"].get("model_package_arn"))
    asked = (state.get("event") or {}).get("redeploy")
    if asked is None:
        return None
    arn = asked.get("model_package_arn") if isinstance(asked, Mapping) else None
    return str(arn) if isinstance(arn, str) else json.dumps(asked, default=str)[:200]


def _approval_request_lines(run: Mapping[str, Any], gate: Mapping[str, Any]) -> list[str]:
    arn = str(gate.get("model_package_arn"))
    commands = approval.cli_commands(arn, str(run.get("region")))
    hours = float((run.get("settings") or {}).get("approval_timeout_hours", 0))
    return [
        "The model passed the quality gate and waits for your decision (ApprovalMode=manual).",
        "Nothing is deployed until you approve it; the live endpoint is unchanged.",
        f"Quality gate: {gate.get('reason')}",
        f"Model package: {arn}",
        "",
        "To approve it (the pipeline then deploys it):",
        f"  {commands[approval.APPROVED]}",
        "To reject it (it is never deployed):",
        f"  {commands[approval.REJECTED]}",
        "or in SageMaker Studio: Models > Model registry > this version > Update status.",
        "",
        f"Without a decision within {hours:g} h of this message, the model is rejected.",
    ]


def _report_lines(state: Mapping[str, Any]) -> list[str]:
    """The run report's link and the cost (ReportFunction's answer), or why there is none."""
    report = state.get("report") or {}
    if not report:
        error = state.get("report_error")
        return ["", f"No run report: {_cause(error)}"] if error else []
    lines = ["", report.get("cost_line") or "Run cost: unknown"]
    if report.get("endpoint_monthly_usd") is not None:
        lines.append(f"The live endpoint costs ${report['endpoint_monthly_usd']:.2f} a month at its current size.")
    lines += [f"Prices: {report.get('price_source')}",
              f"Run report: {report.get('report_url')}",
              "(the link is signed by the pipeline's role: it works until that role's session ends, at most",
              f" 7 days; later, `aws s3 presign {report.get('report_s3_uri')} --expires-in 604800`)"]
    return lines
