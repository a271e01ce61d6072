"""Rollout strategies (mlpipeline.rollout): the UpdateEndpoint requests they build, checked by botocore
against the service model, and the combinations AWS refuses, refused first by our settings and Deploy.

AWS's rules: https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_TrafficRoutingConfig.html
(canary <= 50%, linear step 10-50% of the variant's instance count, WaitIntervalInSeconds 0..3600),
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_BlueGreenUpdatePolicy.html
(MaximumExecutionTimeoutInSeconds 600..28800).
"""

from __future__ import annotations

import json

import pipeline_world as pw
import pytest
from mlpipeline import deployment_plan, deployment_requests, polling, rollout
from mlpipeline.errors import EndpointDeploymentFailed
from mlpipeline.settings import SettingsError, build_settings
from test_requests import asl_defaults, assert_valid, make_run


def _routing(run: dict) -> dict:
    request = deployment_requests.update_endpoint_request(pw.ENDPOINT, run, ["a"])
    return request["DeploymentConfig"]["BlueGreenUpdatePolicy"]


def test_the_default_is_all_at_once_with_todays_baking_period() -> None:
    policy = _routing(make_run())
    assert policy["TrafficRoutingConfiguration"] == {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 600}
    assert policy["MaximumExecutionTimeoutInSeconds"] == 3600


@pytest.mark.parametrize(
    ("overrides", "routing"),
    [
        (
            {"rollout_strategy": "CANARY", "rollout_step_type": "INSTANCE_COUNT", "rollout_step_size": 1},
            {"Type": "CANARY", "WaitIntervalInSeconds": 600, "CanarySize": {"Type": "INSTANCE_COUNT", "Value": 1}},
        ),
        (
            {
                "rollout_strategy": "LINEAR",
                "rollout_step_type": "CAPACITY_PERCENT",
                "rollout_step_size": 25,
                "rollout_wait_seconds": 300,
            },
            {
                "Type": "LINEAR",
                "WaitIntervalInSeconds": 300,
                "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 25},
            },
        ),
    ],
)
def test_canary_and_linear_requests_are_valid(overrides: dict, routing: dict) -> None:
    run = make_run(endpoint_instance_count=4, autoscaling_min_capacity=4, **overrides)
    request = deployment_requests.update_endpoint_request(pw.ENDPOINT, run, ["a"], fleet=4)
    assert_valid("sagemaker", "UpdateEndpoint", request)
    policy = request["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"] == routing
    assert 600 <= policy["MaximumExecutionTimeoutInSeconds"] <= 28800


@pytest.mark.parametrize(
    ("strategy", "step_type", "size", "fleet", "message"),
    [
        ("CANARY", "INSTANCE_COUNT", 1, 1, "at most 50%"),  # one instance: no canary is a real fraction
        ("CANARY", "CAPACITY_PERCENT", 60, 10, "at most 50%"),
        ("CANARY", "CAPACITY_PERCENT", 25, 2, "less than one instance"),
        ("LINEAR", "INSTANCE_COUNT", 1, 20, "10-50%"),  # 5% steps
        ("LINEAR", "CAPACITY_PERCENT", 5, 10, "10-50%"),
        ("LINEAR", "CAPACITY_PERCENT", 60, 10, "10-50%"),
        ("LINEAR", "CAPACITY_PERCENT", 10, 5, "less than one instance"),
        ("BLUE", "INSTANCE_COUNT", 1, 4, "one of"),
    ],
)
def test_combinations_aws_refuses(strategy: str, step_type: str, size: int, fleet: int, message: str) -> None:
    found = rollout.problems(strategy, step_type, size, 60, fleet)
    assert found and message in found[0], found


def test_accepted_combinations_and_their_steps() -> None:
    assert rollout.problems("CANARY", "INSTANCE_COUNT", 1, 600, 2) == []
    assert rollout.problems("LINEAR", "INSTANCE_COUNT", 1, 600, 10) == []  # 10%
    assert rollout.problems("LINEAR", "CAPACITY_PERCENT", 50, 600, 2) == []
    assert rollout.problems("ALL_AT_ONCE", "INSTANCE_COUNT", 99, 0, 1) == []  # step ignored
    assert rollout.shift_steps("LINEAR", "INSTANCE_COUNT", 1, 10) == 10
    assert rollout.shift_steps("LINEAR", "CAPACITY_PERCENT", 30, 10) == 4  # 3, 6, 9, 10
    assert rollout.shift_steps("CANARY", "INSTANCE_COUNT", 1, 10) == 2


