"""ApprovalMode: who approves a model that passed the quality gate.

- `auto`: the gate does; the model package is registered Approved and deployed.
- `manual`: the package is registered PendingManualApproval and the state machine's WaitForApproval task
  waits, with a task token and without polling, until a person sets the package's approval status in the
  model registry (console, or `aws sagemaker update-model-package`). SageMaker then emits a "SageMaker Model
  Package State Change" event (https://docs.aws.amazon.com/sagemaker/latest/dg/automating-sagemaker-with-eventbridge.html#eventbridge-model-package);
  the template's ApprovalDecided rule, on this stack's model package group and the statuses Approved and
  Rejected, hands it to ApprovalFunction, which resumes the wait with SendTaskSuccess. A wait that outlives
  ApprovalTimeoutHours ends with States.Timeout; the package is then marked Rejected (expired) and the run
  ends as rejected. A rejected model is never deployed.

Where the token waits: an S3 object in the data bucket keyed by the package's ARN. A task token is up to
2048 characters (SendTaskSuccess's taskToken in botocore's service model: max 2048), more than a model package tag
(256) or a CustomerMetadataProperties value (256) may hold, so neither can carry it; the event names the
package ARN, so the object is found with one GetObject, no listing and no polling.

A decision made before the token was stored (the package is visible in the registry from the gate on)
finds no token; so the waiting task, right after storing it, reads the package's status once and resumes
itself when it is already decided: either way exactly one of the two finds the other.

Both decisions resume the task with SendTaskSuccess (a rejection is a person's answer, not a task failure),
and the state machine's Approved? choice sends a rejection to the rejected path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # settings imports this module: only its type here
    from mlpipeline.settings import Settings

AUTO = "auto"
MANUAL = "manual"
MODES = (AUTO, MANUAL)

# ModelApprovalStatus (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateModelPackage.html).
APPROVED = "Approved"
REJECTED = "Rejected"
PENDING = "PendingManualApproval"
DECISIONS = (APPROVED, REJECTED)

# The event SageMaker sends when a model package's status changes (automating-sagemaker-with-eventbridge.html).
EVENT_SOURCE = "aws.sagemaker"
EVENT_DETAIL_TYPE = "SageMaker Model Package State Change"

# A Standard workflow runs at most one year (https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html:
# "Maximum execution time: 1 year"), so a longer wait could never end in a decision.
MAX_TIMEOUT_HOURS = 365 * 24
TOKEN_PREFIX = "approvals/"
# ApprovalDescription: "Maximum length of 1024" (API_UpdateModelPackage.html).
DESCRIPTION_MAX = 1024


def registered_status(passed: bool, mode: str) -> str:
    """The ModelApprovalStatus the gate registers: Rejected when it failed, else the mode's."""
    if not passed:
        return REJECTED
    return PENDING if mode == MANUAL else APPROVED


def settings_problems(settings: Settings) -> list[str]:
    problems = []
    if settings.approval_mode not in MODES:
        problems.append(f"approval_mode must be one of {list(MODES)}, got {settings.approval_mode!r}")
    hours = settings.approval_timeout_hours
    if not 0 < hours <= MAX_TIMEOUT_HOURS:
        problems.append(
            f"approval_timeout_hours must be > 0 and <= {MAX_TIMEOUT_HOURS} (a Standard workflow's one-year "
            f"limit), got {hours}"
        )
    return problems


def timeout_seconds(hours: float) -> int:
    """WaitForApproval's TimeoutSecondsPath value: the path "must select a field whose value is a positive
    integer" (https://docs.aws.amazon.com/step-functions/latest/dg/state-task.html), so whole seconds."""
    return max(1, math.ceil(hours * 3600))


def token_key(model_package_arn: str) -> str:
    """The S3 key of the waiting task's token: approvals/<group>/<version>.json from
    arn:...:model-package/<group>/<version> (the ARN CreateModelPackage returned and the event carries)."""
    _, separator, path = model_package_arn.partition(":model-package/")
    if not separator or not path:
        raise ValueError(f"not a model package ARN: {model_package_arn!r}")
    return f"{TOKEN_PREFIX}{path.lower()}.json"


def token_record(task_token: str, model_package_arn: str, execution_arn: str, run_id: str) -> bytes:
    return json.dumps({
        "task_token": task_token,
        "model_package_arn": model_package_arn,
        "execution_arn": execution_arn,
        "run_id": run_id,
    }).encode()


def cli_commands(model_package_arn: str, region: str) -> dict[str, str]:
    """The exact commands that decide (the console's Update status does the same)."""
    base = f"aws sagemaker update-model-package --region {region} --model-package-arn {model_package_arn}"
    return {
        APPROVED: f'{base} --model-approval-status Approved --approval-description "why"',
        REJECTED: f'{base} --model-approval-status Rejected --approval-description "why"',
    }


@dataclass(frozen=True)
class Decision:
    """What WaitForApproval resumes with (and ExpireApproval answers): the state machine's $.approval."""

    status: str  # Approved or Rejected
    model_package_arn: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        # `approved` for the state machine's Approved? choice (a boolean, so the ASL repeats no status name).
        return {**asdict(self), "approved": self.status == APPROVED}


def decision_from_description(description: Mapping[str, Any]) -> Decision | None:
    """The decision a model package's DescribeModelPackage fields hold, or None while it is undecided."""
    status = description.get("ModelApprovalStatus")
    arn = description.get("ModelPackageArn")
    if status not in DECISIONS or not arn:
        return None
    verb = "approved" if status == APPROVED else "rejected"
    note = description.get("ApprovalDescription")
    reason = f"{verb} in the model registry" + (f": {note}" if note else "")
    return Decision(status, arn, reason)


def decision_from_event(event: Mapping[str, Any]) -> Decision | None:
    """The decision a model package state-change event announces (its detail carries the package's
    description fields), or None for an event that decides nothing."""
    if event.get("source") != EVENT_SOURCE or event.get("detail-type") != EVENT_DETAIL_TYPE:
        return None
    return decision_from_description(event.get("detail") or {})


def expiry(model_package_arn: str, hours: float) -> Decision:
    return Decision(REJECTED, model_package_arn, f"no decision within {hours:g} h: the approval expired")


def abandoned(state: Mapping[str, Any]) -> Decision | None:
    """After a failure: the package a run registered PendingManualApproval and never got a decision for (the
    run failed before or during its wait). Cleanup marks it Rejected, so the registry holds no version that
    looks approvable but that no run will ever deploy; None when there is none."""
    gate, decided = state.get("gate") or {}, state.get("approval") or {}
    if not gate.get("awaits_approval") or decided.get("status") or not gate.get("model_package_arn"):
        return None
    return Decision(REJECTED, str(gate["model_package_arn"]), "the run failed before a decision: never deployed")


def expiry_request(decision: Decision) -> dict[str, Any]:
    """UpdateModelPackage marking an expired (or abandoned) package Rejected, so the registry says what
    happened."""
    return {
        "ModelPackageArn": decision.model_package_arn,
        "ModelApprovalStatus": REJECTED,
        "ApprovalDescription": decision.reason[:DESCRIPTION_MAX],
    }
