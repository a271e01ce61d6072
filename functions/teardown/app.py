"""StackTeardown: the custom resource that makes `sam delete` leave nothing of the pipeline that bills.

CloudFormation invokes this function asynchronously with Create, Update or Delete and waits for the answer
at the request's presigned ResponseURL
(https://docs.aws.amazon.com/lambda/latest/dg/services-cloudformation.html).
- Create / Update: check the properties, answer SUCCESS, change nothing.
- Delete, only while the stack itself is DELETE_IN_PROGRESS (see mlpipeline.teardown.DELETING_STACK):
  passes of observe -> mlpipeline.teardown.plan_teardown -> act, every POLL_SECONDS, until a pass finds
  nothing left. Deleting an endpoint takes minutes and stopping jobs up to a few, so before the Lambda
  timeout the function hands over to a fresh asynchronous invocation of itself (same event, progress
  added); the last one answers. A failure, or running out of CloudFormation's ServiceTimeout, answers
  FAILED with the reason, so the stack deletion never hangs.

The answer is hand-written with urllib rather than AWS's `cfnresponse` module (only importable by inline
ZipFile code) or crhelper (its long-running mode creates an EventBridge rule and Lambda permission at run
time, more IAM and more to clean up during a deletion).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.config import Config
from botocore.exceptions import ClientError
from mlpipeline import aws, custom_resource, teardown
from mlpipeline.errors import error_code

logger = Logger(service="teardown")  # the stack's custom resource: no run, its request id in each answer

# Throttling during a burst of deletions is retried by botocore (standard mode), not by failing the stack.
_CONFIG = Config(retries={"mode": "standard", "max_attempts": 8})
STOP_ERROR = "StackDeleted"
STOP_CAUSE = "The CloudFormation stack of this pipeline is being deleted."
DELETE_OBJECTS_BATCH = 1000  # DeleteObjects takes at most 1,000 keys
ANSWER_ATTEMPTS = 3


@dataclass(frozen=True)
class Clock:
    now: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep


CLOCK = Clock()


@dataclass(frozen=True)
class Clients:
    sagemaker: Any
    sfn: Any
    autoscaling: Any
    s3: Any
    cloudformation: Any
    awslambda: Any

    @classmethod
    def create(cls) -> Clients:
        def client(name: str) -> Any:
            return boto3.client(name, config=_CONFIG)

        return cls(
            sagemaker=client("sagemaker"),
            sfn=client("stepfunctions"),
            autoscaling=client("application-autoscaling"),
            s3=client("s3"),
            cloudformation=client("cloudformation"),
            awslambda=client("lambda"),
        )


# ---------------------------------------------------------------------------------------------------
# Observe.


def _listed(client: Any, operation: str, key: str, **request: Any) -> list[dict[str, Any]]:
    return [item for page in client.get_paginator(operation).paginate(**request) for item in page.get(key, [])]


def _bucket_has_data(s3: Any, bucket: str) -> bool:
    versions = s3.list_object_versions(Bucket=bucket, MaxKeys=1)
    uploads = s3.list_multipart_uploads(Bucket=bucket, MaxUploads=1)
    return bool(versions.get("Versions") or versions.get("DeleteMarkers") or uploads.get("Uploads"))


def observe(clients: Clients, stack: teardown.StackResources) -> teardown.Observation:
    sagemaker, prefix = clients.sagemaker, stack.resource_prefix
    executions = _listed(
        clients.sfn, "list_executions", "executions", stateMachineArn=stack.state_machine_arn, statusFilter="RUNNING"
    )
    tuning = [
        (job["HyperParameterTuningJobName"], job["HyperParameterTuningJobStatus"])
        for status in teardown.LIVE_JOB_STATUSES
        for job in _listed(
            sagemaker,
            "list_hyper_parameter_tuning_jobs",
            "HyperParameterTuningJobSummaries",
            NameContains=prefix,
            StatusEquals=status,
        )
    ]
    training = [
        (job["TrainingJobName"], job["TrainingJobStatus"])
        for status in teardown.LIVE_JOB_STATUSES
        for job in _listed(
            sagemaker, "list_training_jobs", "TrainingJobSummaries", NameContains=prefix, StatusEquals=status
        )
    ]
    return teardown.Observation(
        running_executions=tuple(e["executionArn"] for e in executions),
        tuning_jobs=tuple(tuning),
        training_jobs=tuple(training),
        endpoint=aws.describe_or_none(sagemaker.describe_endpoint, EndpointName=stack.endpoint_name),
        scalable_target_registered=aws.scalable_target_registered(clients.autoscaling, stack.endpoint_name),
        endpoint_configs=tuple(
            c["EndpointConfigName"]
            for c in _listed(sagemaker, "list_endpoint_configs", "EndpointConfigs", NameContains=prefix)
        ),
        models=tuple(m["ModelName"] for m in _listed(sagemaker, "list_models", "Models", NameContains=prefix)),
        model_packages=tuple(
            (p["ModelPackageArn"], p.get("ModelPackageStatus", ""))
            for p in _listed(
                sagemaker,
                "list_model_packages",
                "ModelPackageSummaryList",
                ModelPackageGroupName=stack.model_package_group_name,
                ModelPackageType="Versioned",
            )
        ),
        bucket_has_data=stack.empty_data_bucket and _bucket_has_data(clients.s3, stack.data_bucket),
    )


# ---------------------------------------------------------------------------------------------------
# Act.


def empty_bucket(s3: Any, bucket: str, time_left: Callable[[], float]) -> None:
    """Delete every object version and delete marker, then abort the multipart uploads (their parts are
    billed storage too). Stops when time runs short; the next pass carries on."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        keys = [
            {"Key": item["Key"], "VersionId": item["VersionId"]}
            for item in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        for start in range(0, len(keys), DELETE_OBJECTS_BATCH):
            batch = keys[start : start + DELETE_OBJECTS_BATCH]
            answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise RuntimeError(
                    f"{len(answer['Errors'])} objects of s3://{bucket} could not be deleted, e.g. "
                    f"{first.get('Key')} ({first.get('VersionId')}): {first.get('Code')} {first.get('Message')}"
                )
        if time_left() < teardown.HANDOVER_MARGIN_SECONDS:
            return
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])


