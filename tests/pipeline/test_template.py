"""template.yaml and statemachine/pipeline.asl.json, checked offline: the SAM transform + cfn-lint
(zero errors), checkov (no failing check; every skip justified in the template), asl-validator, the
cross-check of substitutions and functions, the EventBridge pattern, and `sam build` / `sam validate`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import iam_model
import pipeline_world as pw
import pytest
from mlpipeline import images
from mlpipeline.settings import Settings
from moto import mock_aws

from imgclf import contract

SAM = pw.REPO / ".venv-sam" / "bin" / "sam"
ASL_VALIDATOR = pw.REPO / "node_modules" / ".bin" / "asl-validator"
CHECKOV = pw.REPO / ".venv-checkov" / "bin" / "checkov"  # its own venv (Makefile: it pins an old boto3)


@pytest.fixture(scope="module")
def transformed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return iam_model.sam_transform(iam_model.packaged_template())


def test_sam_transform_then_cfn_lint_has_zero_errors(transformed: dict[str, Any]) -> None:
    from cfnlint.api import ManualArgs, lint

    assert transformed["Resources"]["PipelineStateMachine"]["Type"] == "AWS::StepFunctions::StateMachine"
    # The inlined definition becomes a Fn::Join of one element per line of the ASL, and cfn-lint resolves a
    # Join recursively, a stack frame per element (cfnlint/jsonschema/_resolvers_cfn.py, _join_expansion):
    # under pytest's deeper stack Python's default limit of 1000 frames ends that as "maximum recursion depth
    # exceeded" (E1022) for a definition of ~950 lines. Room for the definition's length, not a lint error.
    # (A deployed stack has no such Join: `sam package` uploads the ASL and the template names its S3 location.)
    joined = transformed["Resources"]["PipelineStateMachine"]["Properties"]["DefinitionString"]["Fn::Join"][1]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 3 * len(joined) + 1000))
    try:
        matches = lint(json.dumps(transformed), config=ManualArgs(regions=[pw.REGION]))
    finally:
        sys.setrecursionlimit(limit)
    errors = [str(m) for m in matches if m.rule.id.startswith("E")]
    assert errors == []
    # and cfn-lint on the SAM source itself (its own SAM handling)
    source = lint(pw.TEMPLATE_PATH.read_text(), config=ManualArgs(regions=[pw.REGION]))
    assert [str(m) for m in source if m.rule.id.startswith("E")] == []


def _checkov(path: Path, skips: list[str] | None = None) -> dict[str, Any]:
    command = [str(CHECKOV), "-f", str(path), "--framework", "cloudformation", "--skip-download", "-o", "json"]
    if skips:
        command += ["--skip-check", ",".join(skips)]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=240, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"}
    )
    report = json.loads(result.stdout[result.stdout.index("{") :])
    return report[0] if isinstance(report, list) else report


def _template_skips() -> dict[str, list[dict[str, str]]]:
    return {
        name: r.get("Metadata", {}).get("checkov", {}).get("skip", []) for name, r in pw.template()["Resources"].items()
    }


def test_checkov_passes_with_only_justified_skips(tmp_path: Path) -> None:
    report = _checkov(pw.TEMPLATE_PATH)
    failed = [(c["check_id"], c["resource"]) for c in report["results"].get("failed_checks", [])]
    assert failed == []
    assert report["summary"]["passed"] > 20
    for resource, skips in _template_skips().items():
        for skip in skips:
            assert len(skip.get("comment", "")) > 20, f"{resource}: skip {skip['id']} needs a justification"


def test_checkov_on_the_transformed_template(transformed: dict[str, Any], tmp_path: Path) -> None:
    """The resources SAM generates are checked too (a current checkov flags the public Function URL,
    CKV_AWS_258, only there: on the generated AWS::Lambda::Url). A generated `<Function>Role` or
    `<Function>Url` carries its function's justified skips."""
    skips = _template_skips()
    functions = [n for n, r in pw.template()["Resources"].items() if r["Type"] == "AWS::Serverless::Function"]
    resources = {}
    for name, resource in transformed["Resources"].items():
        owner = max((fn for fn in functions if name.startswith(fn)), key=len, default=name)
        resource = dict(resource)
        if skips.get(owner):
            resource["Metadata"] = {"checkov": {"skip": skips[owner]}}
        resources[name] = resource
    assert "InferenceFunctionUrl" in resources
    path = tmp_path / "transformed.json"
    path.write_text(json.dumps({**transformed, "Resources": resources}))
    report = _checkov(path)
    failed = [(c["check_id"], c["resource"]) for c in report["results"].get("failed_checks", [])]
    assert failed == []
    skipped = {(c["check_id"], c["resource"]) for c in report["results"].get("skipped_checks", [])}
    assert ("CKV_AWS_258", "AWS::Lambda::Url.InferenceFunctionUrl") in skipped


