"""StartTuning: CreateHyperParameterTuningJob for the run. Input {"run"}; output {"job_name", "job_arn"}.

A second execution for the same dataset version collides on the deterministic job name: SageMaker
answers ResourceInUse, raised as DuplicateRun (ignored by the state machine).
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.exceptions import ClientError
from mlpipeline.errors import DuplicateRun, error_code, translate_aws_errors
from mlpipeline.requests import tuning_job_request


@translate_aws_errors
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    run = event["run"]
    request = tuning_job_request(run, os.environ["SAGEMAKER_ROLE_ARN"])
    try:
        answer = boto3.client("sagemaker").create_hyper_parameter_tuning_job(**request)
    except ClientError as error:
        if error_code(error) == "ResourceInUse":
            raise DuplicateRun(
                f"tuning job {run['tuning_job_name']} already exists: this dataset version "
                "is already being processed"
            ) from error
        raise
    return {"job_name": run["tuning_job_name"], "job_arn": answer["HyperParameterTuningJobArn"]}
