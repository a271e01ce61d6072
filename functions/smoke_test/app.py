"""SmokeTest: after the endpoint is InService, the model's own recorded answers for a few test images
(imgclf.smoke_sample, shipped in model.tar.gz) against what the endpoint answers through InvokeEndpoint,
with the content types a client sends (imgclf.smoke_check, the same check local mode runs).

Input {"run", "deployment"}; output the report ({"passed", "runtime", "reference", "tolerance", "images",
"mismatches", "summary"}, "endpoint_config_name", "model_name"). The model checked is the one of the config
DescribeEndpoint names (mlpipeline.smoke). Raises EndpointDeploymentFailed when that is not this run's
config (the update rolled back: the old model's check is in the message), and SmokeTestFailed when this
run's model answers wrongly, after restoring the previous config or deleting the endpoint.
"""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger
from mlpipeline import aws, smoke
from mlpipeline.errors import EndpointDeploymentFailed, SmokeTestFailed, translate_aws_errors
from mlpipeline.run_state import RunState

from imgclf import smoke_check

logger = Logger(service="smoke-test")


def check_served_model(
    sagemaker: Any, s3: Any, runtime: Any, endpoint_name: str
) -> tuple[str, str, smoke_check.SmokeReport]:
    """(served config, its model, the smoke report of that model as the endpoint serves it)."""
    config = smoke.served_config(sagemaker.describe_endpoint(EndpointName=endpoint_name))
    model = smoke.model_of(sagemaker.describe_endpoint_config(EndpointConfigName=config))
    url = sagemaker.describe_model(ModelName=model)["PrimaryContainer"]["ModelDataUrl"]
    bucket, key = aws.s3_location(url)
    sample = smoke_check.read_sample_from_tar(s3.get_object(Bucket=bucket, Key=key)["Body"])
    report = smoke_check.run(sample, smoke_check.endpoint_invoker(runtime, endpoint_name, sample["top_k"]))
    return config, model, report


@translate_aws_errors
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    logger.append_keys(run_id=RunState.from_event(event["run"]).run_id)
    deployment = event["deployment"]
    endpoint_name = deployment["endpoint_name"]
    sagemaker = boto3.client("sagemaker")
    config, model, report = check_served_model(
        sagemaker, boto3.client("s3"), boto3.client("sagemaker-runtime"), endpoint_name)
    if config != deployment["endpoint_config_name"]:
        raise EndpointDeploymentFailed(
            f"endpoint {endpoint_name} serves {config}, not this run's {deployment['endpoint_config_name']}: the "
            f"new model was rolled back; the model it serves ({model}): {report.summary()}")
    if not report.passed:
        action = smoke.remedy(deployment)
        if action["action"] == "restore":
            sagemaker.update_endpoint(**smoke.restore_request(endpoint_name, str(action["config"])))
        else:
            sagemaker.delete_endpoint(EndpointName=endpoint_name)
            # Gone before Cleanup looks: an endpoint still Deleting keeps its config and model "in use".
            sagemaker.get_waiter("endpoint_deleted").wait(
                EndpointName=endpoint_name, WaiterConfig={"Delay": 10, "MaxAttempts": 25})
        raise SmokeTestFailed(f"{report.summary()}; {smoke.describe_remedy(action, endpoint_name)}")
    logger.info("smoke test passed", extra={"endpoint_config_name": config, "model_name": model})
    return {**report.as_dict(), "endpoint_config_name": config, "model_name": model}
