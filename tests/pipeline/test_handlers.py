"""Each pipeline handler on its own, against moto (S3, SageMaker, Application Auto Scaling, SNS)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pipeline_world as pw
import pytest
from botocore.exceptions import ClientError
from mlpipeline import errors, images, polling
from mlpipeline.run_state import settings_from_dict
from moto import mock_aws

from imgclf import gate

EVENTS = pw.REPO / "events"


def _event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def handler(folder: str) -> Any:
    return pw.load_handler(folder).handler


@pytest.fixture
def aws(aws_env: None, sim: pw.SageMakerSim) -> Iterator[dict[str, Any]]:
    with mock_aws():
        clients = {
            name: boto3.client(name, region_name=pw.REGION)
            for name in ("s3", "sagemaker", "application-autoscaling", "sns", "sqs")
        }
        clients["s3"].create_bucket(Bucket=pw.BUCKET)
        clients["sagemaker"].create_model_package_group(ModelPackageGroupName=pw.MODEL_PACKAGE_GROUP)
        clients["sim"] = sim
        yield clients


EXECUTION = "arn:aws:states:us-east-1:123456789012:execution:imgclf-pipeline:first"
OTHER_EXECUTION = "arn:aws:states:us-east-1:123456789012:execution:imgclf-pipeline:second"


def _start_tuning(run: dict[str, Any], execution: str = EXECUTION, poll_seconds: int = 0) -> dict[str, Any]:
    return handler("start_tuning")({"run": run, "execution_arn": execution, "poll_seconds": poll_seconds})


def _describe(kind: str, name: str, run: dict[str, Any], attempt: int = 0, **extra: Any) -> dict[str, Any]:
    """DescribeJob's input as the ASL builds it (0 s polling, as in the offline state machine)."""
    event = {"kind": kind, "name": name, "poll": {"attempt": attempt, "wait_seconds": 0}, "poll_seconds": 0,
             "settings": run["settings"], **extra}
    return handler("describe_job")(event)


def _validate_event(key: str = f"datasets/{pw.DATASET}/manifest.json") -> dict[str, Any]:
    return {**_event("validate.json"), "event": pw.s3_event(key)}


# --- validate -----------------------------------------------------------------------------------------


def test_validate_plans_the_run_and_uploads_the_source_once(aws: dict[str, Any]) -> None:
    key = pw.upload_dataset(aws["s3"])
    run = handler("validate")(_validate_event(key))
    assert run["run_id"] == run["tuning_job_name"] and run["dataset"] == pw.DATASET
    assert run["version_token"] == "version:v1"
    source_key = run["source_s3_uri"].removeprefix(f"s3://{pw.BUCKET}/")
    first = aws["s3"].head_object(Bucket=pw.BUCKET, Key=source_key)
    again = handler("validate")(_validate_event(key))
    assert again == run  # deterministic
    assert aws["s3"].head_object(Bucket=pw.BUCKET, Key=source_key)["LastModified"] == first["LastModified"]
    versions = aws["s3"].list_objects_v2(Bucket=pw.BUCKET, Prefix="code/")["KeyCount"]
    assert versions == 1


def test_validate_without_version_uses_the_manifest_etag(aws: dict[str, Any]) -> None:
    key = pw.upload_dataset(aws["s3"], manifest={})
    run = handler("validate")(_validate_event(key))
    assert run["version_token"].startswith("etag:")
    aws["s3"].put_object(Bucket=pw.BUCKET, Key=key, Body=b'{"description": "changed"}')
    assert handler("validate")(_validate_event(key))["run_id"] != run["run_id"]


def test_validate_reads_the_manifest_version_the_event_announced(aws: dict[str, Any]) -> None:
    s3 = aws["s3"]
    s3.put_bucket_versioning(Bucket=pw.BUCKET, VersioningConfiguration={"Status": "Enabled"})
    key = pw.upload_dataset(s3, manifest={"version": "first"})
    first_version = s3.head_object(Bucket=pw.BUCKET, Key=key)["VersionId"]
    s3.put_object(Bucket=pw.BUCKET, Key=key, Body=json.dumps({"version": "second"}))
    event = pw.s3_event(key)
    event["detail"]["object"]["version-id"] = first_version
    run = handler("validate")({**_event("validate.json"), "event": event})
    assert run["version_token"] == "version:first"
    assert handler("validate")(_validate_event(key))["version_token"] == "version:second"  # no version-id


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ("not json", "not valid UTF-8 JSON"),
        ({"splits": {"train": "../elsewhere"}}, "relative folder"),
        ({"overrides": {"max_jobs": 0}}, "max_jobs must be >= 1"),
        ({"overrides": {"learning_rate": 0.1}}, "unknown overrides"),
        ({"version": "v1", "colour": "blue"}, "unknown keys"),
    ],
)
def test_validate_rejects_bad_manifests_clearly(aws: dict[str, Any], manifest: Any, message: str) -> None:
    key = pw.upload_dataset(aws["s3"])
    body = manifest if isinstance(manifest, str) else json.dumps(manifest)
    aws["s3"].put_object(Bucket=pw.BUCKET, Key=key, Body=body)
    with pytest.raises(errors.InvalidDataset, match=message):
        handler("validate")(_validate_event(key))


