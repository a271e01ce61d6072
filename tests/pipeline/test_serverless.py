"""EndpointMode=serverless (issue 10, item 5): ServerlessConfig requests checked by botocore, the
combinations AWS refuses refused at Validate, and a serverless deploy end to end under moto.

AWS's rules (mlpipeline/serverless.py cites each):
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProductionVariantServerlessConfig.html,
https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints-update.html,
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_TrafficRoutingConfig.html,
https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints.html (feature exclusions: data capture).
"""

from __future__ import annotations

import json

import pipeline_world as pw
import pytest
from mlpipeline import deployment_requests
from mlpipeline.settings import SettingsError, build_settings
from test_requests import asl_defaults, assert_valid, make_run

SERVERLESS = {"endpoint_mode": "serverless", "serverless_memory_mb": 3072, "serverless_max_concurrency": 10}


def test_the_template_defaults_are_realtime_with_valid_serverless_values() -> None:
    defaults = pw.parameter_defaults()
    assert defaults["EndpointMode"] == "realtime"
    assert build_settings(asl_defaults()).endpoint_mode == "realtime"
    assert build_settings(asl_defaults(), {"endpoint_mode": "serverless"}).serverless_memory_mb == 2048


def test_a_serverless_endpoint_config_has_serverless_config_and_no_instances() -> None:
    request = deployment_requests.endpoint_config_request(make_run(**SERVERLESS), 0.9)
    assert_valid("sagemaker", "CreateEndpointConfig", request)
    [variant] = request["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 10}
    assert "InstanceType" not in variant and "InitialInstanceCount" not in variant
    realtime = deployment_requests.endpoint_config_request(make_run(), 0.9)["ProductionVariants"][0]
    assert "ServerlessConfig" not in realtime and realtime["InstanceType"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"serverless_memory_mb": 1500}, "MemorySizeInMB"),
        ({"serverless_memory_mb": 8192}, "MemorySizeInMB"),
        ({"serverless_max_concurrency": 201}, "MaxConcurrency"),
        ({"serverless_max_concurrency": 0}, "MaxConcurrency"),
        ({"rollout_strategy": "CANARY", "rollout_step_type": "CAPACITY_PERCENT", "rollout_step_size": 50},
         "ALL_AT_ONCE"),
        ({"endpoint_instance_type": "ml.g4dn.xlarge"}, "no GPUs"),
        ({"data_capture_percentage": 10}, "do not support data capture"),
        ({"endpoint_mode": "async"}, "endpoint_mode must be one of"),
    ],
)
def test_validate_refuses_what_aws_refuses_for_serverless(overrides: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        build_settings(asl_defaults(), {**SERVERLESS, **overrides})


def test_a_serverless_deploy_end_to_end(world: pw.PipelineWorld) -> None:
    manifest = {"version": "v1", "overrides": SERVERLESS}
    execution = world.run(pw.upload_dataset(world.s3, manifest=manifest), "serverless")
    assert execution["status"] == "SUCCEEDED", execution
    out = json.loads(execution["output"])
    config = world.sagemaker.describe_endpoint_config(EndpointConfigName=out["run"]["endpoint_config_name"])
    assert config["ProductionVariants"][0]["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 10}
    assert out["smoke_test"]["passed"] is True  # the smoke test still runs
    assert out["autoscaling"]["resource_id"] is None  # no scaling policy in this mode
    assert world.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert out["autoscaling"]["drift_alarm"] is not None  # the drift alarm still gets the model's threshold


def test_a_live_realtime_endpoint_is_not_switched_to_serverless(world: pw.PipelineWorld) -> None:
    assert world.run(pw.upload_dataset(world.s3, manifest={"version": "v1"}), "v1")["status"] == "SUCCEEDED"
    world.sim.test_accuracy = 0.93
    second = world.run(pw.upload_dataset(world.s3, manifest={"version": "v2", "overrides": SERVERLESS}), "v2")
    assert second["status"] == "FAILED"
    assert "cannot switch between real-time and serverless" in world.notifications()[-1]
    assert world.sim.calls.count("UpdateEndpoint") == 0
