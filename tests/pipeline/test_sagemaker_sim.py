"""The simulated SageMaker world behaves as the service documents, call by call (boto3 against moto with
SageMakerSim installed): what the pipeline scenarios rely on, checked without the pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pipeline_world as pw
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

OLD, NEW = "imgclf-old", "imgclf-new"
ALARMS = {"AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "a"}]}}


@pytest.fixture
def sm(aws_env: None, sim: pw.SageMakerSim) -> Iterator[Any]:
    sim.polls = 1  # one describe after a create/update sees it in progress, the next its outcome
    with mock_aws():
        client = boto3.client("sagemaker", region_name=pw.REGION)
        for name, instance_type in ((OLD, "ml.m5.large"), (NEW, "ml.m5.large"), ("imgclf-c5", "ml.c5.xlarge")):
            client.create_model(
                ModelName=name, ExecutionRoleArn=pw.ROLE_ARN, PrimaryContainer={"Image": "i", "ModelDataUrl": "s3://b/m"}
            )
            client.create_endpoint_config(
                EndpointConfigName=name,
                ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1,
                                     "InstanceType": instance_type, "InitialVariantWeight": 1.0}],
            )
        client.create_endpoint(EndpointName=pw.ENDPOINT, EndpointConfigName=OLD)
        assert client.describe_endpoint(EndpointName=pw.ENDPOINT)["EndpointStatus"] == "Creating"
        assert client.describe_endpoint(EndpointName=pw.ENDPOINT)["EndpointStatus"] == "InService"
        client.update_endpoint_weights_and_capacities(  # autoscaling scaled the fleet out to 3
            EndpointName=pw.ENDPOINT,
            DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 3}],
        )
        yield client


def _count(sm: Any) -> int:
    return sm.describe_endpoint(EndpointName=pw.ENDPOINT)["ProductionVariants"][0]["CurrentInstanceCount"]


@pytest.mark.parametrize(
    ("retain", "exclude", "instances"),
    [
        (None, None, 1),  # RetainAllVariantProperties defaults to false: the new config's InitialInstanceCount
        (True, None, 3),  # retained: the endpoint's latest DesiredInstanceCount
        (True, ["DesiredInstanceCount"], 1),  # excluded: from the new config again
        (False, None, 1),
    ],
)
def test_instance_count_after_an_update(
    sm: Any, retain: bool | None, exclude: list[str] | None, instances: int
) -> None:
    request: dict[str, Any] = {"EndpointName": pw.ENDPOINT, "EndpointConfigName": NEW, "DeploymentConfig": ALARMS}
    if retain is not None:
        request["RetainAllVariantProperties"] = retain
    if exclude:
        request["ExcludeRetainedVariantProperties"] = [{"VariantPropertyType": p} for p in exclude]
    sm.update_endpoint(**request)
    updating = sm.describe_endpoint(EndpointName=pw.ENDPOINT)
    # while updating, the old config and fleet serve; the new deployment is pending
    assert updating["EndpointStatus"] == "Updating" and updating["EndpointConfigName"] == OLD
    assert updating["PendingDeploymentSummary"]["EndpointConfigName"] == NEW
    assert updating["PendingDeploymentSummary"]["ProductionVariants"][0]["DesiredInstanceCount"] == instances
    assert updating["ProductionVariants"][0]["CurrentInstanceCount"] == 3
    done = sm.describe_endpoint(EndpointName=pw.ENDPOINT)
    assert done["EndpointStatus"] == "InService" and done["EndpointConfigName"] == NEW
    assert "PendingDeploymentSummary" not in done
    assert _count(sm) == instances


def test_a_rolled_back_update_is_in_service_on_the_old_config_and_fleet(sm: Any, sim: pw.SageMakerSim) -> None:
    sim.update_outcome = "RolledBack"
    sm.update_endpoint(EndpointName=pw.ENDPOINT, EndpointConfigName=NEW, DeploymentConfig=ALARMS)
    sm.describe_endpoint(EndpointName=pw.ENDPOINT)
    done = sm.describe_endpoint(EndpointName=pw.ENDPOINT)
    assert (done["EndpointStatus"], done["EndpointConfigName"]) == ("InService", OLD)
    assert "PendingDeploymentSummary" not in done and _count(sm) == 3


def test_update_rollback_failed_keeps_both_configs_in_use(sm: Any, sim: pw.SageMakerSim) -> None:
    sim.update_outcome = "UpdateRollbackFailed"
    sm.update_endpoint(EndpointName=pw.ENDPOINT, EndpointConfigName=NEW, DeploymentConfig=ALARMS)
    sm.describe_endpoint(EndpointName=pw.ENDPOINT)
    for _ in range(3):  # terminal: it stays so
        described = sm.describe_endpoint(EndpointName=pw.ENDPOINT)
        assert described["EndpointStatus"] == "UpdateRollbackFailed"
        assert described["PendingDeploymentSummary"]["EndpointConfigName"] == NEW
    with pytest.raises(ClientError, match="in-progress"):
        sm.update_endpoint(EndpointName=pw.ENDPOINT, EndpointConfigName=NEW)


def test_an_update_in_progress_cannot_be_updated_again(sm: Any) -> None:
    sm.update_endpoint(EndpointName=pw.ENDPOINT, EndpointConfigName=NEW, DeploymentConfig=ALARMS)
    with pytest.raises(ClientError, match="in-progress"):
        sm.update_endpoint(EndpointName=pw.ENDPOINT, EndpointConfigName=OLD)


def test_an_instance_type_change_fails_while_autoscaling_is_registered(sm: Any) -> None:
    autoscaling = boto3.client("application-autoscaling", region_name=pw.REGION)
    target = {"ServiceNamespace": "sagemaker", "ResourceId": f"endpoint/{pw.ENDPOINT}/variant/AllTraffic",
              "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}
    autoscaling.register_scalable_target(**target, MinCapacity=1, MaxCapacity=4)
    with pytest.raises(ClientError, match="deregister it before changing its instance type") as raised:
        sm.update_endpoint(EndpointName=pw.ENDPOINT, EndpointConfigName="imgclf-c5")
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    sm.update_endpoint(EndpointName=pw.ENDPOINT, EndpointConfigName=NEW)  # same type: allowed
    sm.describe_endpoint(EndpointName=pw.ENDPOINT)
    assert sm.describe_endpoint(EndpointName=pw.ENDPOINT)["EndpointStatus"] == "InService"
    autoscaling.deregister_scalable_target(**target)
    sm.update_endpoint(EndpointName=pw.ENDPOINT, EndpointConfigName="imgclf-c5")  # deregistered: allowed


def test_names_are_unique_and_a_new_config_may_be_invisible_for_a_moment(sm: Any, sim: pw.SageMakerSim) -> None:
    with pytest.raises(ClientError, match="Cannot create already existing endpoint configuration"):
        sm.create_endpoint_config(
            EndpointConfigName=NEW,
            ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": NEW, "InitialInstanceCount": 1,
                                 "InstanceType": "ml.m5.large"}],
        )
    with pytest.raises(ClientError, match="Cannot create already existing model"):
        sm.create_model(ModelName=NEW, ExecutionRoleArn=pw.ROLE_ARN, PrimaryContainer={"Image": "i"})
    sim.config_not_visible_for = 1
    sm.create_endpoint_config(
        EndpointConfigName="imgclf-late",
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": NEW, "InitialInstanceCount": 1,
                             "InstanceType": "ml.m5.large"}],
    )
    with pytest.raises(ClientError, match="Could not find endpoint configuration"):
        sm.create_endpoint(EndpointName="imgclf-other", EndpointConfigName="imgclf-late")
    sm.create_endpoint(EndpointName="imgclf-other", EndpointConfigName="imgclf-late")  # visible now
    creating = sm.describe_endpoint(EndpointName="imgclf-other")
    assert creating["EndpointStatus"] == "Creating"
    assert creating["PendingDeploymentSummary"]["EndpointConfigName"] == "imgclf-late"


def _rollout(routing: dict[str, Any]) -> dict[str, Any]:
    return {
        "EndpointName": pw.ENDPOINT,
        "EndpointConfigName": NEW,
        "RetainAllVariantProperties": True,  # the fleet of 3 the update deploys
        "DeploymentConfig": {
            "BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {"WaitIntervalInSeconds": 60, **routing}},
            **ALARMS,
        },
    }


def _statuses_until_in_service(sm: Any) -> list[str]:
    statuses = []
    while not statuses or statuses[-1] == "Updating":
        statuses.append(sm.describe_endpoint(EndpointName=pw.ENDPOINT)["EndpointStatus"])
        assert len(statuses) < 20
    return statuses


def test_a_canary_update_stays_updating_through_its_steps(sm: Any, sim: pw.SageMakerSim) -> None:
    sm.update_endpoint(**_rollout({"Type": "CANARY", "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 50}}))
    # each of the two steps is seen Updating for `polls` (1) describes; the next describe ends its baking
    assert _statuses_until_in_service(sm) == ["Updating", "Updating", "Updating", "InService"]
    assert sim.rollouts[-1]["steps"] == [1, 3] and sim.rollouts[-1]["outcome"] == "Completed"
    assert sm.describe_endpoint(EndpointName=pw.ENDPOINT)["EndpointConfigName"] == NEW


def test_a_linear_update_rolled_back_mid_shift_serves_the_old_config(sm: Any, sim: pw.SageMakerSim) -> None:
    sim.rollback_at_step = 2
    sm.update_endpoint(**_rollout({"Type": "LINEAR", "LinearStepSize": {"Type": "INSTANCE_COUNT", "Value": 1}}))
    assert _statuses_until_in_service(sm)[-1] == "InService"
    assert sim.rollouts[-1]["steps"] == [1, 2] and sim.rollouts[-1]["outcome"] == "RolledBack"
    endpoint = sm.describe_endpoint(EndpointName=pw.ENDPOINT)
    assert endpoint["EndpointConfigName"] == OLD and "step 2 (2 of 3" in endpoint["FailureReason"]
    assert _count(sm) == 3  # the old fleet, whole again


@pytest.mark.parametrize(
    "routing",
    [
        {"Type": "CANARY", "CanarySize": {"Type": "INSTANCE_COUNT", "Value": 2}},  # 67% of 3
        {"Type": "LINEAR", "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 60}},
        {"Type": "CANARY"},  # no size
    ],
)
def test_traffic_routing_aws_refuses(sm: Any, routing: dict[str, Any]) -> None:
    with pytest.raises(ClientError) as raised:
        sm.update_endpoint(**_rollout(routing))
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert sm.describe_endpoint(EndpointName=pw.ENDPOINT)["EndpointStatus"] == "InService"
