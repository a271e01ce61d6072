"""StartTuning: CreateHyperParameterTuningJob for the run, tagged with the execution that starts it.

Input {"run", "execution_arn" ($$.Execution.Id), "poll_seconds", "features" (PrepareFeatures' answer, or
{"ready": false} for an unfrozen backbone)}; output {"job_name", "job_arn"}. With features ready, every
trial reads the feature set as its `features` channel and trains the head on the cached-features instance
type (mlpipeline.feature_sets.cached_features_tuning); otherwise the trials train on the images.

The job name is deterministic per dataset version, so SageMaker answers ResourceInUse both to a retry of
this task whose first attempt did create the job (the Lambda timed out, or AWS answered 5xx after the job
was created) and to a second execution for the same version. The job's execution tag tells them apart:
our own job carries on, another execution's is DuplicateRun (ignored by the state machine).
Before anything starts, a run whose budget one execution cannot watch is refused (InvalidDataset).
"""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError
from mlpipeline import feature_sets, function_env, polling, resource_tags, training_requests
from mlpipeline.errors import DuplicateRun, error_code, translate_aws_errors
from mlpipeline.run_state import RunState

logger = Logger(service="start-tuning")


# This function's variables in template.yaml (mlpipeline.function_env).
ENVIRONMENT = function_env.read("sagemaker_role_arn")


def _tags(sagemaker: Any, arn: str) -> list[dict[str, str]]:
    return [tag for page in sagemaker.get_paginator("list_tags").paginate(ResourceArn=arn) for tag in page["Tags"]]


@translate_aws_errors
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    run = RunState.from_event(event["run"])
    logger.append_keys(run_id=run.run_id)
    execution_arn = event["execution_arn"]
    polling.check_run_fits_one_execution(run.settings, int(event["poll_seconds"]))
    features = event.get("features") or {}
    cached = feature_sets.cached_features_tuning(run, features["feature_set"]) if features.get("ready") else None
    request = training_requests.tuning_job_request(run, ENVIRONMENT.sagemaker_role_arn, execution_arn, cached)
    sagemaker = boto3.client("sagemaker")
    name = run.tuning_job_name
    try:
        arn = sagemaker.create_hyper_parameter_tuning_job(**request)["HyperParameterTuningJobArn"]
    except ClientError as error:
        if error_code(error) != "ResourceInUse":
            raise
        arn = sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)[
            "HyperParameterTuningJobArn"
        ]
        if not resource_tags.started_by(_tags(sagemaker, arn), execution_arn):
            raise DuplicateRun(
                f"tuning job {name} already exists, started by another execution: this dataset version "
                "is already being processed"
            ) from error
    logger.info("tuning job", extra={"job_name": name, "cached_features": cached is not None})
    return {"job_name": name, "job_arn": arn}
