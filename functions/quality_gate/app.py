"""QualityGate: may this model replace the live one? Registers it as a model package version either way.

Input {"run", "training_job_name"}; output {"passed", "reason", "test_accuracy", "live_accuracy",
"threshold", "model_package_arn"}. The live model's accuracy is the tag on the endpoint's current config.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from mlpipeline import aws, drift_alarm
from mlpipeline.deployment_requests import model_package_request
from mlpipeline.errors import translate_aws_errors
from mlpipeline.run_state import RunState

from imgclf import gate


def live_accuracy(sagemaker: Any, endpoint_name: str) -> float | None:
    endpoint = aws.describe_or_none(sagemaker.describe_endpoint, EndpointName=endpoint_name)
    if endpoint is None or endpoint["EndpointStatus"] == "Failed":
        return None
    region_arn = endpoint["EndpointArn"].rsplit(":endpoint/", 1)[0]
    config_arn = f"{region_arn}:endpoint-config/{endpoint['EndpointConfigName'].lower()}"
    return gate.accuracy_from_tags(sagemaker.list_tags(ResourceArn=config_arn).get("Tags", []))


@translate_aws_errors
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    run = RunState.from_event(event["run"])
    sagemaker = boto3.client("sagemaker")
    job = sagemaker.describe_training_job(TrainingJobName=event["training_job_name"])
    decision = gate.decide(
        gate.accuracy_from_final_metrics(job.get("FinalMetricDataList", [])),
        run.settings.quality_threshold,
        live_accuracy(sagemaker, os.environ["ENDPOINT_NAME"]),
    )
    package = sagemaker.create_model_package(
        **model_package_request(run, os.environ["MODEL_PACKAGE_GROUP_NAME"], job, decision)
    )
    # The candidate's validation baseline (training metrics), for the confidence-drift alarm once deployed.
    baseline = drift_alarm.baseline_from_final_metrics(job.get("FinalMetricDataList", []))
    return {**decision.as_dict(), "model_package_arn": package["ModelPackageArn"], "prediction_baseline": baseline}
