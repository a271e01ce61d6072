"""The real statemachine/pipeline.asl.json, run by moto's Step Functions interpreter, with the real
handlers in-process: every scenario of the issue, end to end. conftest.py evaluates each scenario's AWS
calls as IAM would, against template.yaml's policies (iam_model.py)."""

from __future__ import annotations

import json

import boto3
import pipeline_world as pw
import pytest
from mlpipeline import polling

from imgclf import monitoring


def test_happy_path_creates_endpoint_and_autoscaling(world: pw.PipelineWorld) -> None:
    key = pw.upload_dataset(world.s3)
    execution = world.run(key, "happy")
    assert execution["status"] == "SUCCEEDED", execution
    states = world.states_entered(execution["executionArn"])
    assert states[:3] == ["ApplyDefaults", "Redeploy?", "Validate"]
    assert states[-4:] == ["ConfigureAutoscaling", "ReportSuccess", "NotifySuccess", "Succeeded"]
    assert "WaitForTuning" in states and "WaitForEndpoint" in states
    out = pw.execution_output(execution)
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
    # The confidence-drift alarm got the deployed model's threshold, from its training job's baseline metrics
    # (the sim's: 120 validation images, mean 0.86, sd 0.11) through the gate (imgclf.monitoring's derivation).
    baseline = {"count": 120, "Top1Probability": {"mean": 0.86, "std": 0.11}}
    assert out["gate"]["prediction_baseline"] == baseline
    expected = monitoring.drift_threshold(baseline)
    assert out["autoscaling"]["drift_alarm"]["threshold"] == pytest.approx(expected, abs=1e-6)
    cloudwatch = boto3.client("cloudwatch", region_name=pw.REGION)
    [alarm] = cloudwatch.describe_alarms(AlarmNames=[f"{pw.ENDPOINT}-confidence-drift"])["MetricAlarms"]
    assert alarm["Threshold"] == pytest.approx(expected, abs=1e-6) and alarm["AlarmActions"] == [world.topic_arn]



def test_tuning_failure_cleans_up_and_notifies(world: pw.PipelineWorld) -> None:
    world.sim.tuning_outcome = "Failed"
    execution = world.run(pw.upload_dataset(world.s3), "tuning-failed")
    error, cause = world.failure(execution)
    assert error == "SageMakerJobFailed"
    assert "no space left on device" in cause
    states = world.states_entered(execution["executionArn"])
    assert states[-4:] == ["Cleanup", "ReportFailure", "NotifyFailure", "PipelineFailed"]
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
    error, cause = world.failure(execution)
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
    assert world.states_entered(again["executionArn"]) == ["ApplyDefaults", "Redeploy?", "Validate", "DuplicateIgnored"]
    assert "already ran" in pw.execution_output(again)["error"]["Cause"]
    assert world.sim.calls.count("CreateHyperParameterTuningJob") == 1


def test_new_version_updates_the_live_endpoint_blue_green(world: pw.PipelineWorld) -> None:
    first = world.run(pw.upload_dataset(world.s3, manifest={"version": "v1"}), "v1")
    assert first["status"] == "SUCCEEDED"
    old_config = pw.execution_output(first)["run"]["endpoint_config_name"]
    world.sim.test_accuracy = 0.93  # better than the live 0.91
    second = world.run(pw.upload_dataset(world.s3, manifest={"version": "v2"}), "v2")
    assert second["status"] == "SUCCEEDED", second
    out = pw.execution_output(second)
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
    live_config = pw.execution_output(first)["run"]["endpoint_config_name"]
    world.sim.test_accuracy = 0.85  # above the threshold, below the live 0.91
    second = world.run(pw.upload_dataset(world.s3, manifest={"version": "v2"}), "v2")
    assert second["status"] == "SUCCEEDED"
    assert world.states_entered(second["executionArn"])[-2:] == ["NotifyRejected", "ModelRejected"]
    assert "worse than the live model's 0.9100" in pw.execution_output(second)["gate"]["reason"]
    assert world.sagemaker.describe_endpoint(EndpointName=pw.ENDPOINT)["EndpointConfigName"] == live_config
    assert world.sim.calls.count("UpdateEndpoint") == 0


