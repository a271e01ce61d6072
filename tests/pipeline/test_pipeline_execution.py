"""The real statemachine/pipeline.asl.json, run by moto's Step Functions interpreter, with the real
handlers in-process: every scenario of the issue, end to end. conftest.py evaluates each scenario's AWS
calls as IAM would, against template.yaml's policies (iam_model.py)."""

from __future__ import annotations

import json

import pipeline_world as pw
import pytest


def _output(execution: dict) -> dict:
    return json.loads(execution.get("output") or "{}")


def test_happy_path_creates_endpoint_and_autoscaling(world: pw.PipelineWorld) -> None:
    key = pw.upload_dataset(world.s3)
    execution = world.run(key, "happy")
    assert execution["status"] == "SUCCEEDED", execution
    states = world.states_entered(execution["executionArn"])
    assert states[:2] == ["ApplyDefaults", "Validate"]
    assert states[-3:] == ["ConfigureAutoscaling", "NotifySuccess", "Succeeded"]
    assert "WaitForTuning" in states and "WaitForEndpoint" in states
    out = _output(execution)
    run = out["run"]
    assert out["gate"]["passed"] is True
    assert out["deployment"]["action"] == "create"
    endpoint = world.sagemaker.describe_endpoint(EndpointName=pw.ENDPOINT)
    assert endpoint["EndpointStatus"] == "InService"
    assert endpoint["EndpointConfigName"] == run["endpoint_config_name"]
    # the final training job got the best trial's hyperparameters and train.py's static ones
    job = world.sagemaker.describe_training_job(TrainingJobName=run["training_job_name"])
    assert job["HyperParameters"]["lr"] == "0.0123" and job["HyperParameters"]["batch-size"] == "64"
    assert json.loads(job["HyperParameters"]["epochs"]) == int(pw.parameter_defaults()["Epochs"])
    targets = world.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [t["ResourceId"] for t in targets] == [f"endpoint/{pw.ENDPOINT}/variant/AllTraffic"]
    policies = world.autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert (
        policies[0]["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"]["PredefinedMetricType"]
        == "SageMakerVariantInvocationsPerInstance"
    )
    packages = world.sagemaker.list_model_packages(ModelPackageGroupName=pw.MODEL_PACKAGE_GROUP)[
        "ModelPackageSummaryList"
    ]
    assert [p["ModelApprovalStatus"] for p in packages] == ["Approved"]
    # the training source went to S3 content-addressed
    assert run["source_s3_uri"].startswith(f"s3://{pw.BUCKET}/code/sourcedir-")
    [message] = world.notifications()
    assert "SUCCEEDED" in message and pw.ENDPOINT in message


def _failure(world: pw.PipelineWorld, execution: dict) -> tuple[str, str]:
    assert execution["status"] == "FAILED", execution
    history = world.sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)["events"]
    failed = [e["executionFailedEventDetails"] for e in history if "executionFailedEventDetails" in e]
    assert failed, "no ExecutionFailed event"
    return failed[-1]["error"], failed[-1]["cause"]


def test_tuning_failure_cleans_up_and_notifies(world: pw.PipelineWorld) -> None:
    world.sim.tuning_outcome = "Failed"
    execution = world.run(pw.upload_dataset(world.s3), "tuning-failed")
    error, cause = _failure(world, execution)
    assert error == "SageMakerJobFailed"
    assert "no space left on device" in cause
    states = world.states_entered(execution["executionArn"])
    assert states[-3:] == ["Cleanup", "NotifyFailure", "PipelineFailed"]
    assert "StartTraining" not in states
    [message] = world.notifications()
    assert "FAILED" in message and "no space left on device" in message


def test_gate_rejects_a_model_below_the_threshold(world: pw.PipelineWorld) -> None:
    world.sim.test_accuracy = 0.31
    execution = world.run(pw.upload_dataset(world.s3), "rejected")
    assert execution["status"] == "SUCCEEDED"
    states = world.states_entered(execution["executionArn"])
    assert states[-2:] == ["NotifyRejected", "ModelRejected"]
    assert "Deploy" not in states
    assert world.sagemaker.list_endpoints()["Endpoints"] == []
    packages = world.sagemaker.list_model_packages(ModelPackageGroupName=pw.MODEL_PACKAGE_GROUP)[
        "ModelPackageSummaryList"
    ]
    assert [p["ModelApprovalStatus"] for p in packages] == ["Rejected"]
    [message] = world.notifications()
    assert "REJECTED" in message and "below the threshold" in message


def test_failed_new_endpoint_is_deleted_with_its_config_and_model(world: pw.PipelineWorld) -> None:
    world.sim.endpoint_outcome = "Failed"
    execution = world.run(pw.upload_dataset(world.s3), "endpoint-failed")
    error, cause = _failure(world, execution)
    assert error == "EndpointDeploymentFailed" and "ping health check" in cause
    assert world.sagemaker.list_endpoints()["Endpoints"] == []
    assert world.sagemaker.list_endpoint_configs()["EndpointConfigs"] == []
    assert world.sagemaker.list_models()["Models"] == []
    [message] = world.notifications()
    assert "delete_endpoint" in message and "delete_model" in message


@pytest.mark.filterwarnings("ignore:Exception\\(Throttled\\):UserWarning")
def test_throttled_call_is_retried_by_the_state_machine(world: pw.PipelineWorld, monkeypatch) -> None:
    # botocore's own retries would absorb the throttling; with one attempt the Lambda raises
    # ThrottlingError and the ASL's Retry (backoff) must call StartTraining again.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    world.sim.throttle_create_training = 1
    execution = world.run(pw.upload_dataset(world.s3), "throttled")
    assert execution["status"] == "SUCCEEDED", execution
    assert [name for name, _ in world.invocations].count("start_training") == 2
    assert world.sim.calls.count("CreateTrainingJob") == 2


