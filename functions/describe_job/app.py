"""DescribeJob: the progress of the tuning job, the training job or the endpoint deployment.

Input {"kind": "tuning" | "training" | "endpoint", "name", "expected_config" (endpoint only)}.
Output {"done": bool, "status", ...}; raises SageMakerJobFailed / EndpointDeploymentFailed.
"""

from __future__ import annotations

from typing import Any

import boto3
from mlpipeline import requests
from mlpipeline.errors import translate_aws_errors


@translate_aws_errors
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    sagemaker = boto3.client("sagemaker")
    kind, name = event["kind"], event["name"]
    if kind == "tuning":
        return requests.tuning_progress(
            sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        )
    if kind == "training":
        return requests.training_progress(sagemaker.describe_training_job(TrainingJobName=name))
    if kind == "endpoint":
        return requests.endpoint_progress(
            sagemaker.describe_endpoint(EndpointName=name), event["expected_config"]
        )
    raise ValueError(f"unknown kind {kind!r}: expected tuning, training or endpoint")
