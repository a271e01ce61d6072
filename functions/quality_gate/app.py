"""QualityGate: may this model replace the live one? Registers it as a model package version either way.

Input {"run", "training_job_name"}; output {"passed", "reason", "test_accuracy", "live_accuracy",
"threshold", "model_package_arn", "model_data_url" (the model.tar.gz registered, which Deploy deploys),
"prediction_baseline", "approval_status", "awaits_approval"} (ApprovalMode=manual: a passing model waits for a
person, mlpipeline.approval). The live model's accuracy is the tag on the endpoint's current config.
"""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger
from mlpipeline import approval, aws, drift_alarm, function_env
from mlpipeline.deployment_requests import model_package_request
from mlpipeline.errors import translate_aws_errors
from mlpipeline.run_state import RunState

from imgclf import gate

logger = Logger(service="quality-gate")


# This function's variables in template.yaml (mlpipeline.function_env).
ENVIRONMENT = function_env.read("endpoint_name", "model_package_group_name")


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
    logger.append_keys(run_id=run.run_id)
    sagemaker = boto3.client("sagemaker")
    job = sagemaker.describe_training_job(TrainingJobName=event["training_job_name"])
    decision = gate.decide(
        gate.accuracy_from_final_metrics(job.get("FinalMetricDataList", [])),
        run.settings.quality_threshold,
        live_accuracy(sagemaker, ENVIRONMENT.endpoint_name),
    )
    request = model_package_request(run, ENVIRONMENT.model_package_group_name, job, decision)
    package = sagemaker.create_model_package(**request)
    # The candidate's validation baseline (training metrics), for the confidence-drift alarm once deployed.
    baseline = drift_alarm.baseline_from_final_metrics(job.get("FinalMetricDataList", []))
    status = request["ModelApprovalStatus"]
    logger.info("quality gate", extra={**decision.as_dict(), "model_package_arn": package["ModelPackageArn"],
                                       "approval_status": status})
    return {**decision.as_dict(), "model_package_arn": package["ModelPackageArn"],
            "model_data_url": job["ModelArtifacts"]["S3ModelArtifacts"], "prediction_baseline": baseline,
            "approval_status": status, "awaits_approval": status == approval.PENDING}
