"""ConfigureAutoscaling: RegisterScalableTarget + target tracking on SageMakerVariantInvocationsPerInstance.

Input {"run", "deployment"}; output {"resource_id", "min_capacity", "max_capacity", "policy_arn"}.
Both calls are idempotent, so a live endpoint's existing registration is simply updated.
"""

from __future__ import annotations

from typing import Any

import boto3
from mlpipeline import requests
from mlpipeline.errors import translate_aws_errors


def configure(autoscaling: Any, endpoint_name: str, settings: dict[str, Any]) -> dict[str, Any]:
    target = requests.register_scalable_target_request(endpoint_name, settings)
    autoscaling.register_scalable_target(**target)
    policy = autoscaling.put_scaling_policy(**requests.scaling_policy_request(endpoint_name, settings))
    return {
        "resource_id": target["ResourceId"],
        "min_capacity": target["MinCapacity"],
        "max_capacity": target["MaxCapacity"],
        "policy_arn": policy["PolicyARN"],
    }


@translate_aws_errors
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return configure(
        boto3.client("application-autoscaling"),
        event["deployment"]["endpoint_name"],
        event["run"]["settings"],
    )
