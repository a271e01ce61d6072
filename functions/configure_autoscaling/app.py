"""ConfigureAutoscaling: RegisterScalableTarget + target tracking on SageMakerVariantInvocationsPerInstance.

Then sets the confidence-drift alarm's threshold for the model just deployed (PutMetricAlarm,
mlpipeline.drift_alarm) from its validation baseline, which the quality gate read from the training job.

Input {"run", "deployment", "gate"}; output {"resource_id", "min_capacity", "max_capacity", "policy_arn",
"drift_alarm"}. Every call is idempotent, so a live endpoint's existing registration is simply updated.
"""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger
from mlpipeline import deployment_requests, drift_alarm, function_env, serverless
from mlpipeline.errors import translate_aws_errors
from mlpipeline.run_state import RunState
from mlpipeline.settings import Settings

from imgclf import monitoring

logger = Logger(service="configure-autoscaling")


# This function's variables in template.yaml (mlpipeline.function_env).
ENVIRONMENT = function_env.read("endpoint_name", "notification_topic_arn")


def configure(autoscaling: Any, endpoint_name: str, settings: Settings) -> dict[str, Any]:
    target = deployment_requests.register_scalable_target_request(endpoint_name, settings)
    autoscaling.register_scalable_target(**target)
    policy = autoscaling.put_scaling_policy(**deployment_requests.scaling_policy_request(endpoint_name, settings))
    return {
        "resource_id": target["ResourceId"],
        "min_capacity": target["MinCapacity"],
        "max_capacity": target["MaxCapacity"],
        "policy_arn": policy["PolicyARN"],
    }


def set_drift_threshold(cloudwatch: Any, endpoint_name: str, baseline: dict[str, Any] | None,
                        topic_arn: str) -> dict[str, Any] | None:
    """Rewrite the drift alarm with the deployed model's threshold; None (alarm left as it is) when the
    model has no baseline."""
    if not baseline:
        return None
    threshold = monitoring.drift_threshold(baseline)
    cloudwatch.put_metric_alarm(**drift_alarm.put_metric_alarm_request(
        endpoint_name, topic_arn, threshold, description=drift_alarm.describe(baseline, threshold)))
    return {"alarm_name": drift_alarm.alarm_name(endpoint_name), "threshold": round(threshold, 6)}


@translate_aws_errors
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    endpoint_name = event["deployment"]["endpoint_name"]
    run = RunState.from_event(event["run"])
    logger.append_keys(run_id=run.run_id)
    if serverless.is_serverless(run.settings):
        # Serverless Inference scales its own concurrency: no scalable target, no scaling policy.
        answer: dict[str, Any] = {"resource_id": None, "skipped": "EndpointMode=serverless scales itself"}
    else:
        answer = configure(boto3.client("application-autoscaling"), endpoint_name, run.settings)
    answer["drift_alarm"] = set_drift_threshold(
        boto3.client("cloudwatch"), endpoint_name, (event.get("gate") or {}).get("prediction_baseline"),
        ENVIRONMENT.notification_topic_arn)
    logger.info("autoscaling", extra=answer)
    return answer