def test_validate_rejects_other_buckets_and_keys(aws: dict[str, Any]) -> None:
    with pytest.raises(errors.InvalidDataset, match="not this stack's data bucket"):
        handler("validate")({**_event("validate.json"), "event": pw.s3_event("x", bucket="other")})
    with pytest.raises(errors.InvalidDataset, match="not a dataset manifest"):
        handler("validate")(_validate_event("datasets/dogImages/train/manifest.json"))
    with pytest.raises(errors.InvalidDataset, match="does not exist"):
        handler("validate")(_validate_event())


def test_validate_reports_every_missing_split(aws: dict[str, Any]) -> None:
    key = pw.upload_dataset(aws["s3"], splits=("train",))
    with pytest.raises(errors.InvalidDataset, match=r"valid .*test .*manifest.json last"):
        handler("validate")(_validate_event(key))


def test_validate_raises_duplicate_run_when_the_version_already_ran(aws: dict[str, Any]) -> None:
    key = pw.upload_dataset(aws["s3"])
    run = handler("validate")(_validate_event(key))
    _start_tuning(run)
    with pytest.raises(errors.DuplicateRun, match="already ran"):
        handler("validate")(_validate_event(key))


# --- tuning, training, describe -------------------------------------------------------------------------


def test_start_tuning_creates_the_job_and_a_retry_carries_on(aws: dict[str, Any]) -> None:
    run = _event("start_tuning.json")["run"]
    answer = _start_tuning(run)
    assert answer["job_name"] == run["tuning_job_name"]
    described = aws["sagemaker"].describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=answer["job_name"])
    assert described["HyperParameterTuningJobConfig"]["Strategy"] == "Bayesian"
    assert described["TrainingJobDefinition"]["RoleArn"] == pw.ROLE_ARN
    tags = aws["sagemaker"].list_tags(ResourceArn=answer["job_arn"])["Tags"]
    assert {"Key": "imgclf:execution", "Value": EXECUTION} in tags
    # the same execution again (a Lambda retry whose first attempt did create the job): carry on
    assert _start_tuning(run) == answer
    assert aws["sim"].calls.count("CreateHyperParameterTuningJob") == 2


def test_start_tuning_of_another_execution_is_a_duplicate(aws: dict[str, Any]) -> None:
    run = _event("start_tuning.json")["run"]
    _start_tuning(run)
    with pytest.raises(errors.DuplicateRun, match="started by another execution"):
        _start_tuning(run, OTHER_EXECUTION)


def test_start_tuning_refuses_a_run_one_execution_cannot_watch(aws: dict[str, Any]) -> None:
    run = _event("start_tuning.json")["run"]
    run = {**run, "settings": {**run["settings"], "max_jobs": 100, "max_parallel_jobs": 1,
                               "max_runtime_seconds": 2419200, "use_spot_instances": True}}
    with pytest.raises(errors.InvalidDataset, match="more than a Step Functions execution's 365 days"):
        _start_tuning(run, poll_seconds=60)
    assert aws["sim"].calls == []  # nothing was started


def test_describe_job_follows_tuning_to_its_best_job(aws: dict[str, Any]) -> None:
    run = _event("start_tuning.json")["run"]
    _start_tuning(run)
    first = _describe("tuning", run["tuning_job_name"], run)
    assert first["done"] is False and first["poll"] == {"attempt": 1, "wait_seconds": 0}
    done = _describe("tuning", run["tuning_job_name"], run, attempt=1)
    assert done["best_training_job"]["TunedHyperParameters"] == aws["sim"].tuned
    with pytest.raises(ValueError, match="unknown kind"):
        _describe("processing", "x", run)


