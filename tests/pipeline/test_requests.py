"""mlpipeline's request builders (training_requests, deployment_requests): every SageMaker / Application
Auto Scaling request, validated by botocore against the service model, and the pure decisions around them
(job_progress, deployment_plan: create vs update, cleanup)."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import botocore.session
import pytest
import regex
import stack
from botocore.validate import ParamValidator
from mlpipeline import (
    deployment_plan,
    deployment_requests,
    feature_sets,
    job_progress,
    resource_tags,
    training_requests,
)
from mlpipeline.errors import EndpointDeploymentFailed, SageMakerJobFailed
from mlpipeline.run_state import RunState
from mlpipeline.runs import plan_run
from mlpipeline.settings import build_settings

from imgclf import contract, gate
from imgclf.config import parse_config
from imgclf.manifest import parse_manifest

ROLE = "arn:aws:iam::123456789012:role/imgclf-sagemaker"
DEBUGGER_IMAGE = "503895931360.dkr.ecr.us-east-1.amazonaws.com/sagemaker-debugger-rules:latest"
EXECUTION = "arn:aws:states:us-east-1:123456789012:execution:imgclf-pipeline:2f6c1d0e-5b7a-4c1e-9d7b-0a1b2c3d4e5f"


def asl_defaults() -> dict[str, str]:
    definition = json.loads(stack.substitute(stack.ASL_PATH.read_text(), stack.resolve_substitutions()))
    return definition["States"]["ApplyDefaults"]["Parameters"]["defaults"]


def make_run(**overrides: Any) -> RunState:
    manifest = parse_manifest(json.dumps({"version": "v1", "overrides": overrides}), stack.DATASET)
    return plan_run(
        bucket=stack.BUCKET,
        manifest_key=f"datasets/{stack.DATASET}/manifest.json",
        manifest=manifest,
        settings=build_settings(asl_defaults(), manifest.overrides),
        prefix=stack.PREFIX,
        region=stack.REGION,
        etag='"abc"',
        source_key="code/sourcedir-0123.tar.gz",
    )


def _pattern_errors(value: Any, shape: Any, path: str) -> list[str]:
    """String patterns of the service model, which botocore does not check client-side but the service
    does (e.g. tag and metadata values may not contain quotes or '>'). Java-style patterns (\\p{L}) need
    the `regex` module; they are matched in full, as the service does."""
    if shape.type_name == "structure":
        return [e for name, member in shape.members.items() if name in value
                for e in _pattern_errors(value[name], member, f"{path}.{name}")]
    if shape.type_name == "list":
        return [e for i, item in enumerate(value) for e in _pattern_errors(item, shape.member, f"{path}[{i}]")]
    if shape.type_name == "map":
        return [e for key, item in value.items()
                for e in _pattern_errors(key, shape.key, f"{path} key") + _pattern_errors(item, shape.value,
                                                                                          f"{path}.{key}")]
    pattern = shape.metadata.get("pattern")
    if shape.type_name != "string" or not pattern:
        return []
    try:
        compiled = regex.compile(pattern)
    except regex.error:
        return []  # a Java-only construct (rare, e.g. in Application Auto Scaling): the service checks it
    return [] if compiled.fullmatch(value) else [f"{path}={value!r} does not match {pattern}"]


def assert_valid(service: str, operation: str, params: dict[str, Any]) -> None:
    model = botocore.session.get_session().get_service_model(service).operation_model(operation)
    report = ParamValidator().validate(params, model.input_shape)
    assert not report.has_errors(), report.generate_report()
    assert _pattern_errors(params, model.input_shape, operation) == []


def test_validator_does_reject_a_bad_request() -> None:
    request = training_requests.tuning_job_request(make_run(), ROLE, EXECUTION)
    del request["HyperParameterTuningJobConfig"]["Strategy"]
    with pytest.raises(AssertionError, match="Strategy"):
        assert_valid("sagemaker", "CreateHyperParameterTuningJob", request)


def test_tuning_job_request() -> None:
    run = make_run()
    request = training_requests.tuning_job_request(run, ROLE, EXECUTION)
    assert_valid("sagemaker", "CreateHyperParameterTuningJob", request)
    config = request["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian" and config["TrainingJobEarlyStoppingType"] == "Auto"
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Minimize", "MetricName": "average test loss"}
    assert config["ParameterRanges"]["ContinuousParameterRanges"] == [
        {"Name": "lr", "MinValue": "0.001", "MaxValue": "0.1", "ScalingType": "Logarithmic"}
    ]
    assert config["ParameterRanges"]["CategoricalParameterRanges"] == [
        {"Name": "batch-size", "Values": ["32", "64", "128", "256", "512"]}
    ]
    definition = request["TrainingJobDefinition"]
    metrics = {m["Name"]: m["Regex"] for m in definition["AlgorithmSpecification"]["MetricDefinitions"]}
    assert metrics[contract.OBJECTIVE_METRIC_NAME] == contract.METRIC_REGEXES[contract.OBJECTIVE_METRIC_NAME]
    assert definition["AlgorithmSpecification"]["TrainingImage"].endswith("pytorch-training:2.6-gpu-py312")
    assert [c["ChannelName"] for c in definition["InputDataConfig"]] == ["train", "valid", "test"]
    assert definition["InputDataConfig"][2]["DataSource"]["S3DataSource"]["S3Uri"] == (
        f"s3://{stack.BUCKET}/datasets/{stack.DATASET}/test/"
    )
    assert "EnableManagedSpotTraining" not in definition
    assert json.loads(definition["StaticHyperParameters"]["sagemaker_submit_directory"]) == run.source_s3_uri
    # Trials' models are never deployed: they do not bundle the serving wheels (imgclf.wheelhouse).
    assert contract.BUNDLE_SERVING_WHEELS_HYPERPARAMETER not in definition["StaticHyperParameters"]
    assert len(request["HyperParameterTuningJobName"]) <= 32


def test_managed_spot_adds_checkpoints_and_wait_time() -> None:
    request = training_requests.tuning_job_request(make_run(use_spot_instances=True), ROLE, EXECUTION)
    assert_valid("sagemaker", "CreateHyperParameterTuningJob", request)
    definition = request["TrainingJobDefinition"]
    assert definition["EnableManagedSpotTraining"] is True
    assert (
        definition["StoppingCondition"]["MaxWaitTimeInSeconds"] > definition["StoppingCondition"]["MaxRuntimeInSeconds"]
    )
    assert definition["CheckpointConfig"]["S3Uri"].startswith(f"s3://{stack.BUCKET}/checkpoints/")


DEBUGGER_AND_PROFILER_FIELDS = ("DebugHookConfig", "DebugRuleConfigurations", "ProfilerRuleConfigurations")


def test_training_job_request_uses_no_debugger_or_profiler_by_default() -> None:
    """Debugger is closed to new accounts and Profiler is ending: the default request sends no rule or hook
    configuration, and turns off the system monitoring SageMaker would otherwise start for every training
    job (https://docs.aws.amazon.com/sagemaker/latest/dg/debugger-configure-system-monitoring.html)."""
    run = make_run()
    assert run.settings.enable_sagemaker_debugger is False
    tuned = training_requests.tuned_hyperparameters(
        {"TrainingJobName": "t", "TunedHyperParameters": {"lr": "0.0123", "batch-size": '"64"', "ignored": "x"}}
    )
    request = training_requests.training_job_request(run, ROLE, tuned)
    assert_valid("sagemaker", "CreateTrainingJob", request)
    assert not set(DEBUGGER_AND_PROFILER_FIELDS) & set(request)
    assert request["ProfilerConfig"] == {"DisableProfiler": True}
    # the image changes nothing
    assert training_requests.training_job_request(run, ROLE, tuned, DEBUGGER_IMAGE) == request
    # The rules' results are training metrics instead, from the one list both jobs use.
    assert request["AlgorithmSpecification"]["MetricDefinitions"] == contract.metric_definitions()
    names = {m["Name"] for m in request["AlgorithmSpecification"]["MetricDefinitions"]}
    assert {"rule LossNotDecreasing", "rule Overfit", "rule Overtraining", "rule PoorWeightInitialization"} <= names
    assert request["ResourceConfig"]["InstanceCount"] == 1
    assert training_requests.DISTRIBUTED_HYPERPARAMETER not in request["HyperParameters"]


def test_training_job_request_sends_tensorboard_output_where_train_py_writes_it() -> None:
    run = make_run()
    request = training_requests.training_job_request(run, ROLE, {"lr": "0.01", "batch-size": "64"})
    output = request["TensorBoardOutputConfig"]
    # Under the run's output prefix, beside the job's model artifacts (the role may write models/*).
    assert output["S3OutputPath"] == f"{run.output_s3_uri}{run.training_job_name}/tensorboard/"
    assert output["S3OutputPath"].startswith(request["OutputDataConfig"]["S3OutputPath"])
    # SageMaker's default LocalPath, and the folder train.py writes to under SageMaker's environment.
    assert output["LocalPath"] == "/opt/ml/output/tensorboard"
    config = parse_config([], env={"SM_MODEL_DIR": "/opt/ml/model", "SM_OUTPUT_DIR": "/opt/ml/output",
                                   "SM_OUTPUT_DATA_DIR": "/opt/ml/output/data"})
    assert str(config.tensorboard_dir) == output["LocalPath"]


def test_sagemaker_debugger_and_profiler_are_opt_in() -> None:
    run = make_run(enable_sagemaker_debugger=True)
    tuned = {"lr": "0.0123", "batch-size": '"64"'}
    request = training_requests.training_job_request(run, ROLE, tuned, DEBUGGER_IMAGE)
    assert_valid("sagemaker", "CreateTrainingJob", request)
    rules = {r["RuleConfigurationName"]: r for r in request["DebugRuleConfigurations"]}
    assert set(rules) == {"LossNotDecreasing", "Overfit", "Overtraining", "PoorWeightInitialization"}
    assert all(
        r["RuleParameters"] == {"rule_to_invoke": name} and r["RuleEvaluatorImage"] == DEBUGGER_IMAGE
        for name, r in rules.items()
    )
    assert request["DebugHookConfig"]["S3OutputPath"] == run.debugger_s3_uri
    assert request["ProfilerConfig"] == {"S3OutputPath": run.profiler_s3_uri, "ProfilingIntervalInMilliseconds": 500}
    assert [r["RuleParameters"]["rule_to_invoke"] for r in request["ProfilerRuleConfigurations"]] == ["ProfilerReport"]
    assert "TensorBoardOutputConfig" in request  # TensorBoard either way
    with pytest.raises(ValueError, match="rule-evaluator image"):
        training_requests.training_job_request(run, ROLE, tuned)


def test_metric_definitions_fit_the_service_limits() -> None:
    """contract's limits are the service model's (botocore validates none of these maxima client-side)."""
    sagemaker = botocore.session.get_session().get_service_model("sagemaker")
    for operation, path in (("CreateTrainingJob", ()), ("CreateHyperParameterTuningJob", ("TrainingJobDefinition",))):
        shape = sagemaker.operation_model(operation).input_shape
        for member in (*path, "AlgorithmSpecification", "MetricDefinitions"):
            shape = shape.members[member]
        assert shape.metadata["max"] == contract.MAX_METRIC_DEFINITIONS
        assert shape.member.members["Name"].metadata["max"] == contract.MAX_METRIC_NAME_LENGTH
        assert shape.member.members["Regex"].metadata["max"] == contract.MAX_METRIC_REGEX_LENGTH
    tuning_request = training_requests.tuning_job_request(make_run(), ROLE, EXECUTION)
    tuning = tuning_request["TrainingJobDefinition"]["AlgorithmSpecification"]
    assert tuning["MetricDefinitions"] == contract.metric_definitions()


def test_hyperparameters_are_understood_by_train_py() -> None:
    """SageMaker passes every hyperparameter not starting with sagemaker_ as `--name value`; train.py's
    real parser (imgclf.config) must read the static and the tuned ones, JSON-quoted or not."""
    tuned = {"lr": "0.0123", "batch-size": '"128"'}
    request = training_requests.training_job_request(
        make_run(epochs=7, backbone="resnet34", precision="bf16"), ROLE, tuned, DEBUGGER_IMAGE
    )
    argv = []
    for name, value in request["HyperParameters"].items():
        if not name.startswith("sagemaker_"):
            argv += [f"--{name}", value]
    config = parse_config(argv, env={})
    assert (config.lr, config.batch_size, config.epochs) == (0.0123, 128, 7)
    assert (config.backbone, config.precision, config.pretrained, config.patience) == (
        "resnet34",
        "bf16",
        "imagenet",
        3,
    )
    assert config.unknown_args == ()
    assert config.bundle_serving_wheels is True  # the deployed model carries its serving wheels


def test_data_parallel_launcher_depends_on_the_processor() -> None:
    tuned = {"lr": "0.01", "batch-size": "64"}
    gpu = training_requests.training_job_request(make_run(training_instance_count=4), ROLE, tuned, DEBUGGER_IMAGE)
    assert gpu["ResourceConfig"]["InstanceCount"] == 4
    assert json.loads(gpu["HyperParameters"][training_requests.DISTRIBUTED_HYPERPARAMETER]) is True
    cpu = training_requests.training_job_request(
        make_run(training_instance_count=2, training_instance_type="ml.c5.4xlarge"), ROLE, tuned, DEBUGGER_IMAGE
    )
    assert training_requests.DISTRIBUTED_HYPERPARAMETER not in cpu["HyperParameters"]  # train.py uses SM_HOSTS itself
    assert cpu["AlgorithmSpecification"]["TrainingImage"].endswith("pytorch-training:2.6-cpu-py312")


def test_tuned_hyperparameters_must_cover_the_search_space() -> None:
    with pytest.raises(SageMakerJobFailed, match="batch-size"):
        training_requests.tuned_hyperparameters({"TrainingJobName": "t", "TunedHyperParameters": {"lr": "0.1"}})


def _job() -> dict[str, Any]:
    return {
        "TrainingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/imgclf-x-final",
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://{stack.BUCKET}/models/imgclf-x-final/output/model.tar.gz"},
    }


def test_model_endpoint_and_registry_requests() -> None:
    run = make_run()
    model = deployment_requests.model_request(run, ROLE, _job()["ModelArtifacts"]["S3ModelArtifacts"])
    assert_valid("sagemaker", "CreateModel", model)
    assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert model["PrimaryContainer"]["Image"].endswith("pytorch-inference:2.6-cpu-py312")
    config = deployment_requests.endpoint_config_request(run, 0.91)
    assert_valid("sagemaker", "CreateEndpointConfig", config)
    assert gate.accuracy_from_tags(config["Tags"]) == pytest.approx(0.91)
    assert_valid("sagemaker", "CreateEndpoint", deployment_requests.create_endpoint_request(stack.ENDPOINT, run))
    update = deployment_requests.update_endpoint_request(stack.ENDPOINT, run, ["a-5xx", "a-latency"])
    assert_valid("sagemaker", "UpdateEndpoint", update)
    assert update["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"] == [
        {"AlarmName": "a-5xx"},
        {"AlarmName": "a-latency"},
    ]
    assert (
        update["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["WaitIntervalInSeconds"] > 0
    )
    for passed in (True, False):
        decision = gate.decide(0.91 if passed else 0.5, 0.7, None)
        package = deployment_requests.model_package_request(run, stack.MODEL_PACKAGE_GROUP, _job(), decision)
        assert_valid("sagemaker", "CreateModelPackage", package)
        assert package["ModelApprovalStatus"] == ("Approved" if passed else "Rejected")


def test_autoscaling_requests() -> None:
    settings = make_run().settings
    register = deployment_requests.register_scalable_target_request(stack.ENDPOINT, settings)
    assert_valid("application-autoscaling", "RegisterScalableTarget", register)
    assert register["ResourceId"] == f"endpoint/{stack.ENDPOINT}/variant/AllTraffic"
    assert (register["MinCapacity"], register["MaxCapacity"]) == (1, 4)
    policy = deployment_requests.scaling_policy_request(stack.ENDPOINT, settings)
    assert_valid("application-autoscaling", "PutScalingPolicy", policy)
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
        "SageMakerVariantInvocationsPerInstance"
    )
    assert (tracking["TargetValue"], tracking["ScaleInCooldown"], tracking["ScaleOutCooldown"]) == (100.0, 300, 60)
    assert_valid(
        "application-autoscaling", "DeregisterScalableTarget", deployment_requests.scalable_target_id(stack.ENDPOINT)
    )


def test_tuning_progress() -> None:
    base = {"HyperParameterTuningJobName": "j"}
    assert job_progress.tuning_progress({**base, "HyperParameterTuningJobStatus": "InProgress"})["done"] is False
    with pytest.raises(SageMakerJobFailed, match="boom"):
        job_progress.tuning_progress({**base, "HyperParameterTuningJobStatus": "Failed", "FailureReason": "boom"})
    with pytest.raises(SageMakerJobFailed, match="without a successful"):
        job_progress.tuning_progress({**base, "HyperParameterTuningJobStatus": "Completed"})
    done = job_progress.tuning_progress(
        {
            **base,
            "HyperParameterTuningJobStatus": "Completed",
            "BestTrainingJob": {
                "TrainingJobName": "j-001",
                "TrainingJobStatus": "Completed",
                "TunedHyperParameters": {"lr": "0.1"},
            },
        }
    )
    assert done["done"] and done["best_training_job"]["TrainingJobName"] == "j-001"


def test_training_progress_reports_rule_issues() -> None:
    description = {
        "TrainingJobName": "t",
        "TrainingJobStatus": "Completed",
        "DebugRuleEvaluationStatuses": [
            {"RuleConfigurationName": "Overfit", "RuleEvaluationStatus": "IssuesFound"},
            {"RuleConfigurationName": "Overtraining", "RuleEvaluationStatus": "NoIssuesFound"},
        ],
    }
    assert job_progress.training_progress(description) == {
        "done": True,
        "status": "Completed",
        "secondary_status": None,
        "rule_issues": ["Overfit"],
    }
    with pytest.raises(SageMakerJobFailed, match="stopped"):
        job_progress.training_progress({"TrainingJobName": "t", "TrainingJobStatus": "Stopped"})


def test_endpoint_progress_detects_failure_and_rollback() -> None:
    base = {"EndpointName": "e", "EndpointConfigName": "new"}
    assert job_progress.endpoint_progress({**base, "EndpointStatus": "Updating"}, "new")["done"] is False
    assert job_progress.endpoint_progress({**base, "EndpointStatus": "InService"}, "new")["done"] is True
    with pytest.raises(EndpointDeploymentFailed, match="rolled back to old"):
        job_progress.endpoint_progress({**base, "EndpointConfigName": "old", "EndpointStatus": "InService"}, "new")
    with pytest.raises(EndpointDeploymentFailed, match="health"):
        job_progress.endpoint_progress({**base, "EndpointStatus": "Failed", "FailureReason": "health check"}, "new")


@pytest.mark.parametrize("status", ["OutOfService", "UpdateRollbackFailed", "Deleting", "Failed"])
def test_endpoint_progress_ends_in_every_terminal_status(status: str) -> None:
    """DescribeEndpoint's statuses that no waiting ends; polling them would spin until the poll cap."""
    described = {"EndpointName": "e", "EndpointConfigName": "old", "EndpointStatus": status,
                 "PendingDeploymentSummary": {"EndpointConfigName": "new"}}
    expected = re.escape(f"endpoint e {job_progress.ENDPOINT_TERMINAL_STATUSES[status]}")
    with pytest.raises(EndpointDeploymentFailed, match=expected):
        job_progress.endpoint_progress(described, "new")


@pytest.mark.parametrize("status", ["Creating", "Updating", "SystemUpdating", "RollingBack"])
def test_endpoint_progress_waits_through_passing_statuses(status: str) -> None:
    described = {"EndpointName": "e", "EndpointConfigName": "old", "EndpointStatus": status,
                 "PendingDeploymentSummary": {"EndpointConfigName": "new"}}
    progress = job_progress.endpoint_progress(described, "new")
    assert progress == {"done": False, "status": status, "pending_config": "new"}


def test_every_endpoint_status_of_the_service_model_is_classified() -> None:
    """botocore's EndpointStatus enum: each value is terminal, passing, or InService (a new status would
    otherwise be polled as if it passed)."""
    model = botocore.session.get_session().get_service_model("sagemaker")
    statuses = set(model.shape_for("EndpointStatus").enum)
    passing = {"Creating", "Updating", "SystemUpdating", "RollingBack"}
    assert statuses == set(job_progress.ENDPOINT_TERMINAL_STATUSES) | passing | {"InService"}


def test_update_keeps_the_live_instance_count_unless_the_type_changes() -> None:
    run = make_run()
    update = deployment_requests.update_endpoint_request(stack.ENDPOINT, run, ["a"])
    assert_valid("sagemaker", "UpdateEndpoint", update)
    assert update["RetainAllVariantProperties"] is True and "ExcludeRetainedVariantProperties" not in update
    live = {"EndpointName": "e", "EndpointStatus": "InService"}
    plan = deployment_plan.plan_deployment(live, "ml.m5.large", "ml.c5.large", True)
    changed = deployment_requests.update_endpoint_request(stack.ENDPOINT, run, ["a"], plan["exclude_retained"])
    assert_valid("sagemaker", "UpdateEndpoint", changed)
    assert changed["ExcludeRetainedVariantProperties"] == [{"VariantPropertyType": "DesiredInstanceCount"}]


def test_plan_deployment() -> None:
    live = {"EndpointName": "e", "EndpointStatus": "InService"}
    assert deployment_plan.plan_deployment(None, None, "ml.m5.large", False)["action"] == "create"
    assert deployment_plan.plan_deployment(live, "ml.m5.large", "ml.m5.large", True) == {
        "action": "update",
        "deregister_autoscaling": False,
        "exclude_retained": [],
        "fleet": None,
    }
    assert deployment_plan.plan_deployment(live, "ml.m5.large", "ml.c5.large", True) == {
        "action": "update",
        "deregister_autoscaling": True,
        "exclude_retained": ["DesiredInstanceCount"],
        "fleet": None,
    }
    assert deployment_plan.plan_deployment(live, "ml.m5.large", "ml.c5.large", False)["deregister_autoscaling"] is False
    failed = {**live, "EndpointStatus": "Failed"}
    assert deployment_plan.plan_deployment(failed, None, "ml.m5.large", False)["action"] == "recreate"
    with pytest.raises(EndpointDeploymentFailed, match="in progress"):
        deployment_plan.plan_deployment({**live, "EndpointStatus": "Updating"}, None, "ml.m5.large", False)
    for status in ("OutOfService", "UpdateRollbackFailed", "Deleting"):
        with pytest.raises(EndpointDeploymentFailed, match="needs an operator"):
            deployment_plan.plan_deployment({**live, "EndpointStatus": status}, None, "ml.m5.large", False)


def _cleanup(run: dict[str, Any], **kwargs: Any) -> list[str]:
    arguments = {"tuning": None, "training": None, "endpoint": None, "model_exists": True, "config_exists": True,
                 "deploy_attempted": True, "autoscaling_registered": True, **kwargs}
    return [a["action"] for a in deployment_plan.plan_cleanup(run, **arguments)]


def test_plan_cleanup() -> None:
    run = make_run()
    ours = {"EndpointName": stack.ENDPOINT, "EndpointConfigName": run.endpoint_config_name}
    running = _cleanup(
        run,
        tuning={"HyperParameterTuningJobStatus": "InProgress"},
        training={"TrainingJobStatus": "InProgress"},
        model_exists=False,
        config_exists=False,
        deploy_attempted=False,
    )
    assert running == ["stop_tuning_job", "stop_training_job"]
    failed_new = _cleanup(run, endpoint={**ours, "EndpointStatus": "Failed"})
    assert failed_new == ["delete_endpoint", "delete_endpoint_config", "delete_model"]
    # e.g. autoscaling failed: the new model serves, keep it
    assert _cleanup(run, endpoint={**ours, "EndpointStatus": "InService"}) == []
    old = {"EndpointName": stack.ENDPOINT, "EndpointConfigName": "old", "EndpointStatus": "InService"}
    rolled_back = _cleanup(run, endpoint=old, autoscaling_registered=False)
    assert rolled_back == ["delete_endpoint_config", "delete_model", "register_autoscaling"]
    assert _cleanup(run, endpoint=old) == ["delete_endpoint_config", "delete_model"]


def test_cleanup_registers_autoscaling_whatever_deploy_returned() -> None:
    """Deploy deregistered the target, then UpdateEndpoint raised: the state has no deployment output,
    only the gate that let Deploy run. What AWS says (no target) decides."""
    run = make_run()
    old = {"EndpointName": stack.ENDPOINT, "EndpointConfigName": "old", "EndpointStatus": "InService"}
    assert "register_autoscaling" in _cleanup(run, endpoint=old, autoscaling_registered=False)
    # a run that never reached Deploy leaves the live endpoint's autoscaling as the operator set it
    assert "register_autoscaling" not in _cleanup(run, endpoint=old, autoscaling_registered=False,
                                                  deploy_attempted=False)
    # an endpoint that is not InService cannot be registered yet
    updating = {**old, "EndpointStatus": "Updating"}
    assert "register_autoscaling" not in _cleanup(run, endpoint=updating, autoscaling_registered=False)


@pytest.mark.parametrize("status", ["Updating", "Creating", "UpdateRollbackFailed", "OutOfService"])
def test_cleanup_keeps_the_config_and_model_a_deployment_uses(status: str) -> None:
    """While updating, EndpointConfigName still names the old config; the new one, this run's, is only in
    PendingDeploymentSummary. Deleting it would break the deployment in progress."""
    run = make_run()
    endpoint = {"EndpointName": stack.ENDPOINT, "EndpointConfigName": "old", "EndpointStatus": status,
                "PendingDeploymentSummary": {"EndpointConfigName": run.endpoint_config_name}}
    assert _cleanup(run, endpoint=endpoint) == []
    assert job_progress.configs_in_use(endpoint) == {"old", run.endpoint_config_name}


def test_execution_tag_is_a_valid_sagemaker_tag_that_names_one_execution() -> None:
    run = make_run()
    tag = resource_tags.execution_tag(EXECUTION)
    assert tag == {"Key": resource_tags.EXECUTION_TAG_KEY, "Value": EXECUTION}
    odd = "arn:aws:states:us-east-1:123456789012:execution:imgclf-pipeline:run(1)!"
    other = "arn:aws:states:us-east-1:123456789012:execution:imgclf-pipeline:run_1__"
    for arn in (EXECUTION, odd, other):
        assert_valid("sagemaker", "CreateHyperParameterTuningJob", training_requests.tuning_job_request(run, ROLE, arn))
    assert resource_tags.execution_tag(odd)["Value"].startswith("sha256:")
    assert resource_tags.execution_tag(odd) != resource_tags.execution_tag(other)
    tags = training_requests.tuning_job_request(run, ROLE, odd)["Tags"]
    assert resource_tags.started_by(tags, odd)
    assert not resource_tags.started_by(tags, other) and not resource_tags.started_by(tags, EXECUTION)


def test_tags_survive_unusual_dataset_names() -> None:
    run = dataclasses.replace(make_run(), dataset="dogs (2026) #1 ü")
    tags = training_requests.tuning_job_request(run, ROLE, EXECUTION)["Tags"]
    assert tags[1] == {"Key": "imgclf:dataset", "Value": "dogs _2026_ _1 _"}


def test_pattern_check_catches_what_the_service_would_refuse() -> None:
    request = deployment_requests.endpoint_config_request(make_run(), 0.9)
    request["Tags"].append({"Key": "note", "Value": "it's > 0.9"})
    with pytest.raises(AssertionError, match="does not match"):
        assert_valid("sagemaker", "CreateEndpointConfig", request)


def test_a_retried_deploy_resumes_the_deployment_its_first_attempt_started() -> None:
    """Deploy's first attempt called UpdateEndpoint (or CreateEndpoint), then the Lambda failed: the retry
    finds the endpoint Updating with this run's config pending and carries on instead of failing."""
    updating = {"EndpointName": "e", "EndpointConfigName": "old", "EndpointStatus": "Updating",
                "PendingDeploymentSummary": {"EndpointConfigName": "new"}}
    assert deployment_plan.plan_deployment(updating, None, "ml.m5.large", False, "new")["action"] == "resume"
    creating = {"EndpointName": "e", "EndpointConfigName": "new", "EndpointStatus": "Creating"}
    assert deployment_plan.plan_deployment(creating, None, "ml.m5.large", False, "new")["action"] == "resume"
    with pytest.raises(EndpointDeploymentFailed, match="another deployment is in progress"):
        deployment_plan.plan_deployment(updating, None, "ml.m5.large", False, "someone-elses")


FEATURE_SET = "0123456789abcdef0123456789abcdef"


def _listing(etag: str = "e1", name: str = "001.A/img_0.jpg") -> dict:
    prefix = f"datasets/{stack.DATASET}/train/"
    return {"train": (prefix, [{"Key": prefix + name, "Size": 10, "ETag": f'"{etag}"'}])}


def test_extraction_job_request_and_its_feature_set_location() -> None:
    run = make_run()
    request = training_requests.extraction_job_request(run, ROLE, FEATURE_SET, EXECUTION)
    assert_valid("sagemaker", "CreateTrainingJob", request)
    # train.py's extract-only mode on the images, on the training instance type (GPU by default).
    assert json.loads(request["HyperParameters"][contract.EXTRACT_FEATURES_HYPERPARAMETER]) is True
    assert parse_config(["--extract-features-only", request["HyperParameters"]["extract-features-only"]],
                        env={}).extract_features_only
    assert [c["ChannelName"] for c in request["InputDataConfig"]] == ["train", "valid", "test"]
    assert request["ResourceConfig"]["InstanceType"] == run.settings.training_instance_type
    assert request["AlgorithmSpecification"]["TrainingImage"] == run.training_image_uri
    assert resource_tags.started_by(request["Tags"], EXECUTION)
    # The feature set lands in the data bucket, under a key of what the features depend on.
    checkpoint = request["CheckpointConfig"]
    assert checkpoint == {"S3Uri": feature_sets.feature_set_s3_uri(run, FEATURE_SET),
                          "LocalPath": "/opt/ml/checkpoints"}
    assert checkpoint["S3Uri"] == f"s3://{stack.BUCKET}/features/{FEATURE_SET}/"
    manifest_key = feature_sets.feature_set_manifest_key(FEATURE_SET)
    assert manifest_key == f"features/{FEATURE_SET}/feature-cache/feature-set.json"
    assert len(request["TrainingJobName"]) <= 63


def test_feature_set_id_covers_content_backbone_numerics_and_code_not_the_manifest_version() -> None:
    run = make_run()
    digest = feature_sets.dataset_content_digest(_listing())
    # Same data, backbone, numerics and code: the same feature set, whatever the manifest's version says.
    newer = plan_run(bucket=stack.BUCKET, manifest_key=f"datasets/{stack.DATASET}/manifest.json",
                     manifest=parse_manifest(json.dumps({"version": "v9", "overrides": {"epochs": 3}}), stack.DATASET),
                     settings=build_settings(asl_defaults(), {"epochs": 3}), prefix=stack.PREFIX, region=stack.REGION,
                     etag='"abc"', source_key="code/sourcedir-0123.tar.gz")
    assert feature_sets.feature_set_id(newer, digest) == feature_sets.feature_set_id(run, digest)
    for other in (make_run(backbone="resnet50"), make_run(precision="fp32"),
                  make_run(training_instance_type="ml.m5.xlarge")):
        assert feature_sets.feature_set_id(other, digest) != feature_sets.feature_set_id(run, digest)
    changed_code = dataclasses.replace(run, source_s3_uri=f"s3://{stack.BUCKET}/code/sourcedir-4567.tar.gz")
    assert feature_sets.feature_set_id(changed_code, digest) != feature_sets.feature_set_id(run, digest)
    # any file changed (ETag), renamed or added: another content digest
    assert feature_sets.dataset_content_digest(_listing(etag="e2")) != digest
    assert feature_sets.dataset_content_digest(_listing(name="001.A/img_1.jpg")) != digest
    # the digest is of the split-relative keys: the listing's order does not matter
    two = _listing()
    two["train"][1].append({"Key": two["train"][0] + "002.B/x.jpg", "Size": 3, "ETag": '"e3"'})
    flipped = {"train": (two["train"][0], list(reversed(two["train"][1])))}
    assert feature_sets.dataset_content_digest(two) == feature_sets.dataset_content_digest(flipped)


@pytest.mark.parametrize("input_mode", ["File", "FastFile"])
def test_tuning_on_the_features_channel(input_mode: str) -> None:
    run = make_run()
    cpu_image = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.6-cpu-py312"
    request = training_requests.tuning_job_request(run, ROLE, EXECUTION, features={
        "feature_set": FEATURE_SET, "instance_type": "ml.m5.large", "image_uri": cpu_image,
        "input_mode": input_mode})
    assert_valid("sagemaker", "CreateHyperParameterTuningJob", request)
    definition = request["TrainingJobDefinition"]
    assert definition["ResourceConfig"]["InstanceType"] == "ml.m5.large"
    assert definition["AlgorithmSpecification"]["TrainingImage"] == cpu_image
    (channel,) = definition["InputDataConfig"]  # only the features: no image is downloaded by a trial
    assert channel["ChannelName"] == contract.FEATURES_CHANNEL and channel["InputMode"] == input_mode
    feature_cache_uri = feature_sets.feature_set_s3_uri(run, FEATURE_SET) + "feature-cache/"
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == feature_cache_uri
    # The objective is the same metric and regex as on images.
    metrics = {m["Name"]: m["Regex"] for m in definition["AlgorithmSpecification"]["MetricDefinitions"]}
    assert metrics[contract.OBJECTIVE_METRIC_NAME] == contract.METRIC_REGEXES[contract.OBJECTIVE_METRIC_NAME]
    with pytest.raises(ValueError, match="File or FastFile"):
        training_requests.features_channel(run, FEATURE_SET, "Pipe")
