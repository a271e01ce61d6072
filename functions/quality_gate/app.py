"""QualityGate: may this model replace the live one? Registers it as a model package version either way.

Input {"run", "training_job_name"}; output {"passed", "reason", "test_accuracy", "live_accuracy",
"threshold", "model_package_arn", "model_data_url" (the model.tar.gz registered, which Deploy deploys),
"prediction_baseline", "approval_status", "awaits_approval"} (ApprovalMode=manual: a passing model waits for a
person, mlpipeline.approval). The live model's accuracy is the tag on the endpoint's current config.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from mlpipeline import approval, aws, drift_alarm
from mlpipeline.deployment_requests import model_package_request
from mlpipeline.errors import translate_aws_errors

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
    run = event["run"]
    sagemaker = boto3.client("sagemaker")
    job = sagemaker.describe_training_job(TrainingJobName=event["training_job_name"])
    decision = gate.decide(
        gate.accuracy_from_final_metrics(job.get("FinalMetricDataList", [])),
        run["settings"]["quality_threshold"],
        live_accuracy(sagemaker, os.environ["ENDPOINT_NAME"]),
    )
    request = model_package_request(run, os.environ["MODEL_PACKAGE_GROUP_NAME"], job, decision)
    package = sagemaker.create_model_package(**request)
    # The candidate's validation baseline (training metrics), for the confidence-drift alarm once deployed.
    baseline = drift_alarm.baseline_from_final_metrics(job.get("FinalMetricDataList", []))
    status = request["ModelApprovalStatus"]
    return {**decision.as_dict(), "model_package_arn": package["ModelPackageArn"],
            "model_data_url": job["ModelArtifacts"]["S3ModelArtifacts"], "prediction_baseline": baseline,
            "approval_status": status, "awaits_approval": status == approval.PENDING}