def test_instance_type_change_deregisters_autoscaling_then_registers_again(world: pw.PipelineWorld) -> None:
    assert world.run(pw.upload_dataset(world.s3, manifest={"version": "v1"}), "v1")["status"] == "SUCCEEDED"
    manifest = {"version": "v2", "overrides": {"endpoint_instance_type": "ml.c5.xlarge"}}
    second = world.run(pw.upload_dataset(world.s3, manifest=manifest), "v2")
    assert second["status"] == "SUCCEEDED", second
    assert pw.execution_output(second)["deployment"]["autoscaling_deregistered"] is True
    targets = world.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert len(targets) == 1


def test_rolled_back_update_keeps_the_old_model_and_its_autoscaling(world: pw.PipelineWorld) -> None:
    first = world.run(pw.upload_dataset(world.s3, manifest={"version": "v1"}), "v1")
    old_config = pw.execution_output(first)["run"]["endpoint_config_name"]
    world.sim.update_outcome = "RolledBack"
    manifest = {"version": "v2", "overrides": {"endpoint_instance_type": "ml.c5.xlarge"}}
    second = world.run(pw.upload_dataset(world.s3, manifest=manifest), "v2")
    error, cause = world.failure(second)
    assert error == "EndpointDeploymentFailed" and "rolled back" in cause
    assert world.sagemaker.describe_endpoint(EndpointName=pw.ENDPOINT)["EndpointConfigName"] == old_config
    assert [c["EndpointConfigName"] for c in world.sagemaker.list_endpoint_configs()["EndpointConfigs"]] == [old_config]
    targets = world.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert len(targets) == 1  # deregistered for the update, registered again by Cleanup


def test_malformed_manifest_fails_fast_with_a_clear_message(world: pw.PipelineWorld) -> None:
    key = pw.upload_dataset(world.s3, manifest={"version": "v1", "overrides": {"epochs": "many"}})
    execution = world.run(key, "bad-manifest")
    error, cause = world.failure(execution)
    assert error == "InvalidDataset" and "epochs" in cause
    assert world.states_entered(execution["executionArn"])[-4:] == [
        "Cleanup", "ReportFailure", "NotifyFailure", "PipelineFailed"]
    assert world.sim.calls == []
    [message] = world.notifications()
    assert "epochs" in message


def test_missing_split_fails_fast(world: pw.PipelineWorld) -> None:
    key = pw.upload_dataset(world.s3, splits=("train", "valid"))
    error, cause = world.failure(world.run(key, "no-test-split"))
    assert error == "InvalidDataset" and "test" in cause and "missing splits" in cause
    assert world.sim.calls == []


def _variant(world: pw.PipelineWorld) -> dict:
    return world.sagemaker.describe_endpoint(EndpointName=pw.ENDPOINT)["ProductionVariants"][0]


def _scale_out(world: pw.PipelineWorld, instances: int) -> None:
    """What Application Auto Scaling does to the live endpoint under load (UpdateEndpointWeightsAndCapacities)."""
    world.sagemaker.update_endpoint_weights_and_capacities(
        EndpointName=pw.ENDPOINT,
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": instances}],
    )
    assert _variant(world)["CurrentInstanceCount"] == instances


def test_an_update_keeps_the_scaled_out_fleet(world: pw.PipelineWorld) -> None:
    """UpdateEndpoint without RetainAllVariantProperties resets the count to the new config's
    InitialInstanceCount (1): a deploy at peak load would shrink the fleet to one instance."""
    assert world.run(pw.upload_dataset(world.s3, manifest={"version": "v1"}), "v1")["status"] == "SUCCEEDED"
    _scale_out(world, 3)
    world.sim.test_accuracy = 0.93
    second = world.run(pw.upload_dataset(world.s3, manifest={"version": "v2"}), "v2")
    assert second["status"] == "SUCCEEDED", second
    assert _variant(world)["CurrentInstanceCount"] == 3
    assert world.sagemaker.describe_endpoint(EndpointName=pw.ENDPOINT)["EndpointConfigName"] == (
        pw.execution_output(second)["run"]["endpoint_config_name"]
    )


