"""The inference Lambda's block of template.yaml: what it grants, what it is wired to, and that SAM
translates it into a Function URL with public access only under AuthType NONE."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from samtranslator.plugins.globals.globals import Globals
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
RESERVATION = {
    "Fn::If": ["HasInferenceReservation", {"Ref": "InferenceReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
}
MY_RESOURCES = (
    "InferenceFunction",
    "InferenceUrlPublicInvokeUrl",
    "InferenceUrlPublicInvokeFunction",
    "InferenceLogGroup",
)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml_parse(TEMPLATE.read_text())


def test_parameters(template):
    parameters = template["Parameters"]
    assert parameters["InferenceAuthType"]["Default"] == "NONE"
    assert set(parameters["InferenceAuthType"]["AllowedValues"]) == {"NONE", "AWS_IAM"}
    assert parameters["InferenceCorsAllowOrigins"]["Type"] == "CommaDelimitedList"
    # 0 = no reservation: accounts whose quota leaves no room for one can still deploy.
    assert parameters["InferenceReservedConcurrency"]["MinValue"] == 0
    assert "unreserved" in parameters["InferenceReservedConcurrency"]["Description"]
    assert parameters["InferenceTimeoutSeconds"]["MinValue"] >= 5  # invoke_budget needs at least that


def test_function_wiring(template):
    # As SAM deploys it: the template's Globals merged in by SAM's own code (a function's own value wins).
    properties = Globals(copy.deepcopy(template)).merge(
        "AWS::Serverless::Function", copy.deepcopy(template["Resources"]["InferenceFunction"]["Properties"])
    )
    assert (properties["CodeUri"], properties["Handler"], properties["Runtime"]) == (
        "functions/inference/",
        "app.handler",
        "python3.12",
    )
    assert {"Ref": "PipelineLayer"} in properties["Layers"]  # imgclf.contract comes from the layer
    variables = properties["Environment"]["Variables"]
    assert variables["ENDPOINT_NAME"] == {"Ref": "EndpointName"}
    assert "SAGEMAKER_RUNTIME_ENDPOINT_URL" not in variables  # local mode only
    # The handler fits botocore's timeouts into the function's: both must come from one parameter.
    assert variables["FUNCTION_TIMEOUT_SECONDS"] == properties["Timeout"] == {"Ref": "InferenceTimeoutSeconds"}
    assert properties["ReservedConcurrentExecutions"] == RESERVATION
    assert template["Conditions"]["HasInferenceReservation"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "InferenceReservedConcurrency"}, 0]}]
    }
    url = properties["FunctionUrlConfig"]
    assert url["AuthType"] == {"Ref": "InferenceAuthType"}
    assert url["Cors"]["AllowOrigins"] == {"Ref": "InferenceCorsAllowOrigins"}
    assert url["Cors"]["AllowMethods"] == ["POST"]


def test_least_privilege(template):
    [policy] = template["Resources"]["InferenceFunction"]["Properties"]["Policies"]
    [statement] = policy["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "sagemaker:InvokeEndpoint"
    assert statement["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:endpoint/${EndpointName}"
    }


def test_public_permissions_only_match_none_auth(template):
    resources = template["Resources"]
    url_permission = resources["InferenceUrlPublicInvokeUrl"]["Properties"]
    assert (url_permission["Action"], url_permission["FunctionUrlAuthType"]) == ("lambda:InvokeFunctionUrl", "NONE")
    invoke_permission = resources["InferenceUrlPublicInvokeFunction"]["Properties"]
    assert invoke_permission["Action"] == "lambda:InvokeFunction"
    assert invoke_permission["InvokedViaFunctionUrl"] is True
    # Under AWS_IAM neither permission exists.
    assert template["Conditions"]["InferenceIsPublic"] == {"Fn::Equals": [{"Ref": "InferenceAuthType"}, "NONE"]}
    for name in ("InferenceUrlPublicInvokeUrl", "InferenceUrlPublicInvokeFunction"):
        assert resources[name]["Condition"] == "InferenceIsPublic"


def test_url_output(template):
    assert template["Outputs"]["InferenceUrl"]["Value"] == {"Fn::GetAtt": ["InferenceFunctionUrl", "FunctionUrl"]}


def test_sam_translates_the_block(template, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    minimal = {
        "Transform": template["Transform"],
        "Globals": copy.deepcopy(template["Globals"]),  # what every function shares (Runtime, Handler, ...)
        "Parameters": copy.deepcopy(template["Parameters"]),
        "Conditions": copy.deepcopy(template["Conditions"]),
        "Resources": {name: copy.deepcopy(template["Resources"][name]) for name in (*MY_RESOURCES, "PipelineLayer")},
        "Outputs": {"InferenceUrl": template["Outputs"]["InferenceUrl"]},
    }
    for resource in minimal["Resources"].values():  # sam build/package would put S3 URIs here
        for key in ("CodeUri", "ContentUri"):
            if key in resource.get("Properties", {}):
                resource["Properties"][key] = "s3://bucket/key.zip"

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    resources = transform(minimal, {}, NoManagedPolicies())["Resources"]
    assert resources["InferenceFunctionUrl"]["Type"] == "AWS::Lambda::Url"
    assert resources["InferenceFunctionUrl"]["Properties"]["AuthType"] == {"Ref": "InferenceAuthType"}
    assert resources["InferenceFunction"]["Properties"]["ReservedConcurrentExecutions"] == RESERVATION
    permissions = [r for r in resources.values() if r["Type"] == "AWS::Lambda::Permission"]
    assert len(permissions) == 2  # ours; SAM adds none for a parameterised AuthType
