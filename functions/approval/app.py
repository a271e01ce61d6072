"""Approval (ApprovalMode=manual; the design is mlpipeline.approval's docstring). Three callers:

- WaitForApproval (lambda:invoke.waitForTaskToken): {"action": "request", "task_token", "execution_arn",
  "run", "gate"}. Stores the token under the package's ARN, then tells the owner how to decide (or, when
  the package was decided before the token was stored, resumes the wait at once).
- The ApprovalDecided EventBridge rule: a "SageMaker Model Package State Change" event. Resumes the waiting
  task with the decision (SendTaskSuccess), once; an event no task waits for is logged and ignored.
- ExpireApproval (after States.Timeout): {"action": "expire", "run", "gate"}. Marks the package Rejected.
Output: the decision ({"status", "model_package_arn", "reason", "approved"}) or what was done.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError
from mlpipeline import approval, aws, function_env
from mlpipeline.errors import error_code, translate_aws_errors
from mlpipeline.notifications import compose
from mlpipeline.run_state import RunState

logger = Logger(service="approval")


# This function's variables in template.yaml (mlpipeline.function_env).
ENVIRONMENT = function_env.read("data_bucket", "notification_topic_arn")
# SendTaskSuccess's answers for a wait that is over: it timed out (and ExpireApproval rejected the
# package), its execution was stopped, or the token was already used (API_SendTaskSuccess.html).
_WAIT_OVER = ("TaskTimedOut", "TaskDoesNotExist", "InvalidToken")


def _resume_once(s3: Any, bucket: str, key: str, record: dict[str, Any], decision: approval.Decision) -> dict[str, Any]:
    """SendTaskSuccess with the decision, then the token is dropped (a wait that is over resumes nothing)."""
    try:
        boto3.client("stepfunctions").send_task_success(
            taskToken=record["task_token"], output=json.dumps(decision.as_dict())
        )
        outcome: dict[str, Any] = {"resumed": record["execution_arn"], **decision.as_dict()}
    except ClientError as error:
        if error_code(error) not in _WAIT_OVER:
            raise
        logger.info("the wait of %s is over (%s): nothing to resume", record["execution_arn"], error_code(error))
        outcome = {"ignored": f"the wait of {record['execution_arn']} is over ({error_code(error)})"}
    s3.delete_object(Bucket=bucket, Key=key)
    return outcome


def request(event: dict[str, Any]) -> dict[str, Any]:
    run, gate = RunState.from_event(event["run"]), event["gate"]
    logger.append_keys(run_id=run.run_id)
    arn = gate["model_package_arn"]
    s3, key = boto3.client("s3"), approval.token_key(arn)
    record = {"task_token": event["task_token"], "execution_arn": event["execution_arn"]}
    s3.put_object(
        Bucket=run.bucket,
        Key=key,
        Body=approval.token_record(event["task_token"], arn, event["execution_arn"], run.run_id),
        ContentType="application/json",
    )
    # Decided before the token was stored? Its event found no token: resume now (mlpipeline.approval).
    package = boto3.client("sagemaker").describe_model_package(ModelPackageName=arn)
    early = approval.decision_from_description(package)
    if early is not None:
        logger.info("model package %s was %s before the wait began", arn, early.status)
        return _resume_once(s3, run.bucket, key, record, early)
    subject, body = compose("approval_requested", {"run": event["run"], "gate": gate})
    boto3.client("sns").publish(TopicArn=ENVIRONMENT.notification_topic_arn, Subject=subject, Message=body)
    logger.info("model package %s waits for approval; token at s3://%s/%s", arn, run.bucket, key)
    return {"token_s3_key": key}


def resume(event: dict[str, Any]) -> dict[str, Any]:
    decision = approval.decision_from_event(event)
    if decision is None:
        logger.info("not a model package decision: %s", event.get("detail-type"))
        return {"ignored": "not a decision"}
    s3 = boto3.client("s3")
    bucket, key = ENVIRONMENT.data_bucket, approval.token_key(decision.model_package_arn)
    stored = aws.describe_or_none(s3.get_object, Bucket=bucket, Key=key)
    if stored is None:
        # A package no run waits for: registered Approved/Rejected by the gate itself, decided again, or
        # decided after its wait expired. SageMaker may also send one change more than once.
        logger.info("no run waits for %s (%s)", decision.model_package_arn, decision.status)
        return {"ignored": f"no run waits for {decision.model_package_arn}"}
    return _resume_once(s3, bucket, key, json.loads(stored["Body"].read()), decision)


def expire(event: dict[str, Any]) -> dict[str, Any]:
    run, arn = RunState.from_event(event["run"]), event["gate"]["model_package_arn"]
    logger.append_keys(run_id=run.run_id)
    decision = approval.expiry(arn, run.settings.approval_timeout_hours)
    boto3.client("sagemaker").update_model_package(**approval.expiry_request(decision))
    boto3.client("s3").delete_object(Bucket=run.bucket, Key=approval.token_key(arn))
    logger.info("model package %s: %s", arn, decision.reason)
    return decision.as_dict()


@translate_aws_errors
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    if "detail-type" in event:
        return resume(event)
    actions = {"request": request, "expire": expire}
    if event.get("action") not in actions:
        raise ValueError(f"unknown approval action {event.get('action')!r}; expected one of {sorted(actions)}")
    return actions[event["action"]](event)