def test_describe_job_backs_off_and_gives_up_after_the_last_poll(aws: dict[str, Any]) -> None:
    aws["sim"].polls = 10_000  # the job never ends
    run = _event("start_tuning.json")["run"]
    _start_tuning(run)
    event = {"kind": "tuning", "name": run["tuning_job_name"], "poll_seconds": 60, "settings": run["settings"]}
    waits = [handler("describe_job")({**event, "poll": {"attempt": n, "wait_seconds": 0}})["poll"]["wait_seconds"]
             for n in range(6)]
    assert waits[:4] == [60, 120, 240, 480] and waits[4] > waits[3] and waits[5] == waits[4]
    last = polling.poll_plan("tuning", settings_from_dict(run["settings"]), 60).max_polls
    assert handler("describe_job")({**event, "poll": {"attempt": last - 2, "wait_seconds": 0}})["done"] is False
    with pytest.raises(errors.PollLimitExceeded, match=f"still InProgress after {last} status checks"):
        handler("describe_job")({**event, "poll": {"attempt": last - 1, "wait_seconds": 0}})


@pytest.mark.filterwarnings("ignore:Exception\\(Throttled\\):UserWarning")
def test_a_throttled_status_check_is_a_poll_that_saw_no_change(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries would hide the throttling
    run = _event("start_tuning.json")["run"]
    _start_tuning(run)
    aws["sim"].throttle_describe_tuning = 1
    answer = _describe("tuning", run["tuning_job_name"], run)
    assert answer == {"done": False, "status": "unknown (ThrottlingException)",
                      "poll": {"attempt": 1, "wait_seconds": 0}}


def test_describe_job_raises_on_failed_tuning(aws: dict[str, Any]) -> None:
    aws["sim"].tuning_outcome = "Failed"
    aws["sim"].polls = 0
    run = _event("start_tuning.json")["run"]
    _start_tuning(run)
    with pytest.raises(errors.SageMakerJobFailed, match="no space left"):
        _describe("tuning", run["tuning_job_name"], run)


def test_start_training_uses_tuned_hyperparameters_and_survives_a_retry(aws: dict[str, Any]) -> None:
    event = _event("start_training.json")
    first = handler("start_training")(event)
    job = aws["sagemaker"].describe_training_job(TrainingJobName=first["job_name"])
    assert job["HyperParameters"]["lr"] == event["best_training_job"]["TunedHyperParameters"]["lr"]
    assert not job.get("DebugRuleConfigurations")  # SageMaker Debugger only when the stack opts in
    assert job["TensorBoardOutputConfig"]["LocalPath"] == "/opt/ml/output/tensorboard"
    assert handler("start_training")(event)["job_arn"] == first["job_arn"]  # a retried Lambda attempt


def test_start_training_with_sagemaker_debugger_opted_in(aws: dict[str, Any]) -> None:
    event = _event("start_training.json")
    event["run"]["settings"]["enable_sagemaker_debugger"] = True
    job = aws["sagemaker"].describe_training_job(TrainingJobName=handler("start_training")(event)["job_name"])
    assert {r["RuleConfigurationName"] for r in job["DebugRuleConfigurations"]} == {
        "LossNotDecreasing",
        "Overfit",
        "Overtraining",
        "PoorWeightInitialization",
    }
    assert {r["RuleEvaluatorImage"] for r in job["DebugRuleConfigurations"]} == {
        images.debugger_image_uri(event["run"]["region"])
    }


def test_throttling_and_transient_errors_get_the_names_the_asl_retries() -> None:
    def raising(code: str) -> Any:
        @errors.translate_aws_errors
        def call() -> None:
            raise ClientError({"Error": {"Code": code, "Message": "m"}}, "CreateTrainingJob")

        return call

    with pytest.raises(errors.ThrottlingError):
        raising("ThrottlingException")()
    with pytest.raises(errors.TransientAwsError):
        raising("InternalFailure")()
    with pytest.raises(ClientError):
        raising("AccessDeniedException")()


# --- gate, deploy, autoscaling ---------------------------------------------------------------------------


def _trained(aws: dict[str, Any], accuracy: float | None) -> dict[str, Any]:
    aws["sim"].test_accuracy = accuracy
    aws["sim"].polls = 0
    event = _event("start_training.json")
    handler("start_training")(event)
    aws["sagemaker"].describe_training_job(TrainingJobName=event["run"]["training_job_name"])
    return event["run"]


def _gate(aws: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """What QualityGate answers Deploy for a passing model: its accuracy and the model.tar.gz it registered."""
    job = aws["sagemaker"].describe_training_job(TrainingJobName=run["training_job_name"])
    return {"test_accuracy": 0.91, "model_data_url": job["ModelArtifacts"]["S3ModelArtifacts"]}


def test_quality_gate_without_a_live_model(aws: dict[str, Any]) -> None:
    run = _trained(aws, 0.91)
    answer = handler("quality_gate")({"run": run, "training_job_name": run["training_job_name"]})
    assert answer["passed"] and answer["live_accuracy"] is None and answer["test_accuracy"] == 0.91
    package = aws["sagemaker"].describe_model_package(ModelPackageName=answer["model_package_arn"])
    assert package["ModelApprovalStatus"] == "Approved"
    # Deploy deploys the model.tar.gz the package registers
    assert answer["model_data_url"] == package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    assert package["CustomerMetadataProperties"]["test_accuracy"] == "0.910000"


def test_quality_gate_compares_with_the_live_models_tag(aws: dict[str, Any]) -> None:
    run = _trained(aws, 0.91)
    sm = aws["sagemaker"]
    sm.create_model(
        ModelName="imgclf-live",
        ExecutionRoleArn=pw.ROLE_ARN,
        PrimaryContainer={"Image": "img", "ModelDataUrl": "s3://b/m.tar.gz"},
    )
    sm.create_endpoint_config(
        EndpointConfigName="imgclf-live",
        Tags=[gate.accuracy_tag(0.95)],
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "imgclf-live",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    sm.create_endpoint(EndpointName=pw.ENDPOINT, EndpointConfigName="imgclf-live")
    answer = handler("quality_gate")({"run": run, "training_job_name": run["training_job_name"]})
    assert not answer["passed"] and answer["live_accuracy"] == 0.95 and "worse than the live" in answer["reason"]


def test_quality_gate_rejects_a_job_without_the_metric(aws: dict[str, Any]) -> None:
    run = _trained(aws, None)  # train.py never printed a test line (moto's placeholder metric only)
    answer = handler("quality_gate")({"run": run, "training_job_name": run["training_job_name"]})
    assert answer["passed"] is False and "no 'test accuracy' metric" in answer["reason"]
    package = aws["sagemaker"].describe_model_package(ModelPackageName=answer["model_package_arn"])
    assert package["ModelApprovalStatus"] == "Rejected"


def test_deploy_creates_then_updates(aws: dict[str, Any]) -> None:
    run = _trained(aws, 0.91)
    event = {"run": run, "gate": _gate(aws, run)}
    created = handler("deploy")(event)
    assert created["action"] == "create" and created["previous_config"] is None
    aws["sim"].polls = 0
    aws["sagemaker"].describe_endpoint(EndpointName=pw.ENDPOINT)  # Creating -> InService
    handler("configure_autoscaling")({"run": run, "deployment": created})
    second_run = {
        **run,
        "model_name": "imgclf-second",
        "endpoint_config_name": "imgclf-second",
        "settings": {**run["settings"], "endpoint_instance_type": "ml.c5.large"},
    }
    updated = handler("deploy")({**event, "run": second_run})
    assert updated["action"] == "update" and updated["previous_config"] == run["endpoint_config_name"]
    assert updated["autoscaling_deregistered"] is True
    assert aws["sim"].calls[-1] == "UpdateEndpoint"
    assert (
        aws["application-autoscaling"].describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    )


def test_configure_autoscaling_registers_target_and_policy(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the event's gate carries the model's prediction baseline: the drift alarm notifies the topic
    monkeypatch.setenv("NOTIFICATION_TOPIC_ARN", aws["sns"].create_topic(Name=pw.TOPIC)["TopicArn"])
    answer = handler("configure_autoscaling")(_event("configure_autoscaling.json"))
    assert answer["resource_id"] == f"endpoint/{pw.ENDPOINT}/variant/AllTraffic"
    policies = aws["application-autoscaling"].describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert [p["PolicyType"] for p in policies] == ["TargetTrackingScaling"]


# --- cleanup, notify -------------------------------------------------------------------------------------


def test_cleanup_stops_running_jobs(aws: dict[str, Any]) -> None:
    aws["sim"].polls = 100  # jobs stay InProgress
    run = _event("start_tuning.json")["run"]
    _start_tuning(run)
    state = {"run": run, "tuning": {"job_name": run["tuning_job_name"]}, "error": {"Error": "X", "Cause": "y"}}
    answer = handler("cleanup")({"state": state})
    assert answer["actions"] == [{"action": "stop_tuning_job", "name": run["tuning_job_name"]}]
    described = aws["sagemaker"].describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=run["tuning_job_name"])
    assert described["HyperParameterTuningJobStatus"] in ("Stopping", "Stopped")


def test_cleanup_stops_the_running_training_job_and_deletes_the_unused_model(aws: dict[str, Any]) -> None:
    aws["sim"].polls = 100
    event = _event("start_training.json")
    run = event["run"]
    handler("start_training")(event)
    aws["sagemaker"].create_model(
        ModelName=run["model_name"],
        ExecutionRoleArn=pw.ROLE_ARN,
        PrimaryContainer={"Image": "img", "ModelDataUrl": "s3://b/m.tar.gz"},
    )
    state = {"run": run, "tuning": {}, "training": {"job_name": run["training_job_name"]}}
    answer = handler("cleanup")({"state": state})
    assert [a["action"] for a in answer["actions"]] == ["stop_training_job", "delete_model"]
    assert (
        aws["sagemaker"].describe_training_job(TrainingJobName=run["training_job_name"])["TrainingJobStatus"]
        == "Stopping"
    )
    assert aws["sagemaker"].list_models()["Models"] == []


def test_cleanup_without_a_run_does_nothing(aws: dict[str, Any]) -> None:
    assert handler("cleanup")({"state": {"error": {"Error": "InvalidDataset", "Cause": "bad"}}}) == {"actions": []}


def test_notify_publishes_the_outcome(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # the stack's topic: the handler read NOTIFICATION_TOPIC_ARN at import, as at a cold start
    topic = aws["sns"].create_topic(Name=pw.TOPIC)["TopicArn"]
    assert topic == pw.TOPIC_ARN
    monkeypatch.setenv("NOTIFICATION_TOPIC_ARN", topic)
    state = {
        "error": {"Error": "InvalidDataset", "Cause": json.dumps({"errorMessage": "splits missing: test"})},
        "run": {"dataset": "d" * 300, "run_id": "r"},
    }
    answer = handler("notify")({"outcome": "failed", "state": state})
    assert len(answer["subject"]) <= 100 and answer["message_id"]


def test_a_retried_deploy_carries_on_with_the_update_it_started(aws: dict[str, Any]) -> None:
    run = _trained(aws, 0.91)
    event = {"run": run, "gate": _gate(aws, run)}
    handler("deploy")(event)
    aws["sim"].polls = 0
    aws["sagemaker"].describe_endpoint(EndpointName=pw.ENDPOINT)  # Creating -> InService
    aws["sim"].polls = 5
    second = {**event, "run": {**run, "model_name": "imgclf-second", "endpoint_config_name": "imgclf-second"}}
    assert handler("deploy")(second)["action"] == "update"
    retried = handler("deploy")(second)  # e.g. the first attempt's Lambda timed out after UpdateEndpoint
    assert retried["action"] == "resume" and retried["previous_config"] == run["endpoint_config_name"]
    assert aws["sim"].calls.count("UpdateEndpoint") == 1


def test_deploy_retries_only_the_config_not_yet_visible_answer(aws: dict[str, Any]) -> None:
    run = _trained(aws, 0.91)
    event = {"run": run, "gate": _gate(aws, run)}
    aws["sim"].config_not_visible_for = 1
    with pytest.raises(errors.TransientAwsError, match="not visible yet"):
        handler("deploy")(event)
    assert handler("deploy")(event)["action"] == "create"  # the ASL's retry
    aws["sim"].config_not_visible_for = 0
    aws["sim"].polls = 0
    aws["sagemaker"].describe_endpoint(EndpointName=pw.ENDPOINT)
    aws["application-autoscaling"].register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=f"endpoint/{pw.ENDPOINT}/variant/AllTraffic",
        ScalableDimension="sagemaker:variant:DesiredInstanceCount", MinCapacity=1, MaxCapacity=2,
    )
    # any other ValidationException is a real error (here: what a type change without deregistering gets)
    with pytest.raises(ClientError, match="deregister it before changing its instance type"):
        pw.load_handler("deploy")._using_new_config(
            aws["sagemaker"].update_endpoint, EndpointName=pw.ENDPOINT, EndpointConfigName=_c5_config(aws, run)
        )


def _c5_config(aws: dict[str, Any], run: dict[str, Any]) -> str:
    aws["sagemaker"].create_endpoint_config(
        EndpointConfigName="imgclf-c5",
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": run["model_name"], "InitialInstanceCount": 1,
                             "InstanceType": "ml.c5.xlarge"}],
    )
    return "imgclf-c5"