def act(
    clients: Clients, stack: teardown.StackResources, action: teardown.Action, time_left: Callable[[], float]
) -> None:
    kind, target = action.kind, action.target
    sagemaker = clients.sagemaker
    try:
        if aws.sagemaker_action(sagemaker, kind, target):
            pass
        elif kind == "stop_execution":
            clients.sfn.stop_execution(executionArn=target, error=STOP_ERROR, cause=STOP_CAUSE)
        elif kind == "deregister_scalable_target":
            clients.autoscaling.deregister_scalable_target(**stack.scalable_target)
        elif kind == "empty_bucket":
            empty_bucket(clients.s3, target, time_left)
        else:
            raise ValueError(f"unknown teardown action {kind}")
    except ClientError as error:
        # Gone already (a race with its own end), or a job that left InProgress between the look and the
        # stop: the next pass observes what is really there.
        if aws.is_not_found(error) or (kind.startswith("stop_") and error_code(error) == "ValidationException"):
            logger.info("%s %s: %s (left to the next pass)", kind, target, error)
            return
        raise


# ---------------------------------------------------------------------------------------------------
# The custom resource protocol.


def answer(event: dict[str, Any], status: str, reason: str) -> None:
    """PUT the response JSON to the presigned ResponseURL (no Content-Type: the URL was signed without)."""
    url = str(event["ResponseURL"])  # an http(s) URL: custom_resource.require_protocol_fields
    body = custom_resource.response_body(event, status, reason)
    for attempt in range(1, ANSWER_ATTEMPTS + 1):
        request = urllib.request.Request(
            url, data=body, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(body))}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
            logger.info("answered CloudFormation %s: %s", status, reason)
            return
        except OSError:  # URLError and HTTPError are OSErrors
            if attempt == ANSWER_ATTEMPTS:
                raise  # the Lambda error makes Lambda retry the whole (idempotent) invocation
            logger.warning("answering CloudFormation failed (attempt %d), retrying", attempt, exc_info=True)
            CLOCK.sleep(2**attempt)


def tear_down(
    event: dict[str, Any], context: Any, stack: teardown.StackResources, clients: Clients
) -> tuple[str, str] | None:
    """Passes until done; None when handed over to the next invocation."""
    progress = teardown.Progress.of(event, CLOCK.now())
    deadline = progress.deadline(stack)
    quiet_until = progress.quiet_until

    def time_left() -> float:
        return min(context.get_remaining_time_in_millis() / 1000, deadline - CLOCK.now())

    while True:
        plan = teardown.plan_teardown(stack, observe(clients, stack), now=CLOCK.now(), quiet_until=quiet_until)
        quiet_until = plan.quiet_until
        logger.info(json.dumps({"invocation": progress.invocation, **plan.summary()}))
        for action in plan.actions:
            act(clients, stack, action, time_left)
        decision = teardown.decide(
            plan, now=CLOCK.now(), deadline=deadline, remaining_seconds=context.get_remaining_time_in_millis() / 1000
        )
        if decision.verdict == "success":
            return "SUCCESS", decision.reason
        if decision.verdict == "failed":
            return "FAILED", decision.reason
        if decision.verdict == "hand_over":
            clients.awslambda.invoke(
                FunctionName=context.invoked_function_arn,
                InvocationType="Event",
                Payload=json.dumps(progress.next_event(event, quiet_until)).encode(),
            )
            logger.info("handed over to invocation %d", progress.invocation + 1)
            return None
        CLOCK.sleep(teardown.POLL_SECONDS)


def serve(request_type: str, event: dict[str, Any], context: Any) -> tuple[str, str] | None:
    if request_type in ("Create", "Update"):
        stack = teardown.StackResources.from_event(event)  # bad properties fail the deploy, not the deletion
        on_delete = "emptied" if stack.empty_data_bucket else "kept"
        return "SUCCESS", f"{request_type}: nothing to do until the stack is deleted (data bucket {on_delete} then)"
    try:
        stack = teardown.StackResources.from_event(event)
    except teardown.InvalidTeardownRequest as error:
        # Create and Update check the same properties, so a Delete only sees bad ones after a Create that
        # failed on them: the pipeline never ran, there is nothing to tear down.
        return "SUCCESS", f"nothing to tear down ({error})"
    clients = Clients.create()
    status = clients.cloudformation.describe_stacks(StackName=stack.stack_id)["Stacks"][0]["StackStatus"]
    if not teardown.should_tear_down(status):
        return "SUCCESS", f"the stack is {status}, not being deleted: the resource alone was removed; nothing torn down"
    return tear_down(event, context, stack, clients)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request_type = custom_resource.require_protocol_fields(event)  # without a ResponseURL there is no one to answer
    try:
        verdict = serve(request_type, event, context)
    except Exception as error:  # every failure is answered, never left for CloudFormation to time out on
        logger.exception("%s failed", request_type)
        verdict = ("FAILED", f"{type(error).__name__}: {error}")
    if verdict is None:
        return {"handed_over": True}
    status, reason = verdict
    answer(event, status, reason)
    return {"status": status, "reason": reason}