def test_duplicate_trigger_is_ignored(world: pw.PipelineWorld) -> None:
    key = pw.upload_dataset(world.s3)
    first = world.run(key, "first")
    assert first["status"] == "SUCCEEDED"
    again = world.run(key, "duplicate-event")  # the same event delivered twice / the same manifest re-uploaded
    assert again["status"] == "SUCCEEDED"
    assert world.states_entered(again["executionArn"]) == ["ApplyDefaults", "Validate", "DuplicateIgnored"]
    assert "already ran" in _output(again)["error"]["Cause"]
    assert world.sim.calls.count("CreateHyperParameterTuningJob") == 1


def test_new_version_updates_the_live_endpoint_blue_green(world: pw.PipelineWorld) -> None:
    first = world.run(pw.upload_dataset(world.s3, manifest={"version": "v1"}), "v1")
    assert first["status"] == "SUCCEEDED"
    old_config = _output(first)["run"]["endpoint_config_name"]
    world.sim.test_accuracy = 0.93  # better than the live 0.91
    second = world.run(pw.upload_dataset(world.s3, manifest={"version": "v2"}), "v2")
    assert second["status"] == "SUCCEEDED", second
    out = _output(second)
    assert out["gate"]["live_accuracy"] == 0.91 and out["gate"]["passed"]
    assert out["deployment"] == {
        **out["deployment"],
        "action": "update",
        "previous_config": old_config,
        "autoscaling_deregistered": False,
    }
    assert world.sim.calls.count("UpdateEndpoint") == 1 and world.sim.calls.count("CreateEndpoint") == 1
    endpoint = world.sagemaker.describe_endpoint(EndpointName=pw.ENDPOINT)
    assert endpoint["EndpointConfigName"] == out["run"]["endpoint_config_name"] != old_config


def test_a_worse_model_does_not_replace_the_live_one(world: pw.PipelineWorld) -> None:
    first = world.run(pw.upload_dataset(world.s3, manifest={"version": "v1"}), "v1")
    live_config = _output(first)["run"]["endpoint_config_name"]
    world.sim.test_accuracy = 0.85  # above the threshold, below the live 0.91
    second = world.run(pw.upload_dataset(world.s3, manifest={"version": "v2"}), "v2")
    assert second["status"] == "SUCCEEDED"
    assert world.states_entered(second["executionArn"])[-2:] == ["NotifyRejected", "ModelRejected"]
    assert "worse than the live model's 0.9100" in _output(second)["gate"]["reason"]
    assert world.sagemaker.describe_endpoint(EndpointName=pw.ENDPOINT)["EndpointConfigName"] == live_config
    assert world.sim.calls.count("UpdateEndpoint") == 0


def test_instance_type_change_deregisters_autoscaling_then_registers_again(world: pw.PipelineWorld) -> None:
    assert world.run(pw.upload_dataset(world.s3, manifest={"version": "v1"}), "v1")["status"] == "SUCCEEDED"
    manifest = {"version": "v2", "overrides": {"endpoint_instance_type": "ml.c5.xlarge"}}
    second = world.run(pw.upload_dataset(world.s3, manifest=manifest), "v2")
    assert second["status"] == "SUCCEEDED", second
    assert _output(second)["deployment"]["autoscaling_deregistered"] is True
    targets = world.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert len(targets) == 1


def test_rolled_back_update_keeps_the_old_model_and_its_autoscaling(world: pw.PipelineWorld) -> None:
    first = world.run(pw.upload_dataset(world.s3, manifest={"version": "v1"}), "v1")
    old_config = _output(first)["run"]["endpoint_config_name"]
    world.sim.update_outcome = "RolledBack"
    manifest = {"version": "v2", "overrides": {"endpoint_instance_type": "ml.c5.xlarge"}}
    second = world.run(pw.upload_dataset(world.s3, manifest=manifest), "v2")
    error, cause = _failure(world, second)
    assert error == "EndpointDeploymentFailed" and "rolled back" in cause
    assert world.sagemaker.describe_endpoint(EndpointName=pw.ENDPOINT)["EndpointConfigName"] == old_config
    assert [c["EndpointConfigName"] for c in world.sagemaker.list_endpoint_configs()["EndpointConfigs"]] == [old_config]
    targets = world.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert len(targets) == 1  # deregistered for the update, registered again by Cleanup


def test_malformed_manifest_fails_fast_with_a_clear_message(world: pw.PipelineWorld) -> None:
    key = pw.upload_dataset(world.s3, manifest={"version": "v1", "overrides": {"epochs": "many"}})
    execution = world.run(key, "bad-manifest")
    error, cause = _failure(world, execution)
    assert error == "InvalidDataset" and "epochs" in cause
    assert world.states_entered(execution["executionArn"])[-3:] == ["Cleanup", "NotifyFailure", "PipelineFailed"]
    assert world.sim.calls == []
    [message] = world.notifications()
    assert "epochs" in message


def test_missing_split_fails_fast(world: pw.PipelineWorld) -> None:
    key = pw.upload_dataset(world.s3, splits=("train", "valid"))
    error, cause = _failure(world, world.run(key, "no-test-split"))
    assert error == "InvalidDataset" and "test" in cause and "missing splits" in cause
    assert world.sim.calls == []