def test_wait_interval_and_execution_timeout_limits() -> None:
    assert "0..3600" in rollout.problems("ALL_AT_ONCE", "INSTANCE_COUNT", 1, 3601, 1)[0]
    # 10 linear steps of 3600 s baking need more than BlueGreenUpdatePolicy's 28800 s maximum.
    assert "28800" in rollout.problems("LINEAR", "INSTANCE_COUNT", 1, 3600, 10)[0]
    assert rollout.problems("LINEAR", "INSTANCE_COUNT", 1, 2000, 10) == []
    assert rollout.execution_timeout_seconds("LINEAR", "INSTANCE_COUNT", 1, 2000, 10) == 21800


def test_settings_refuse_a_canary_on_the_smallest_fleet_autoscaling_allows() -> None:
    canary = {"rollout_strategy": "CANARY", "rollout_step_type": "INSTANCE_COUNT", "rollout_step_size": 1}
    with pytest.raises(SettingsError, match="1-instance fleet"):
        build_settings(asl_defaults(), canary)  # the default fleet is one instance
    with pytest.raises(SettingsError, match="1-instance fleet"):  # autoscaling may scale in to one
        build_settings(asl_defaults(), {**canary, "endpoint_instance_count": 2})
    build_settings(asl_defaults(), {**canary, "endpoint_instance_count": 2, "autoscaling_min_capacity": 2})
    linear = {
        "rollout_strategy": "LINEAR",
        "rollout_step_type": "INSTANCE_COUNT",
        "rollout_step_size": 1,
        "endpoint_instance_count": 2,
        "autoscaling_min_capacity": 2,
    }
    with pytest.raises(SettingsError, match="20-instance fleet"):  # autoscaling may scale out to 20: 5%
        build_settings(asl_defaults(), {**linear, "autoscaling_max_capacity": 20})
    build_settings(asl_defaults(), {**linear, "autoscaling_max_capacity": 10})
    with pytest.raises(SettingsError, match="rollout_step_type"):
        build_settings(asl_defaults(), {**canary, "rollout_step_type": "HALF"})


def test_deploy_checks_the_live_fleet_it_would_update() -> None:
    settings = make_run(
        rollout_strategy="LINEAR",
        rollout_step_type="INSTANCE_COUNT",
        rollout_step_size=1,
        endpoint_instance_count=4,
        autoscaling_min_capacity=2,
        autoscaling_max_capacity=10,
    ).settings
    live = {
        "EndpointName": "e",
        "EndpointStatus": "InService",
        "ProductionVariants": [{"VariantName": "AllTraffic", "DesiredInstanceCount": 3}],
    }
    assert deployment_plan.plan_deployment(live, "ml.m5.large", "ml.m5.large", True, "new", settings)["fleet"] == 3
    # a type change deploys the new config's count, not the live one
    assert deployment_plan.plan_deployment(live, "ml.m5.large", "ml.c5.large", True, "new", settings)["fleet"] == 4
    scaled_out = {**live, "ProductionVariants": [{"VariantName": "AllTraffic", "DesiredInstanceCount": 11}]}
    with pytest.raises(EndpointDeploymentFailed, match="would update 11 instance"):
        deployment_plan.plan_deployment(scaled_out, "ml.m5.large", "ml.m5.large", True, "new", settings)


def test_the_endpoint_poll_budget_covers_the_longest_rollout() -> None:
    settings = make_run(
        rollout_strategy="LINEAR",
        rollout_step_type="INSTANCE_COUNT",
        rollout_step_size=1,
        rollout_wait_seconds=1200,
        endpoint_instance_count=10,
        autoscaling_min_capacity=10,
        autoscaling_max_capacity=10,
    ).settings
    # 10 steps of 1200 s baking + provisioning, then a rollback as long again, then termination wait
    termination_wait = deployment_requests.TERMINATION_WAIT_SECONDS
    assert polling.budget_seconds("endpoint", settings) == 2 * (1800 + 12000) + termination_wait
    assert polling.budget_seconds("endpoint", make_run().settings) == 2 * 3600 + termination_wait


# ---------------------------------------------------------------------------------------------------
# Scenarios: the real ASL under moto with the real handlers; SageMakerSim plays the guardrails' steps.