def test_an_instance_type_change_takes_its_count_from_the_new_config(world: pw.PipelineWorld) -> None:
    """The instance count autoscaling chose was for the old instance type: it is not retained, and the
    update succeeds only because Deploy deregistered autoscaling first (the service refuses otherwise)."""
    assert world.run(pw.upload_dataset(world.s3, manifest={"version": "v1"}), "v1")["status"] == "SUCCEEDED"
    _scale_out(world, 3)
    manifest = {"version": "v2", "overrides": {"endpoint_instance_type": "ml.c5.xlarge", "endpoint_instance_count": 2}}
    second = world.run(pw.upload_dataset(world.s3, manifest=manifest), "v2")
    assert second["status"] == "SUCCEEDED", second
    assert pw.execution_output(second)["deployment"]["exclude_retained"] == ["DesiredInstanceCount"]
    assert _variant(world)["CurrentInstanceCount"] == 2


@pytest.mark.filterwarnings("ignore:Exception\\(InternalFailure\\):UserWarning")
def test_a_retried_start_tuning_carries_on_with_the_job_it_created(world: pw.PipelineWorld, monkeypatch) -> None:
    """CreateHyperParameterTuningJob created the job but its answer was a 500: the ASL retries StartTuning,
    which meets ResourceInUse for its own job (its execution tag) and must carry on, not end as a duplicate."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # let the Lambda fail, not botocore retry inside it
    world.sim.lose_create_tuning_response = True
    execution = world.run(pw.upload_dataset(world.s3), "retried-start")
    assert execution["status"] == "SUCCEEDED", execution
    states = world.states_entered(execution["executionArn"])
    assert "DuplicateIgnored" not in states and states[-1] == "Succeeded"
    assert [name for name, _ in world.invocations].count("start_tuning") == 2
    assert world.sim.calls.count("CreateHyperParameterTuningJob") == 2
    assert len(world.sagemaker.list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"]) == 1


def test_another_execution_that_started_the_same_tuning_job_is_a_duplicate(world: pw.PipelineWorld) -> None:
    """Two executions for one dataset version (the same event delivered twice) both pass Validate; the
    other one's StartTuning creates the job first. This one meets ResourceInUse for a job that is not its own."""
    other = f"arn:aws:states:{pw.REGION}:{pw.ACCOUNT}:execution:imgclf-pipeline:the-other-one"
    world.sim.racing_execution = other
    execution = world.run(pw.upload_dataset(world.s3), "second-of-two")
    assert execution["status"] == "SUCCEEDED"
    assert world.states_entered(execution["executionArn"])[-2:] == ["StartTuning", "DuplicateIgnored"]
    assert "started by another execution" in pw.execution_output(execution)["error"]["Cause"]
    [job] = world.sagemaker.list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"]
    tags = world.sagemaker.list_tags(ResourceArn=job["HyperParameterTuningJobArn"])["Tags"]
    assert {"Key": "imgclf:execution", "Value": other} in tags
    assert world.sim.calls.count("CreateTrainingJob") == 0


def test_a_failed_update_after_deregistration_gets_autoscaling_back(world: pw.PipelineWorld) -> None:
    """Deploy deregisters the scalable target for an instance-type change, then UpdateEndpoint raises
    (ResourceLimitExceeded): Deploy returns nothing, and Cleanup must register the live endpoint again."""
    first = world.run(pw.upload_dataset(world.s3, manifest={"version": "v1"}), "v1")
    live_config = pw.execution_output(first)["run"]["endpoint_config_name"]
    world.sim.update_endpoint_error = "ResourceLimitExceeded"
    manifest = {"version": "v2", "overrides": {"endpoint_instance_type": "ml.c5.xlarge"}}
    second = world.run(pw.upload_dataset(world.s3, manifest=manifest), "v2")
    error, cause = world.failure(second)
    assert error == "ResourceLimitExceeded" and "0 Instances" in cause
    targets = world.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [t["ResourceId"] for t in targets] == [f"endpoint/{pw.ENDPOINT}/variant/AllTraffic"]
    [cleanup] = [payload for name, payload in world.invocations if name == "cleanup"]
    assert "deployment" not in cleanup["state"]
    assert world.sagemaker.describe_endpoint(EndpointName=pw.ENDPOINT)["EndpointConfigName"] == live_config
    [message] = [m for m in world.notifications() if "FAILED" in m]
    assert "register_autoscaling" in message


