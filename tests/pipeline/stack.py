"""The stack the pipeline tests run against: its names, template.yaml and the ASL with their substitutions
resolved as CloudFormation would, the functions' environment and the S3 trigger's event. Pure (no moto),
so the unit tier's pipeline tests import it; pipeline_world re-exports it for the scenarios."""

from __future__ import annotations

import copy
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from samtranslator.plugins.globals.globals import Globals
from samtranslator.yaml_helper import yaml_parse

REPO = Path(__file__).resolve().parents[2]
LAYER = REPO / "functions" / "pipeline_layer"
REGION = "us-east-1"
ACCOUNT = "123456789012"
BUCKET = "imgclf-data-example"
PREFIX = "imgclf"
ENDPOINT = "imgclf-classifier"
TOPIC = "imgclf-notifications"
# What moto (and SNS) name the topic CreateTopic makes in this world.
TOPIC_ARN = f"arn:aws:sns:{REGION}:{ACCOUNT}:{TOPIC}"
STATE_MACHINE = "imgclf-pipeline"
DATASET = "dogImages"
MODEL_PACKAGE_GROUP = f"{PREFIX}-models"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/imgclf-sagemaker"
ASL_PATH = REPO / "statemachine" / "pipeline.asl.json"
TEMPLATE_PATH = REPO / "template.yaml"

# Logical id in template.yaml -> code folder in functions/.
FUNCTIONS: dict[str, str] = {
    "ValidateFunction": "validate",
    "StartTuningFunction": "start_tuning",
    "DescribeJobFunction": "describe_job",
    "StartTrainingFunction": "start_training",
    "QualityGateFunction": "quality_gate",
    "DeployFunction": "deploy",
    "ConfigureAutoscalingFunction": "configure_autoscaling",
    "SmokeTestFunction": "smoke_test",
    "CleanupFunction": "cleanup",
    "NotifyFunction": "notify",
    "ReportFunction": "report",
    "PrepareFeaturesFunction": "prepare_features",
    "RedeployFunction": "redeploy",
    "ApprovalFunction": "approval",
}


def load_handler(folder: str) -> ModuleType:
    """The handler module `functions.<folder>.app`, imported as the packaging maps it."""
    name = f"functions.{folder}.app"
    if name in sys.modules:
        return sys.modules[name]
    # A handler reads its environment once, at import (mlpipeline.function_env), as at a Lambda cold start:
    # this world's, which template.yaml gives the functions, whichever test imports it first.
    saved = dict(os.environ)
    os.environ.update(lambda_environment(topic_arn=TOPIC_ARN))
    try:
        return importlib.import_module(name)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def lambda_environment(topic_arn: str = "") -> dict[str, str]:
    """The union of the pipeline functions' environment variables in template.yaml, for this world."""
    return {
        "DATA_BUCKET": BUCKET,
        "RESOURCE_PREFIX": PREFIX,
        "SAGEMAKER_ROLE_ARN": ROLE_ARN,
        "ENDPOINT_NAME": ENDPOINT,
        "MODEL_PACKAGE_GROUP_NAME": MODEL_PACKAGE_GROUP,
        "MODEL_PACKAGE_GROUP_ARN": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package-group/{MODEL_PACKAGE_GROUP}",
        "NOTIFICATION_TOPIC_ARN": topic_arn,
        "ERRORS_ALARM_NAME": f"{ENDPOINT}-5xx-errors",
        "LATENCY_ALARM_NAME": f"{ENDPOINT}-model-latency",
        "TRAINING_SOURCE_DIR": str(REPO / "training"),
        "PRICE_LIST_API": "true",  # ReportFunction
    }


def template() -> dict[str, Any]:
    return yaml_parse(TEMPLATE_PATH.read_text())


def function_properties(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    """A function's Properties as SAM deploys it: the template's Globals merged in by SAM's own code
    (samtranslator's Globals plugin; a function's own value wins, lists such as Layers add up)."""
    return Globals(copy.deepcopy(template)).merge(
        "AWS::Serverless::Function", copy.deepcopy(template["Resources"][logical_id]["Properties"]), logical_id
    )


def parameter_defaults() -> dict[str, str]:
    return {name: str(p.get("Default", "")) for name, p in template()["Parameters"].items()}


def function_arn(logical_id: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{FUNCTIONS[logical_id]}"


def resolve_substitutions(poll_seconds: int = 0) -> dict[str, str]:
    """template.yaml's DefinitionSubstitutions, resolved the way CloudFormation would for this world:
    Ref -> the parameter's default, GetAtt X.Arn -> the moto function's ARN, Join -> joined defaults."""
    defaults = parameter_defaults()
    defaults["PollSeconds"] = str(poll_seconds)
    raw = template()["Resources"]["PipelineStateMachine"]["Properties"]["DefinitionSubstitutions"]
    resolved = {}
    for key, value in raw.items():
        if "Ref" in value:
            resolved[key] = defaults[value["Ref"]]
        elif "Fn::GetAtt" in value:
            logical_id, attribute = value["Fn::GetAtt"]
            assert attribute == "Arn", value
            resolved[key] = function_arn(logical_id)
        elif "Fn::Join" in value:
            _separator, ref = value["Fn::Join"]
            resolved[key] = defaults[ref["Ref"]]  # a CommaDelimitedList default is already joined
        else:
            raise AssertionError(f"unexpected substitution {key}: {value}")
    return resolved


def substitute(definition: str, substitutions: dict[str, str]) -> str:
    for key, value in substitutions.items():
        definition = definition.replace("${" + key + "}", value)
    assert "${" not in definition, "a substitution is missing"
    return definition


def s3_event(
    key: str,
    etag: str = "0123456789abcdef0123456789abcdef",
    bucket: str = BUCKET,
    version_id: str | None = None,
) -> dict[str, Any]:
    """The EventBridge event S3 sends for "Object Created" (the state machine's input). A versioned bucket
    (the template's DataBucket is) puts the version-id S3 returned for the put into every event."""
    obj: dict[str, Any] = {"key": key, "size": 64, "etag": etag, "sequencer": "0062E99A88DC407460"}
    if version_id is not None:
        obj["version-id"] = version_id
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": ACCOUNT,
        "time": "2026-11-23T12:00:00Z",
        "region": REGION,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": obj,
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": ACCOUNT,
            "source-ip-address": "203.0.113.15",
            "reason": "PutObject",
        },
    }


def _iso(value: Any) -> Any:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if hasattr(value, "strftime") else value


def model_package_event(description: dict[str, Any]) -> dict[str, Any]:
    """The "SageMaker Model Package State Change" event SageMaker sends to EventBridge for a model package, from
    its DescribeModelPackage answer: the detail is the package's description (the example in
    https://docs.aws.amazon.com/sagemaker/latest/dg/automating-sagemaker-with-eventbridge.html#eventbridge-model-package)."""
    detail = {k: _iso(v) for k, v in description.items() if k != "ResponseMetadata"}
    return {
        "version": "0",
        "id": "844e2571-85d4-695f-b930-0153b71dcb42",
        "detail-type": "SageMaker Model Package State Change",
        "source": "aws.sagemaker",
        "account": ACCOUNT,
        "time": "2026-11-23T12:00:00Z",
        "region": REGION,
        "resources": [description["ModelPackageArn"]],
        "detail": detail,
    }
