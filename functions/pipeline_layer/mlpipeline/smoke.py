"""The post-deploy smoke test's decisions (the SmokeTest Lambda is a thin shell around these): what model
the endpoint really serves, and what to do with the live endpoint when it answers wrongly.

The check itself (the answers against the model's recording) is imgclf.smoke_check, shared with local mode.

- The served model is the one of the config DescribeEndpoint names, never the one this run deployed: a
  blue/green update that rolled back ends InService on the old config
  (https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-configuration.html). Then the
  old model is checked and the run fails saying the new one was rolled back.
- A wrong answer from this run's model: the endpoint goes back to the config it served before, with
  UpdateEndpoint and RetainAllVariantProperties (keeping the live, possibly autoscaled, instance count as
  Deploy does: https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_UpdateEndpoint.html), or,
  on a first deployment, is deleted, so that a wrong model never serves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlpipeline.errors import EndpointDeploymentFailed


def served_config(endpoint: Mapping[str, Any]) -> str:
    """The config an InService endpoint serves; anything else is not ready for a smoke test."""
    if endpoint["EndpointStatus"] != "InService":
        raise EndpointDeploymentFailed(
            f"endpoint {endpoint['EndpointName']} is {endpoint['EndpointStatus']}, not InService: no smoke test")
    return str(endpoint["EndpointConfigName"])


def model_of(endpoint_config: Mapping[str, Any]) -> str:
    return str(endpoint_config["ProductionVariants"][0]["ModelName"])


def remedy(deployment: Mapping[str, Any]) -> dict[str, str | None]:
    """What a failed smoke test of this run's model does to the endpoint: restore the config it served
    before this run (Deploy's previous_config), or delete it when this run created it."""
    previous = deployment.get("previous_config")
    if previous:
        return {"action": "restore", "config": str(previous)}
    return {"action": "delete", "config": None}


def restore_request(endpoint_name: str, previous_config: str) -> dict[str, Any]:
    """UpdateEndpoint back to the previous config, keeping the live variant's instance count and weight."""
    return {"EndpointName": endpoint_name, "EndpointConfigName": previous_config,
            "RetainAllVariantProperties": True}


def describe_remedy(action: Mapping[str, Any], endpoint_name: str) -> str:
    if action["action"] == "restore":
        return (f"endpoint {endpoint_name} is being updated back to the previous config {action['config']} "
                "(UpdateEndpoint, RetainAllVariantProperties)")
    return f"endpoint {endpoint_name} was deleted (this run created it, no earlier model to go back to)"
