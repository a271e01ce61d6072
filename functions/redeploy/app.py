"""PrepareRedeploy: roll back or redeploy by hand an earlier approved model package version of this stack's
group, through the same Deploy / WaitForEndpoint / SmokeTest / ConfigureAutoscaling states
(mlpipeline.redeploy decides).

Input {"request": {"model_package_arn"}, "defaults": <the stack's settings, from ApplyDefaults>,
"execution_arn"}. Output {"run", "gate"}: the $.run and $.gate a trained model's run has (the ASL merges
them into the state). Raises RedeployRefused (nothing created) for a malformed ARN, a package of another
group, one that is not Approved or cannot be deployed with the stack's settings.
"""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError
from mlpipeline import aws, function_env, redeploy
from mlpipeline.errors import RedeployRefused, error_code, translate_aws_errors
from mlpipeline.settings import SettingsError, build_settings

logger = Logger(service="redeploy")


# This function's variables in template.yaml (mlpipeline.function_env).
ENVIRONMENT = function_env.read(
    "data_bucket", "model_package_group_name", "model_package_group_arn", "resource_prefix"
)


@translate_aws_errors
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    group_arn = ENVIRONMENT.model_package_group_arn
    arn = redeploy.package_arn_of(event.get("request"), group_arn)
    try:
        settings = build_settings(event["defaults"])
    except SettingsError as error:
        raise RedeployRefused(f"the stack's settings are unusable: {error}") from error
    sagemaker = boto3.client("sagemaker")
    try:
        package = sagemaker.describe_model_package(ModelPackageName=arn)
    except ClientError as error:
        if error_code(error) == "ValidationException":  # SageMaker's answer for a version that does not exist
            raise RedeployRefused(f"model package {arn} cannot be described: {error}") from error
        raise
    bucket = ENVIRONMENT.data_bucket
    container = redeploy.check_package(package, ENVIRONMENT.model_package_group_name, settings, bucket)
    # The drift alarm's baseline travels in the model artifact (the training job may be deleted by now).
    model_bucket, key = aws.s3_location(str(container["ModelDataUrl"]))
    baseline = redeploy.baseline_from_model_tar(
        boto3.client("s3").get_object(Bucket=model_bucket, Key=key)["Body"])
    planned = redeploy.plan(
        package=package, container=container, settings=settings, prefix=ENVIRONMENT.resource_prefix,
        region=boto3.session.Session().region_name, bucket=bucket, execution_arn=event["execution_arn"],
        baseline=baseline)
    logger.append_keys(run_id=planned["run"]["run_id"])
    logger.info("redeploy", extra={"model_package_arn": arn})
    return planned