def test_asl_is_valid_for_asl_validator(tmp_path: Path) -> None:
    assert ASL_VALIDATOR.exists(), "run `make aws-tools` (npm ci) first"
    substituted = tmp_path / "pipeline.asl.json"
    substituted.write_text(pw.substitute(pw.ASL_PATH.read_text(), pw.resolve_substitutions(poll_seconds=60)))
    for path in (pw.ASL_PATH, substituted):
        result = subprocess.run(
            [str(ASL_VALIDATOR), "--json-path", str(path)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "broken.asl.json"
    broken.write_text(pw.ASL_PATH.read_text().replace('"Next": "StartTraining"', '"Next": "NoSuchState"'))
    result = subprocess.run(
        [str(ASL_VALIDATOR), "--json-path", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0  # the validator does check what we rely on it for


def test_every_substitution_is_defined_used_and_every_function_exists() -> None:
    template = pw.template()
    machine = template["Resources"]["PipelineStateMachine"]["Properties"]
    defined = set(machine["DefinitionSubstitutions"])
    used = set(re.findall(r"\$\{(\w+)\}", pw.ASL_PATH.read_text()))
    assert used == defined
    asl = json.loads(pw.ASL_PATH.read_text())
    # A Task names its function as its Resource, or (the lambda:invoke service integration, e.g.
    # .waitForTaskToken) as Parameters.FunctionName.
    task_functions = {
        (state["Parameters"]["FunctionName"] if state["Resource"].startswith("arn:aws:states:::lambda:invoke")
         else state["Resource"])[2:-1]
        for state in asl["States"].values() if state["Type"] == "Task"
    }
    invoke_allowed = {
        p["LambdaInvokePolicy"]["FunctionName"]["Ref"] for p in machine["Policies"] if "LambdaInvokePolicy" in p
    }
    for substitution in task_functions:
        logical_id = substitution.removesuffix("Arn")
        resource = template["Resources"][logical_id]
        assert resource["Type"] == "AWS::Serverless::Function"
        assert machine["DefinitionSubstitutions"][substitution] == {"Fn::GetAtt": [logical_id, "Arn"]}
        assert logical_id in invoke_allowed, f"the state machine may not invoke {logical_id}"
        code = pw.REPO / resource["Properties"]["CodeUri"] / "app.py"
        handler = pw.function_properties(template, logical_id)["Handler"]
        assert handler == "app.handler" and "def handler(" in code.read_text()
        assert pw.FUNCTIONS[logical_id] == Path(resource["Properties"]["CodeUri"]).name
    assert {f"{fn}Arn" for fn in pw.FUNCTIONS} == task_functions


def search_space_defaults() -> dict[str, Any]:
    """lr bounds and batch sizes of contract.SEARCH_SPACE (the template's defaults must equal these)."""
    out: dict[str, Any] = {}
    for parameter in contract.SEARCH_SPACE:
        if isinstance(parameter, contract.ContinuousParameter) and parameter.name == "lr":
            out["lr_min"], out["lr_max"] = parameter.min_value, parameter.max_value
        elif isinstance(parameter, contract.CategoricalParameter) and parameter.name == "batch-size":
            out["batch_sizes"] = list(parameter.values)
    return out


def test_settings_in_the_asl_match_the_settings_model_and_the_contract() -> None:
    asl = json.loads(pw.ASL_PATH.read_text())
    defaults = asl["States"]["ApplyDefaults"]["Parameters"]["defaults"]
    assert set(defaults) == set(Settings.__dataclass_fields__)
    parameters = pw.template()["Parameters"]
    space = search_space_defaults()
    assert float(parameters["LearningRateMin"]["Default"]) == space["lr_min"]
    assert float(parameters["LearningRateMax"]["Default"]) == space["lr_max"]
    assert parameters["BatchSizes"]["Default"].split(",") == space["batch_sizes"]
    assert tuple(parameters["Backbone"]["AllowedValues"]) == contract.BACKBONE_NAMES
    assert parameters["Backbone"]["Default"] == contract.DEFAULT_BACKBONE
    # every offered framework version resolves to training and inference images in the main regions
    for version in parameters["FrameworkVersion"]["AllowedValues"]:
        py = "py312" if version == "2.6" else "py311"
        for region in ("us-east-1", "eu-west-1", "ap-southeast-2"):
            assert images.pytorch_image_uri(
                "training", version, py, parameters["TrainingInstanceType"]["Default"], region
            )
            assert images.pytorch_image_uri(
                "inference", version, py, parameters["EndpointInstanceType"]["Default"], region
            )
    assert images.pytorch_image_uri(
        "inference",
        parameters["FrameworkVersion"]["Default"],
        parameters["PythonVersion"]["Default"],
        "ml.m5.large",
        "us-east-1",
    )
    assert contract.OBJECTIVE_METRIC_NAME in asl["States"]["StartTuning"]["Comment"]


def captured_trigger_events(uploads: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Upload (bucket, key) pairs to moto S3 with EventBridge notifications on, and return the events the
    template's DatasetUploaded rule (its real pattern) delivers; an SQS target stands in for the state
    machine (moto does not start executions from rules)."""
    pattern = pw.template()["Resources"]["PipelineStateMachine"]["Properties"]["Events"]["DatasetUploaded"][
        "Properties"
    ]["Pattern"]
    pattern = json.loads(json.dumps(pattern).replace('{"Ref": "DataBucket"}', json.dumps(pw.BUCKET)))
    with mock_aws():
        s3 = boto3.client("s3", region_name=pw.REGION)
        events = boto3.client("events", region_name=pw.REGION)
        sqs = boto3.client("sqs", region_name=pw.REGION)
        for bucket in {b for b, _ in uploads}:
            s3.create_bucket(Bucket=bucket)
            s3.put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
            )
        queue = sqs.create_queue(QueueName="rule-target")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name="DatasetUploaded", EventPattern=json.dumps(pattern))
        events.put_targets(Rule="DatasetUploaded", Targets=[{"Id": "pipeline", "Arn": queue_arn}])
        for bucket, key in uploads:
            s3.put_object(Bucket=bucket, Key=key, Body=b"{}")
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(m["Body"]) for m in messages]


def test_eventbridge_rule_delivers_only_the_manifest(aws_env: None) -> None:
    images_first = [
        (pw.BUCKET, f"datasets/dogImages/{split}/001.Affenpinscher/{i}.jpg")
        for split in ("train", "valid", "test")
        for i in range(5)
    ]
    delivered = captured_trigger_events(
        [
            *images_first,
            (pw.BUCKET, "datasets/dogImages/train/manifest.json.tmp"),
            (pw.BUCKET, "datasets/dogImages/manifest.json"),
            ("someone-elses-bucket", "datasets/dogImages/manifest.json"),
        ]
    )
    assert [(e["detail"]["bucket"]["name"], e["detail"]["object"]["key"]) for e in delivered] == [
        (pw.BUCKET, "datasets/dogImages/manifest.json")
    ]
    assert delivered[0]["detail-type"] == "Object Created" and delivered[0]["source"] == "aws.s3"


@pytest.mark.skipif(shutil.which("make") is None, reason="sam build's makefile builder needs make")
def test_sam_build_and_validate_offline(tmp_path: Path) -> None:
    assert SAM.exists(), "run `make aws-tools` first (the SAM CLI lives in .venv-sam)"
    env = {
        **os.environ,
        "PATH": f"{SAM.parent}:{os.environ['PATH']}",
        "AWS_DEFAULT_REGION": pw.REGION,
        "SAM_CLI_TELEMETRY": "0",
    }
    build_dir = tmp_path / "build"
    result = subprocess.run(
        [
            str(SAM),
            "build",
            "--template-file",
            str(pw.TEMPLATE_PATH),
            "--build-dir",
            str(build_dir),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        cwd=pw.REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    layer = build_dir / "PipelineLayer"
    assert (layer / "python" / "mlpipeline" / "training_requests.py").exists()
    assert (layer / "python" / "aws_lambda_powertools" / "logging" / "logger.py").exists()  # every handler logs with it
    assert (layer / "python" / "mlpipeline" / "image_uris.json").exists()
    assert (layer / "python" / "imgclf" / "contract.py").exists()
    assert (layer / "training-source" / "train.py").exists()
    assert not list(layer.rglob("torch")), "training/requirements.txt must not be installed into the layer"
    for folder in pw.FUNCTIONS.values():
        logical_id = next(k for k, v in pw.FUNCTIONS.items() if v == folder)
        assert (build_dir / logical_id / "app.py").exists()
    assert (build_dir / "TeardownFunction" / "app.py").exists()  # the StackTeardown custom resource
    validate = subprocess.run(
        [str(SAM), "validate", "--lint", "--template-file", str(pw.TEMPLATE_PATH)],
        cwd=pw.REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr


@pytest.mark.parametrize("environment", ["default", "prod"])
def test_samconfig_overrides_are_valid_parameters(environment: str) -> None:
    import tomllib

    config = tomllib.loads((pw.REPO / "samconfig.toml").read_text())[environment]
    parameters = pw.template()["Parameters"]
    assert config["deploy"]["parameters"]["capabilities"] == "CAPABILITY_IAM"
    for override in config["deploy"]["parameters"]["parameter_overrides"]:
        name, value = override.split("=", 1)
        spec = parameters[name]
        if "AllowedPattern" in spec:
            assert re.fullmatch(spec["AllowedPattern"], value), override
        if "AllowedValues" in spec:
            assert value in spec["AllowedValues"], override
        if spec["Type"] == "Number":
            assert float(spec.get("MinValue", float("-inf"))) <= float(value) <= float(
                spec.get("MaxValue", float("inf"))), override


def test_every_function_has_a_log_group_with_a_retention() -> None:
    """Left to Lambda, /aws/lambda/<function> is created on first use without a retention and kept forever;
    each function's group is a resource with RetentionInDays, named as Lambda names it."""
    resources = pw.template()["Resources"]
    groups = {
        json.dumps(r["Properties"]["LogGroupName"]): r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Logs::LogGroup"
    }
    for name, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        # Lambda's group is /aws/lambda/<function name>: the generated name, or the one the template sets.
        function_name = resource["Properties"].get("FunctionName", {"Fn::Sub": f"${{{name}}}"})
        group = groups.get(json.dumps({"Fn::Sub": f"/aws/lambda/{function_name['Fn::Sub']}"}))
        assert group is not None, f"{name} has no log group"
        assert group["RetentionInDays"] in (30, 90), name


def test_failed_executions_alarm_counts_failed_timed_out_and_aborted_executions() -> None:
    """A timed-out or aborted execution never reaches NotifyFailure; the Step Functions execution metrics
    (https://docs.aws.amazon.com/step-functions/latest/dg/procedure-cw-metrics.html) are summed."""
    alarm = pw.template()["Resources"]["FailedExecutionsAlarm"]["Properties"]
    metrics = {m["Id"]: m for m in alarm["Metrics"]}
    stats = {m["MetricStat"]["Metric"]["MetricName"]: m["Id"] for m in alarm["Metrics"] if "MetricStat" in m}
    assert set(stats) == {"ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted"}
    for metric_id in stats.values():
        stat = metrics[metric_id]["MetricStat"]
        assert stat["Metric"]["Namespace"] == "AWS/States" and stat["Stat"] == "Sum"
        assert stat["Metric"]["Dimensions"] == [{"Name": "StateMachineArn", "Value": {"Ref": "PipelineStateMachine"}}]
        assert metrics[metric_id]["ReturnData"] is False
    [expression] = [m for m in alarm["Metrics"] if "Expression" in m]
    assert expression["ReturnData"] is True
    assert set(re.findall(r"[a-z_]+", expression["Expression"].replace("SUM", ""))) == set(stats.values())
    assert alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["AlarmActions"] == [{"Ref": "NotificationTopic"}]


def test_every_lambda_retrier_retries_client_execution_timeouts() -> None:
    """AWS's list of Lambda service errors to retry includes Lambda.ClientExecutionTimeoutException
    (https://docs.aws.amazon.com/step-functions/latest/dg/bp-lambda-serviceexception.html)."""
    asl = json.loads(pw.ASL_PATH.read_text())
    retriers = [
        r for s in asl["States"].values() for r in s.get("Retry", []) if "Lambda.ServiceException" in r["ErrorEquals"]
    ]
    assert len(retriers) == sum(s["Type"] == "Task" for s in asl["States"].values())
    for retrier in retriers:
        assert {"Lambda.ClientExecutionTimeoutException", "Lambda.AWSLambdaException",
                "Lambda.SdkClientException", "Lambda.TooManyRequestsException"} <= set(retrier["ErrorEquals"])