def test_an_update_that_outlives_its_poll_budget_fails_into_cleanup_and_keeps_its_config(
    world: pw.PipelineWorld,
) -> None:
    """An update that stays Updating ends at the endpoint phase's last poll (not after 25,000 events), and
    Cleanup does not delete the config and model the update is still rolling out: DescribeEndpoint names
    the old config while the new one is only in PendingDeploymentSummary."""
    first = world.run(pw.upload_dataset(world.s3, manifest={"version": "v1"}), "v1")
    old = pw.execution_output(first)["run"]
    world.sim.update_polls = 10**6
    world.sim.test_accuracy = 0.93
    second = world.run(pw.upload_dataset(world.s3, manifest={"version": "v2"}), "v2", timeout=120)
    error, cause = world.failure(second)
    assert error == "PollLimitExceeded" and "still Updating" in cause
    new = pw.execution_output(second)["run"] if second.get("output") else None
    polls = [p for name, p in world.invocations if name == "describe_job" and p["kind"] == "endpoint"]
    assert len(polls) - 2 == polling.MAX_POLLS["endpoint"]  # (the first run's two polls)
    described = world.sagemaker.describe_endpoint(EndpointName=pw.ENDPOINT)
    assert described["EndpointStatus"] == "Updating" and described["EndpointConfigName"] == old["endpoint_config_name"]
    pending = described["PendingDeploymentSummary"]["EndpointConfigName"]
    assert pending != old["endpoint_config_name"] and (new is None or pending == new["endpoint_config_name"])
    configs = {c["EndpointConfigName"] for c in world.sagemaker.list_endpoint_configs()["EndpointConfigs"]}
    models = {m["ModelName"] for m in world.sagemaker.list_models()["Models"]}
    assert configs == models == {old["endpoint_config_name"], pending}


def test_update_rollback_failed_is_terminal(world: pw.PipelineWorld) -> None:
    """UpdateRollbackFailed does not pass by itself (an operator must restore the endpoint): the run fails
    at once instead of polling it, and both configs, which the endpoint now serves, stay."""
    first = world.run(pw.upload_dataset(world.s3, manifest={"version": "v1"}), "v1")
    world.sim.update_outcome = "UpdateRollbackFailed"
    world.sim.test_accuracy = 0.93
    second = world.run(pw.upload_dataset(world.s3, manifest={"version": "v2"}), "v2")
    error, cause = world.failure(second)
    assert error == "EndpointDeploymentFailed" and "UpdateRollbackFailed" in cause
    polls = [p for name, p in world.invocations if name == "describe_job" and p["kind"] == "endpoint"]
    assert len(polls) == 2 + 2  # the first run's two, then Updating once and UpdateRollbackFailed
    configs = {c["EndpointConfigName"] for c in world.sagemaker.list_endpoint_configs()["EndpointConfigs"]}
    assert len(configs) == 2 and pw.execution_output(first)["run"]["endpoint_config_name"] in configs


def test_create_endpoint_is_retried_while_the_new_config_is_not_visible(world: pw.PipelineWorld, monkeypatch) -> None:
    """CreateEndpoint right after CreateEndpointConfig may answer "Could not find endpoint configuration"
    (eventual consistency): Deploy raises TransientAwsError, which the ASL retries."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    world.sim.config_not_visible_for = 2
    execution = world.run(pw.upload_dataset(world.s3), "config-lag")
    assert execution["status"] == "SUCCEEDED", execution
    assert [name for name, _ in world.invocations].count("deploy") == 3
    assert world.sim.calls.count("CreateEndpoint") == 3