FLEET = {"endpoint_instance_count": 4, "autoscaling_min_capacity": 4, "autoscaling_max_capacity": 4}
STRATEGIES = {
    "ALL_AT_ONCE": ({"rollout_strategy": "ALL_AT_ONCE"}, [4]),
    "CANARY": ({"rollout_strategy": "CANARY", "rollout_step_type": "INSTANCE_COUNT", "rollout_step_size": 1}, [1, 4]),
    "LINEAR": (
        {"rollout_strategy": "LINEAR", "rollout_step_type": "CAPACITY_PERCENT", "rollout_step_size": 25},
        [1, 2, 3, 4],
    ),
}


def _deploy_twice(world: pw.PipelineWorld, overrides: dict) -> tuple[dict, dict]:
    first = world.run(pw.upload_dataset(world.s3, manifest={"version": "v1", "overrides": FLEET}), "v1")
    assert first["status"] == "SUCCEEDED", first
    world.sim.test_accuracy = 0.93  # better than the live 0.91: the gate lets it replace the live model
    manifest = {"version": "v2", "overrides": {**FLEET, **overrides}}
    return first, world.run(pw.upload_dataset(world.s3, manifest=manifest), "v2")


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_each_strategy_shifts_traffic_in_its_steps_to_completion(world: pw.PipelineWorld, strategy: str) -> None:
    overrides, steps = STRATEGIES[strategy]
    _, second = _deploy_twice(world, overrides)
    assert second["status"] == "SUCCEEDED", second
    new_config = json.loads(second["output"])["run"]["endpoint_config_name"]
    assert [(r["type"], r["fleet"], r["steps"], r["outcome"]) for r in world.sim.rollouts] == [
        (strategy, 4, steps, "Completed")
    ]
    endpoint = world.sagemaker.describe_endpoint(EndpointName=pw.ENDPOINT)
    assert endpoint["EndpointStatus"] == "InService" and endpoint["EndpointConfigName"] == new_config


def test_a_canary_rolled_back_by_its_alarm_keeps_the_old_config(world: pw.PipelineWorld) -> None:
    world.sim.rollback_at_step = 1  # the 5xx alarm trips while only the canary takes traffic
    first, second = _deploy_twice(world, STRATEGIES["CANARY"][0])
    assert second["status"] == "FAILED"
    old_config = json.loads(first["output"])["run"]["endpoint_config_name"]
    assert [(r["steps"], r["outcome"]) for r in world.sim.rollouts] == [([1], "RolledBack")]
    endpoint = world.sagemaker.describe_endpoint(EndpointName=pw.ENDPOINT)
    assert endpoint["EndpointStatus"] == "InService" and endpoint["EndpointConfigName"] == old_config
    failure = world.notifications()[-1]
    assert "rolled back" in failure and "step 1 (1 of 4 new instances" in failure, failure
    configs = [c["EndpointConfigName"] for c in world.sagemaker.list_endpoint_configs()["EndpointConfigs"]]
    assert configs == [old_config]  # Cleanup removed the rolled-back config and model


def test_a_linear_rollout_rolled_back_mid_shift(world: pw.PipelineWorld) -> None:
    world.sim.rollback_at_step = 3  # three of four instances were taking traffic
    first, second = _deploy_twice(world, STRATEGIES["LINEAR"][0])
    assert second["status"] == "FAILED"
    assert [(r["steps"], r["outcome"]) for r in world.sim.rollouts] == [([1, 2, 3], "RolledBack")]
    old_config = json.loads(first["output"])["run"]["endpoint_config_name"]
    assert world.sagemaker.describe_endpoint(EndpointName=pw.ENDPOINT)["EndpointConfigName"] == old_config


def test_a_rollout_aws_would_refuse_fails_before_any_money_is_spent(world: pw.PipelineWorld) -> None:
    manifest = {
        "version": "v1",
        "overrides": {"rollout_strategy": "CANARY", "rollout_step_type": "INSTANCE_COUNT", "rollout_step_size": 1},
    }
    execution = world.run(pw.upload_dataset(world.s3, manifest=manifest), "bad-rollout")
    assert execution["status"] == "FAILED"
    assert "1-instance fleet" in world.notifications()[-1]
    assert world.sim.calls == []  # no tuning, training or endpoint
