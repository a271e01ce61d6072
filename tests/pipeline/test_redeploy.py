"""Roll back or redeploy by hand (issue 10, item 4): an execution started with
{"redeploy": {"model_package_arn": ...}} deploys that approved version of the stack's model package group
through the same Deploy / WaitForEndpoint / SmokeTest / ConfigureAutoscaling states, with no dataset,
tuning, training or gate; anything else it names is refused before anything changes.

The real ASL under moto with the real handlers (pipeline_world), every request checked by botocore and by
the IAM evaluation (tests/pipeline/iam_model.py, the autouse fixture of conftest.py).
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import boto3
import pipeline_world as pw
import pytest
from mlpipeline import redeploy
from mlpipeline.errors import RedeployRefused
from mlpipeline.settings import build_settings
from moto.s3.models import s3_backends
from test_requests import asl_defaults

from imgclf import gate, monitoring

GROUP_ARN = pw.lambda_environment()["MODEL_PACKAGE_GROUP_ARN"]
PACKAGE_PREFIX = f"arn:aws:sagemaker:{pw.REGION}:{pw.ACCOUNT}:model-package/{pw.MODEL_PACKAGE_GROUP}"
# Version 1's validation baseline, as train.py writes it into metadata.json (imgclf.monitoring.baseline).
V1_BASELINE = {"split": "valid", "count": 80, "entropy_top_k": monitoring.ENTROPY_TOP_K,
               monitoring.TOP1_PROBABILITY.name: {"mean": 0.7, "std": 0.2},
               monitoring.PREDICTION_ENTROPY.name: {"mean": 0.5, "std": 0.1}}
TRAINING_STATES = {"Validate", "PrepareFeatures", "StartTuning", "StartTraining", "QualityGate"}




def _redeploy(world: pw.PipelineWorld, package_arn: str, name: str) -> dict:
    event = {"redeploy": {"model_package_arn": package_arn}}
    return world.run("", name, event=event)


def _add_metadata(url: str, baseline: dict[str, Any]) -> None:
    """metadata.json beside the smoke sample in a model.tar.gz, as train.py leaves it (SageMakerSim ships
    only the sample): moto's S3 backend directly, the training job's own write."""
    bucket, key = url.removeprefix("s3://").split("/", 1)
    backend = s3_backends[pw.ACCOUNT]["aws"]
    members: list[tuple[str, bytes]] = []
    with tarfile.open(fileobj=io.BytesIO(backend.get_object(bucket, key).value), mode="r:gz") as archive:
        for member in archive:
            handle = archive.extractfile(member)
            assert handle is not None
            members.append((member.name, handle.read()))
    members.insert(0, ("metadata.json", json.dumps({"backbone": "resnet18", "prediction_baseline": baseline}).encode()))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    backend.put_object(bucket, key, buffer.getvalue())


def _served(world: pw.PipelineWorld) -> tuple[str, dict]:
    """(the config the endpoint serves, its model's container), once the endpoint is InService."""
    for _ in range(10):  # the sim's polls: Updating until it ends
        endpoint = world.sagemaker.describe_endpoint(EndpointName=pw.ENDPOINT)
        if endpoint["EndpointStatus"] == "InService":
            break
    config = world.sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    model = world.sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    return endpoint["EndpointConfigName"], model["PrimaryContainer"]


def _packages(world: pw.PipelineWorld) -> list[dict]:
    return world.sagemaker.list_model_packages(ModelPackageGroupName=pw.MODEL_PACKAGE_GROUP)["ModelPackageSummaryList"]


def _resources(world: pw.PipelineWorld) -> tuple[list[str], list[str]]:
    models = sorted(m["ModelName"] for m in world.sagemaker.list_models()["Models"])
    configs = sorted(c["EndpointConfigName"] for c in world.sagemaker.list_endpoint_configs()["EndpointConfigs"])
    return models, configs


# ---------------------------------------------------------------------------------------------------
# Scenarios.


def test_a_redeploy_of_version_1_puts_its_model_back_through_deploy_smoke_test_and_autoscaling(
    world: pw.PipelineWorld,
) -> None:
    first = world.run(pw.upload_dataset(world.s3, manifest={"version": "v1"}), "v1")
    assert first["status"] == "SUCCEEDED", first
    v1 = pw.execution_output(first)
    v1_url = v1["gate"]["model_data_url"]
    _add_metadata(v1_url, V1_BASELINE)
    world.sim.test_accuracy = 0.93  # version 2 beats the live model
    second = world.run(pw.upload_dataset(world.s3, manifest={"version": "v2"}), "v2")
    assert second["status"] == "SUCCEEDED", second
    v2 = pw.execution_output(second)
    assert _served(world)[0] == v2["run"]["endpoint_config_name"]
    assert [p["ModelApprovalStatus"] for p in _packages(world)] == ["Approved", "Approved"]
    world.notifications()
    training_jobs = world.sim.calls.count("CreateTrainingJob")
    package_1 = v1["gate"]["model_package_arn"]
    assert package_1 == f"{PACKAGE_PREFIX}/1"

    back = _redeploy(world, package_1, "rollback-to-v1")

    assert back["status"] == "SUCCEEDED", back
    states = world.states_entered(back["executionArn"])
    assert states[:4] == ["ApplyDefaults", "Redeploy?", "PrepareRedeploy", "UseRedeployPlan"]
    assert not TRAINING_STATES & set(states)
    assert states.index("Deploy") < states.index("SmokeTest") < states.index("ConfigureAutoscaling")
    out = pw.execution_output(back)
    run = out["run"]
    assert run["run_id"].startswith(f"{pw.PREFIX}-redeploy-v1-")
    assert run["run_id"] not in (v1["run"]["run_id"], v2["run"]["run_id"])
    assert run["redeploy"] == {"model_package_arn": package_1, "model_package_version": 1,
                               "trained_by_run": v1["run"]["run_id"], "model_data_url": v1_url}
    # the same Deploy path: a blue/green update of the live endpoint to a new config with version 1's model
    assert out["deployment"]["action"] == "update"
    assert out["deployment"]["previous_config"] == v2["run"]["endpoint_config_name"]
    config, container = _served(world)
    assert config == run["endpoint_config_name"]
    package = world.sagemaker.describe_model_package(ModelPackageName=package_1)
    [registered] = package["InferenceSpecification"]["Containers"]
    assert container["ModelDataUrl"] == v1_url == registered["ModelDataUrl"]
    assert container["Image"] == registered["Image"]
    # the live accuracy the next run's gate compares with is version 1's again
    config_arn = f"arn:aws:sagemaker:{pw.REGION}:{pw.ACCOUNT}:endpoint-config/{config}"
    assert gate.accuracy_from_tags(world.sagemaker.list_tags(ResourceArn=config_arn)["Tags"]) == pytest.approx(0.91)
    # smoke-tested on the served config, with version 1's recorded sample
    assert out["smoke_test"]["passed"] is True and out["smoke_test"]["endpoint_config_name"] == config
    # autoscaled, and the drift alarm set from version 1's baseline (its model.tar.gz's metadata.json)
    targets = world.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [t["ResourceId"] for t in targets] == [f"endpoint/{pw.ENDPOINT}/variant/AllTraffic"]
    expected = monitoring.drift_threshold(V1_BASELINE)
    assert out["autoscaling"]["drift_alarm"]["threshold"] == pytest.approx(expected, abs=1e-6)
    cloudwatch = boto3.client("cloudwatch", region_name=pw.REGION)
    [alarm] = cloudwatch.describe_alarms(AlarmNames=[f"{pw.ENDPOINT}-confidence-drift"])["MetricAlarms"]
    assert alarm["Threshold"] == pytest.approx(expected, abs=1e-6)
    # nothing trained, nothing registered
    assert world.sim.calls.count("CreateTrainingJob") == training_jobs
    assert len(_packages(world)) == 2
    # the report and the notification say what happened
    assert out["report"]["report_s3_uri"] == f"s3://{pw.BUCKET}/reports/{run['run_id']}/index.html"
    page = world.s3.get_object(Bucket=pw.BUCKET, Key=f"reports/{run['run_id']}/index.html")["Body"].read().decode()
    assert f"Redeploy of model package {package_1}" in page
    [message] = world.notifications()
    assert f"redeploy of model package {package_1}" in message and "SUCCEEDED" in message
    assert f"now serves model {run['model_name']}" in message


def test_a_rejected_version_is_refused_and_the_endpoint_is_unchanged(world: pw.PipelineWorld) -> None:
    first = world.run(pw.upload_dataset(world.s3, manifest={"version": "v1"}), "v1")
    assert first["status"] == "SUCCEEDED", first
    world.sim.test_accuracy = 0.5  # below the threshold: registered Rejected, never deployed
    second = world.run(pw.upload_dataset(world.s3, manifest={"version": "v2"}), "v2")
    assert second["status"] == "SUCCEEDED" and pw.execution_output(second)["gate"]["passed"] is False
    assert [p["ModelApprovalStatus"] for p in _packages(world)] == ["Approved", "Rejected"]
    before = (_served(world), _resources(world))
    world.notifications()

    refused = _redeploy(world, f"{PACKAGE_PREFIX}/2", "redeploy-rejected")

    error, cause = world.failure(refused)
    assert error == "RedeployRefused"
    assert "is Rejected, not Approved" in cause and "update-model-package" in cause
    states = world.states_entered(refused["executionArn"])
    assert "Deploy" not in states and states[-3:] == ["ReportFailure", "NotifyFailure", "PipelineFailed"]
    assert (_served(world), _resources(world)) == before
    [message] = world.notifications()
    assert f"redeploy of model package {PACKAGE_PREFIX}/2" in message and "RedeployRefused" in message


def test_a_package_of_another_group_is_refused_before_any_call(world: pw.PipelineWorld) -> None:
    first = world.run(pw.upload_dataset(world.s3), "v1")
    assert first["status"] == "SUCCEEDED", first
    v1 = pw.execution_output(first)
    world.sagemaker.create_model_package_group(ModelPackageGroupName="other-models")
    foreign = world.sagemaker.create_model_package(
        ModelPackageGroupName="other-models", ModelApprovalStatus="Approved",
        InferenceSpecification={"Containers": [{"Image": v1["run"]["inference_image_uri"],
                                                "ModelDataUrl": v1["gate"]["model_data_url"]}],
                                "SupportedContentTypes": ["image/jpeg"],
                                "SupportedResponseMIMETypes": ["application/json"]},
    )["ModelPackageArn"]
    before = (_served(world), _resources(world))
    calls = len(pw.AWS_CALL_LOG)

    refused = _redeploy(world, foreign, "redeploy-foreign")

    error, cause = world.failure(refused)
    assert error == "RedeployRefused" and "is not a version of this stack's model package group" in cause
    assert not [c for c in pw.AWS_CALL_LOG[calls:] if c.operation == "DescribeModelPackage"]
    assert (_served(world), _resources(world)) == before


def test_a_version_that_does_not_exist_is_refused(world: pw.PipelineWorld) -> None:
    refused = _redeploy(world, f"{PACKAGE_PREFIX}/7", "redeploy-missing")
    error, cause = world.failure(refused)
    assert error == "RedeployRefused" and "cannot be described" in cause
    assert world.sagemaker.list_endpoints()["Endpoints"] == []


# ---------------------------------------------------------------------------------------------------
# The pure decisions.


@pytest.mark.parametrize(
    "request_",
    [
        {"model_package_arn": f"{PACKAGE_PREFIX}"},  # no version
        {"model_package_arn": f"{PACKAGE_PREFIX}/0"},
        {"model_package_arn": f"{PACKAGE_PREFIX}/1/extra"},
        {"model_package_arn": "imgclf-models/1"},
        {"model_package_arn": 1},
        {"model_package_arn": f"{PACKAGE_PREFIX}/1", "settings": {"endpoint_instance_count": 3}},
        "arn:aws:sagemaker:us-east-1:123456789012:model-package/imgclf-models/1",
        None,
    ],
)
def test_a_malformed_request_is_refused(request_: Any) -> None:
    with pytest.raises(RedeployRefused):
        redeploy.package_arn_of(request_, GROUP_ARN)


@pytest.mark.parametrize(
    "arn",
    [
        f"arn:aws:sagemaker:eu-west-1:{pw.ACCOUNT}:model-package/{pw.MODEL_PACKAGE_GROUP}/1",  # another region
        f"arn:aws:sagemaker:{pw.REGION}:210987654321:model-package/{pw.MODEL_PACKAGE_GROUP}/1",  # another account
        f"arn:aws:sagemaker:{pw.REGION}:{pw.ACCOUNT}:model-package/{pw.MODEL_PACKAGE_GROUP}x/1",
    ],
)
def test_a_version_outside_the_stacks_group_is_refused(arn: str) -> None:
    with pytest.raises(RedeployRefused, match="not a version of this stack's model package group"):
        redeploy.package_arn_of({"model_package_arn": arn}, GROUP_ARN)
    assert redeploy.package_arn_of({"model_package_arn": f"{PACKAGE_PREFIX}/12"}, GROUP_ARN) == f"{PACKAGE_PREFIX}/12"


def _package(**changes: Any) -> dict[str, Any]:
    package = {
        "ModelPackageArn": f"{PACKAGE_PREFIX}/3", "ModelPackageGroupName": pw.MODEL_PACKAGE_GROUP,
        "ModelPackageVersion": 3, "ModelApprovalStatus": "Approved",
        "InferenceSpecification": {
            "Containers": [{"Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6-cpu-py312",
                            "ModelDataUrl": f"s3://{pw.BUCKET}/models/imgclf-x-final/output/model.tar.gz"}],
            "SupportedRealtimeInferenceInstanceTypes": ["ml.m5.large"]},
        "CustomerMetadataProperties": {"run_id": "imgclf-x", "dataset": "dogImages", "test_accuracy": "0.910000"},
    }
    package.update(changes)
    return package


def test_what_makes_a_package_undeployable_here() -> None:
    settings = build_settings(asl_defaults())
    container = redeploy.check_package(_package(), pw.MODEL_PACKAGE_GROUP, settings, pw.BUCKET)
    assert container["Image"].endswith("cpu-py312")
    for status in ("PendingManualApproval", "Rejected"):
        with pytest.raises(RedeployRefused, match=f"is {status}, not Approved"):
            redeploy.check_package(_package(ModelApprovalStatus=status), pw.MODEL_PACKAGE_GROUP, settings, pw.BUCKET)
    with pytest.raises(RedeployRefused, match="not under s3://"):
        redeploy.check_package(_package(), pw.MODEL_PACKAGE_GROUP, settings, "another-bucket")
    gpu = build_settings(asl_defaults(), {"endpoint_instance_type": "ml.g5.xlarge"})
    with pytest.raises(RedeployRefused, match=r"chosen for ml\.m5\.large"):
        redeploy.check_package(_package(), pw.MODEL_PACKAGE_GROUP, gpu, pw.BUCKET)
    unmeasured = _package(CustomerMetadataProperties={"test_accuracy": "none"})
    container = redeploy.check_package(unmeasured, pw.MODEL_PACKAGE_GROUP, settings, pw.BUCKET)
    with pytest.raises(RedeployRefused, match="records no test accuracy"):
        redeploy.plan(package=unmeasured, container=container, settings=settings, prefix=pw.PREFIX,
                      region=pw.REGION, bucket=pw.BUCKET, execution_arn="arn:x", baseline=None)


def test_run_ids_are_deterministic_per_package_and_execution() -> None:
    execution = f"arn:aws:states:{pw.REGION}:{pw.ACCOUNT}:execution:{pw.STATE_MACHINE}:rollback"
    first = redeploy.redeploy_run_id(pw.PREFIX, f"{PACKAGE_PREFIX}/1", execution)
    assert first == redeploy.redeploy_run_id(pw.PREFIX, f"{PACKAGE_PREFIX}/1", execution)  # a retried task
    assert first != redeploy.redeploy_run_id(pw.PREFIX, f"{PACKAGE_PREFIX}/1", execution + "-again")
    assert first != redeploy.redeploy_run_id(pw.PREFIX, f"{PACKAGE_PREFIX}/2", execution)
    assert first.startswith("imgclf-redeploy-v1-") and len(first) <= 32  # a SageMaker model/config name
