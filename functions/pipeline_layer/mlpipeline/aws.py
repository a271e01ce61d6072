"""The AWS adapter every handler shares: "not found" told apart from real errors, describe-or-none,
create-once, whether the endpoint's scalable target is registered, and the stop/delete actions that
Cleanup and the StackTeardown both carry out.

Each service says "not found" its own way, and SageMaker says it with a ValidationException whose message
names the missing resource ("Could not find endpoint …", "Could not find model …", "Requested resource not
found"): https://docs.aws.amazon.com/sagemaker/latest/APIReference/CommonErrors.html lists
ValidationException and ResourceNotFound; S3's HeadObject answers a bare 404
(https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html), GetObject NoSuchKey/NoSuchVersion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from mlpipeline import deployment_requests
from mlpipeline.errors import error_code

# Codes that always mean "no such resource" (SageMaker, Step Functions, Application Auto Scaling, S3).
NOT_FOUND_CODES = frozenset(
    {
        "ResourceNotFound",
        "ObjectNotFoundException",
        "ExecutionDoesNotExist",
        "404",
        "NotFound",
        "NoSuchKey",
        "NoSuchVersion",
    }
)
# SageMaker's ValidationException means "not found" only with one of these in its message.
_NOT_FOUND_WORDS = ("could not find", "not found", "does not exist")


def s3_location(uri: str) -> tuple[str, str]:
    """(bucket, key) of an s3:// URI (a model's ModelDataUrl)."""
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"not an S3 object URI: {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


def is_not_found(error: ClientError) -> bool:
    """The resource does not exist (or no longer does)."""
    code = error_code(error)
    if code in NOT_FOUND_CODES:
        return True
    message = str(error).lower()
    return code == "ValidationException" and any(words in message for words in _NOT_FOUND_WORDS)


def describe_or_none(call: Callable[..., dict[str, Any]], **request: Any) -> dict[str, Any] | None:
    """`call(**request)`'s answer, or None where the resource does not exist; other errors propagate."""
    try:
        return call(**request)
    except ClientError as error:
        if is_not_found(error):
            return None
        raise


def create_once(call: Callable[..., Any], **request: Any) -> bool:
    """Create, tolerating "already exists" from a retried attempt (names are deterministic per run).
    SageMaker answers ResourceInUse for jobs and ValidationException "… already existing …" for models
    and endpoint configs. True when this call created it."""
    try:
        call(**request)
    except ClientError as error:
        message = str(error).lower()
        if error_code(error) in ("ValidationException", "ResourceInUse") and "exist" in message:
            return False
        raise
    return True


def scalable_target_registered(autoscaling: Any, endpoint_name: str) -> bool:
    """Whether Application Auto Scaling has the endpoint variant's scalable target."""
    target = deployment_requests.scalable_target_id(endpoint_name)
    return bool(
        autoscaling.describe_scalable_targets(
            ServiceNamespace=target["ServiceNamespace"],
            ResourceIds=[target["ResourceId"]],
            ScalableDimension=target["ScalableDimension"],
        ).get("ScalableTargets")
    )


# Action kind -> (SageMaker client method, its name parameter): the plans' vocabulary
# (mlpipeline.deployment_plan.plan_cleanup, mlpipeline.teardown.plan_teardown).
SAGEMAKER_ACTIONS: dict[str, tuple[str, str]] = {
    "stop_tuning_job": ("stop_hyper_parameter_tuning_job", "HyperParameterTuningJobName"),
    "stop_training_job": ("stop_training_job", "TrainingJobName"),
    "delete_endpoint": ("delete_endpoint", "EndpointName"),
    "delete_endpoint_config": ("delete_endpoint_config", "EndpointConfigName"),
    "delete_model": ("delete_model", "ModelName"),
    "delete_model_package": ("delete_model_package", "ModelPackageName"),
}


def sagemaker_action(sagemaker: Any, kind: str, name: str) -> bool:
    """Carry out one SageMaker stop/delete action of a plan; False when `kind` is not one of them."""
    if kind not in SAGEMAKER_ACTIONS:
        return False
    method, parameter = SAGEMAKER_ACTIONS[kind]
    getattr(sagemaker, method)(**{parameter: name})
    return True
