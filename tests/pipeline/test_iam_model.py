"""The IAM evaluation itself (iam_model.py): known-bad policies must be denied exactly where AWS denies
them, each defect of issue 9 is caught, and the template's own fixes are what makes its requests pass.

Every pipeline scenario is evaluated at teardown (conftest.py); these tests pin the evaluator's behaviour
with small, readable policies, so a regression in the model cannot hide behind a permissive template."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

import iam_model
import pipeline_world as pw
import pytest
from mlpipeline import deployment_requests, training_requests
from mlpipeline.run_state import RunState

EXECUTION_ARN = f"arn:aws:states:{pw.REGION}:{pw.ACCOUNT}:execution:imgclf-pipeline:run-1"
RUN = RunState.from_event(json.loads((pw.REPO / "events" / "deploy.json").read_text())["run"])
BUCKET_ARN = f"arn:aws:s3:::{pw.BUCKET}"
ENDPOINT_ARN = f"arn:aws:sagemaker:{pw.REGION}:{pw.ACCOUNT}:endpoint/{pw.ENDPOINT}"
CONFIG_ARN = f"arn:aws:sagemaker:{pw.REGION}:{pw.ACCOUNT}:endpoint-config/{RUN.endpoint_config_name}"
ALARMS = [f"{pw.ENDPOINT}-5xx-errors", f"{pw.ENDPOINT}-model-latency"]
MODEL_DATA_URL = f"s3://{pw.BUCKET}/models/{RUN.training_job_name}/output/model.tar.gz"


def _allow(action: str | list[str], resource: str | list[str] = "*", **condition: Any) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": action, "Resource": resource}
    if condition:
        statement["Condition"] = condition
    return statement


def _everything_but(*actions: str) -> dict[str, Any]:
    """Allow every other action, so that a test's verdicts come from the statements under test alone."""
    return {"Effect": "Allow", "NotAction": list(actions), "Resource": "*"}


def _template(roles: dict[str, list[dict[str, Any]]]) -> iam_model.WorldTemplate:
    """A template with one role per entry (a `<Name>Role` of a function `<Name>`, or a role by its own
    name) holding the given statements."""
    resources: dict[str, Any] = {}
    for name, statements in roles.items():
        role = name if name.endswith("Role") else f"{name}Role"
        resources[role] = {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "Policies": [
                    {
                        "PolicyName": f"{role}Policy",
                        "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
                    }
                ]
            },
        }
        if role != name:
            resources[name] = {"Type": "AWS::Lambda::Function", "Properties": {"Role": {"Fn::GetAtt": [role, "Arn"]}}}
    return iam_model.WorldTemplate({"Resources": resources})


def _verdicts(template: iam_model.WorldTemplate, calls: Iterable[iam_model.Call]) -> list[iam_model.Verdict]:
    return iam_model.evaluate(template, iam_model.Deriver(template, list(calls)).requests())


def _denied(template: iam_model.WorldTemplate, calls: Iterable[iam_model.Call]) -> set[tuple[str, str, str]]:
    return {
        (v.request.principal, v.request.action, v.request.resource) for v in _verdicts(template, calls) if not v.allowed
    }


def _deployment_calls(update: bool) -> list[iam_model.Call]:
    """What DeployFunction sends for a new model: the same request builders the handler uses."""
    deploy = [
        iam_model.Call(
            "DeployFunction", "sagemaker", "CreateModel",
            deployment_requests.model_request(RUN, pw.ROLE_ARN, MODEL_DATA_URL),
        ),
        iam_model.Call(
            "DeployFunction", "sagemaker", "CreateEndpointConfig", deployment_requests.endpoint_config_request(RUN, 0.9)
        ),
    ]
    if update:
        request = deployment_requests.update_endpoint_request(pw.ENDPOINT, RUN, ALARMS)
        return [*deploy, iam_model.Call("DeployFunction", "sagemaker", "UpdateEndpoint", request)]
    return [
        *deploy,
        iam_model.Call(
            "DeployFunction", "sagemaker", "CreateEndpoint",
            deployment_requests.create_endpoint_request(pw.ENDPOINT, RUN),
        ),
    ]


def _autoscaling_calls(function: str) -> list[iam_model.Call]:
    settings = RUN.settings
    return (
        [
            iam_model.Call(
                "CleanupFunction",
                "application-autoscaling",
                "RegisterScalableTarget",
                deployment_requests.register_scalable_target_request(pw.ENDPOINT, settings),
            ),
            iam_model.Call(
                "CleanupFunction",
                "application-autoscaling",
                "PutScalingPolicy",
                deployment_requests.scaling_policy_request(pw.ENDPOINT, settings),
            ),
        ]
        if function == "CleanupFunction"
        else [
            iam_model.Call(
                function,
                "application-autoscaling",
                "DeregisterScalableTarget",
                deployment_requests.scalable_target_id(pw.ENDPOINT),
            ),
        ]
    )


# --- defect 1: a versioned read ---------------------------------------------------------------------


def _manifest_read(version_id: str | None) -> iam_model.Call:
    params = {"Bucket": pw.BUCKET, "Key": f"datasets/{pw.DATASET}/manifest.json"}
    return iam_model.Call(
        "ValidateFunction", "s3", "GetObject", {**params, **({"VersionId": version_id} if version_id else {})}
    )


def test_get_object_with_a_version_id_needs_get_object_version() -> None:
    only_get = _template({"ValidateFunction": [_allow("s3:GetObject", f"{BUCKET_ARN}/datasets/*")]})
    manifest = f"{BUCKET_ARN}/datasets/{pw.DATASET}/manifest.json"
    assert _denied(only_get, [_manifest_read("3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY")]) == {
        ("ValidateFunctionRole", "s3:GetObjectVersion", manifest)
    }
    assert _denied(only_get, [_manifest_read(None)]) == set()  # the current version: s3:GetObject suffices
    fixed = _template(
        {"ValidateFunction": [_allow(["s3:GetObject", "s3:GetObjectVersion"], f"{BUCKET_ARN}/datasets/*")]}
    )
    assert _denied(fixed, [_manifest_read("3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY")]) == set()


def test_a_denial_names_the_function_action_resource_and_the_missing_statement() -> None:
    only_get = _template({"ValidateFunction": [_allow("s3:GetObject", f"{BUCKET_ARN}/datasets/*")]})
    text = iam_model.report(_verdicts(only_get, [_manifest_read("v1")]))
    manifest = f"{BUCKET_ARN}/datasets/{pw.DATASET}/manifest.json"
    assert "denies 1 of 1 requests" in text
    assert (
        f"ValidateFunction (role ValidateFunctionRole) is ImplicitlyDenied: s3:GetObjectVersion on {manifest}" in text
    )
    assert "which AWS authorizes as s3:GetObjectVersion" in text and '"s3:versionid": "v1"' in text
    needed = {"Effect": "Allow", "Action": "s3:GetObjectVersion", "Resource": manifest}
    assert f"missing statement (generalize as fits): {json.dumps(needed)}" in text


# --- defect 2: a 404 needs s3:ListBucket without a prefix ---------------------------------------------


def _source_probe(error: str | None) -> iam_model.Call:
    return iam_model.Call(
        "ValidateFunction", "s3", "HeadObject", {"Bucket": pw.BUCKET, "Key": "code/sourcedir-0123.tar.gz"}, error=error
    )


def test_a_missing_key_answers_404_only_with_list_bucket_on_the_bucket() -> None:
    prefixed = _template(
        {
            "ValidateFunction": [
                _allow(["s3:GetObject", "s3:PutObject"], f"{BUCKET_ARN}/code/*"),
                _allow("s3:ListBucket", BUCKET_ARN, StringLike={"s3:prefix": ["datasets/*", "code/*"]}),
            ]
        }
    )
    assert _denied(prefixed, [_source_probe("404")]) == {("ValidateFunctionRole", "s3:ListBucket", BUCKET_ARN)}
    text = iam_model.report(_verdicts(prefixed, [_source_probe("404")]))
    assert "StringLike s3:prefix ['datasets/*', 'code/*'] (absent from the request)" in text
    assert _denied(prefixed, [_source_probe(None)]) == set()  # found: no ListBucket involved
    whole_bucket = _template(
        {
            "ValidateFunction": [
                _allow(["s3:GetObject", "s3:PutObject"], f"{BUCKET_ARN}/code/*"),
                _allow("s3:ListBucket", BUCKET_ARN),
            ]
        }
    )
    assert _denied(whole_bucket, [_source_probe("404")]) == set()


def test_a_prefixed_listing_carries_its_prefix() -> None:
    prefixed = _template(
        {"ValidateFunction": [_allow("s3:ListBucket", BUCKET_ARN, StringLike={"s3:prefix": "datasets/*"})]}
    )
    listing = iam_model.Call(
        "ValidateFunction", "s3", "ListObjectsV2", {"Bucket": pw.BUCKET, "Prefix": "datasets/x/train/", "MaxKeys": 1}
    )
    assert _denied(prefixed, [listing]) == set()
    elsewhere = iam_model.Call("ValidateFunction", "s3", "ListObjectsV2", {"Bucket": pw.BUCKET, "Prefix": "models/"})
    assert _denied(prefixed, [elsewhere]) == {("ValidateFunctionRole", "s3:ListBucket", BUCKET_ARN)}


# --- defect 3: CreateEndpoint and UpdateEndpoint need both resource types ------------------------------


@pytest.mark.parametrize("update", [False, True], ids=["CreateEndpoint", "UpdateEndpoint"])
def test_create_and_update_endpoint_are_authorized_against_the_endpoint_config_too(update: bool) -> None:
    action = "sagemaker:UpdateEndpoint" if update else "sagemaker:CreateEndpoint"
    endpoint_only = _template(
        {
            "DeployFunction": [_everything_but(action), _allow(action, ENDPOINT_ARN)],
            "SageMakerExecutionRole": [_allow("*")],
        }
    )
    assert _denied(endpoint_only, _deployment_calls(update)) == {("DeployFunctionRole", action, CONFIG_ARN)}
    both = _template(
        {
            "DeployFunction": [_everything_but(action), _allow(action, [ENDPOINT_ARN, CONFIG_ARN])],
            "SageMakerExecutionRole": [_allow("*")],
        }
    )
    assert _denied(both, _deployment_calls(update)) == set()


# --- defect 4: the execution role reads the rollback alarms --------------------------------------------


def test_deployment_guardrails_read_the_rollback_alarms_as_the_execution_role() -> None:
    without = _template(
        {
            "DeployFunction": [_allow("*")],
            "SageMakerExecutionRole": [_everything_but("cloudwatch:DescribeAlarms")],
        }
    )
    alarm_arns = {f"arn:aws:cloudwatch:{pw.REGION}:{pw.ACCOUNT}:alarm:{name}" for name in ALARMS}
    assert _denied(without, _deployment_calls(update=True)) == {
        ("SageMakerExecutionRole", "cloudwatch:DescribeAlarms", arn) for arn in alarm_arns
    }
    assert _denied(without, _deployment_calls(update=False)) == set()  # no rollback alarms on a create


# --- defect 5a: what Application Auto Scaling checks of its caller --------------------------------------

AUTOSCALING_CALLER = [
    _allow("application-autoscaling:*"),
    _allow(["sagemaker:DescribeEndpoint", "sagemaker:UpdateEndpointWeightsAndCapacities"], ENDPOINT_ARN),
    _allow(
        "sagemaker:DescribeEndpointConfig", f"arn:aws:sagemaker:{pw.REGION}:{pw.ACCOUNT}:endpoint-config/{pw.PREFIX}-*"
    ),
    _allow(
        ["cloudwatch:DescribeAlarms", "cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms"],
        f"arn:aws:cloudwatch:{pw.REGION}:{pw.ACCOUNT}:alarm:TargetTracking-endpoint/{pw.ENDPOINT}/*",
    ),
    _allow(
        "iam:CreateServiceLinkedRole",
        f"arn:aws:iam::{pw.ACCOUNT}:role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/*",
        StringLike={"iam:AWSServiceName": "sagemaker.application-autoscaling.amazonaws.com"},
    ),
]


def test_registering_autoscaling_needs_the_documented_caller_permissions() -> None:
    created = _deployment_calls(update=False)  # the endpoint (and its config) the scalable target scales
    only_autoscaling = _template(
        {
            "DeployFunction": [_allow("*")],
            "SageMakerExecutionRole": [_allow("*")],
            "CleanupFunction": [_allow("application-autoscaling:*")],
        }
    )
    denied = _denied(only_autoscaling, [*created, *_autoscaling_calls("CleanupFunction")])
    assert {action for principal, action, _ in denied if principal == "CleanupFunctionRole"} == {
        "sagemaker:DescribeEndpoint",
        "sagemaker:DescribeEndpointConfig",
        "sagemaker:UpdateEndpointWeightsAndCapacities",
        "cloudwatch:DescribeAlarms",
        "cloudwatch:PutMetricAlarm",
        "cloudwatch:DeleteAlarms",
        "iam:CreateServiceLinkedRole",
    }
    documented = _template(
        {
            "DeployFunction": [_allow("*")],
            "SageMakerExecutionRole": [_allow("*")],
            "CleanupFunction": AUTOSCALING_CALLER,
        }
    )
    assert _denied(documented, [*created, *_autoscaling_calls("CleanupFunction")]) == set()
    other_service = copy.deepcopy(AUTOSCALING_CALLER)
    other_service[-1]["Condition"] = {"StringLike": {"iam:AWSServiceName": "ecs.application-autoscaling.amazonaws.com"}}
    wrong = _template(
        {"DeployFunction": [_allow("*")], "SageMakerExecutionRole": [_allow("*")], "CleanupFunction": other_service}
    )
    assert {a for _, a, _ in _denied(wrong, [*created, *_autoscaling_calls("CleanupFunction")])} == {
        "iam:CreateServiceLinkedRole"
    }


def test_deregistering_autoscaling_is_checked_like_registering_but_creates_no_role() -> None:
    calls = [*_deployment_calls(update=False), *_autoscaling_calls("DeployFunction")]
    no_cloudwatch = _template(
        {"DeployFunction": [_everything_but("cloudwatch:*")], "SageMakerExecutionRole": [_allow("*")]}
    )
    assert {a for _, a, _ in _denied(no_cloudwatch, calls)} == {
        "cloudwatch:DescribeAlarms",
        "cloudwatch:PutMetricAlarm",
        "cloudwatch:DeleteAlarms",
    }
    derived = iam_model.Deriver(no_cloudwatch, calls).requests()
    assert "iam:CreateServiceLinkedRole" not in {r.action for r in derived}


# --- iam:PassRole, the execution role's own needs, explicit denies, clear failures --------------------


def test_pass_role_needs_the_service_it_is_passed_to() -> None:
    tuning = iam_model.Call(
        "StartTuningFunction",
        "sagemaker",
        "CreateHyperParameterTuningJob",
        training_requests.tuning_job_request(RUN, pw.ROLE_ARN, EXECUTION_ARN),
    )
    to_lambda = _template(
        {
            "StartTuningFunction": [
                _everything_but("iam:PassRole"),
                _allow("iam:PassRole", pw.ROLE_ARN, StringEquals={"iam:PassedToService": "lambda.amazonaws.com"}),
            ],
            "SageMakerExecutionRole": [_allow("*")],
        }
    )
    assert _denied(to_lambda, [tuning]) == {("StartTuningFunctionRole", "iam:PassRole", pw.ROLE_ARN)}
    to_sagemaker = _template(
        {
            "StartTuningFunction": [
                _everything_but("iam:PassRole"),
                _allow("iam:PassRole", pw.ROLE_ARN, StringEquals={"iam:PassedToService": "sagemaker.amazonaws.com"}),
            ],
            "SageMakerExecutionRole": [_allow("*")],
        }
    )
    assert _denied(to_sagemaker, [tuning]) == set()


def test_the_execution_role_needs_every_location_and_image_a_job_request_names() -> None:
    """Derived from the request's fields, so a field another change adds (here a TensorBoard output under a
    prefix nobody granted) is checked without teaching the model anything."""
    request = training_requests.tuning_job_request(RUN, pw.ROLE_ARN, EXECUTION_ARN)
    request["TrainingJobDefinition"]["TensorBoardOutputConfig"] = {"S3OutputPath": f"s3://{pw.BUCKET}/somewhere-new/"}
    call = iam_model.Call("StartTuningFunction", "sagemaker", "CreateHyperParameterTuningJob", request)
    template = iam_model.world_template()  # the real SageMakerExecutionRole
    derived = iam_model.Deriver(template, [call]).requests()
    needs = {(r.action, r.resource) for r in derived if r.principal == "SageMakerExecutionRole"}
    train = f"datasets/{RUN.dataset}/{RUN.splits['train']}/"
    assert ("s3:GetObject", f"{BUCKET_ARN}/{train}example-object") in needs
    assert ("s3:GetObject", f"{BUCKET_ARN}/{RUN.source_s3_uri.removeprefix(f's3://{pw.BUCKET}/')}") in needs
    assert ("ecr:BatchGetImage", "arn:aws:ecr:us-east-1:763104351884:repository/pytorch-training") in needs
    assert (
        "logs:PutLogEvents",
        f"arn:aws:logs:{pw.REGION}:{pw.ACCOUNT}:log-group:/aws/sagemaker/TrainingJobs:"
        f"log-stream:{RUN.tuning_job_name}/algo-1",
    ) in needs
    [listing] = [r for r in derived if r.action == "s3:ListBucket" and dict(r.context).get("s3:prefix") == train]
    assert listing.principal == "SageMakerExecutionRole"
    denied = {(v.request.action, v.request.resource) for v in iam_model.evaluate(template, derived) if not v.allowed}
    assert denied == {("s3:PutObject", f"{BUCKET_ARN}/somewhere-new/{RUN.tuning_job_name}/example-object")}


def test_an_explicit_deny_wins_and_is_named() -> None:
    deny = {
        "Sid": "NoManifests",
        "Effect": "Deny",
        "Action": "s3:*",
        "Resource": f"{BUCKET_ARN}/datasets/*/manifest.json",
    }
    template = _template({"ValidateFunction": [_allow("s3:*", f"{BUCKET_ARN}/*"), deny]})
    [verdict] = _verdicts(template, [_manifest_read(None)])
    assert verdict.result == "ExplicitlyDenied"
    assert '"Sid": "NoManifests"' in iam_model.explain(verdict)


def test_a_call_the_model_cannot_authorize_fails_with_what_to_teach_it() -> None:
    template = _template({"ValidateFunction": [_allow("*")]})
    unknown = iam_model.Call("ValidateFunction", "s3", "SelectObjectContentV9", {"Bucket": pw.BUCKET})
    with pytest.raises(iam_model.DerivationError, match="_ACTION_OF_OPERATION"):
        iam_model.Deriver(template, [unknown]).requests()
    nameless = iam_model.Call("ValidateFunction", "sagemaker", "DescribeEndpoint", {})
    with pytest.raises(iam_model.DerivationError, match="required resource type endpoint"):
        iam_model.Deriver(template, [nameless]).requests()


def test_the_operation_tables_name_actions_the_reference_knows() -> None:
    for action in {*iam_model._ACTION_OF_OPERATION.values(), *iam_model._VERSIONED_ACTION.values()}:
        assert iam_model.REFERENCE.action(action)["exists"], action
    # the fact behind defect 3, from the Service Authorization Reference data (not from memory)
    create = iam_model.REFERENCE.action("sagemaker:CreateEndpoint")
    assert {t["name"] for t in create["resourceTypes"] if t["required"]} == {"endpoint", "endpoint-config"}


# --- the real template -----------------------------------------------------------------------------------


def test_the_world_template_resolves_as_the_world_names_things() -> None:
    """The names the evaluation resolves the template to are the names the handlers see in the world
    (their environment), so a policy's ARN and a call's ARN are comparable."""
    template = iam_model.world_template()
    world = pw.lambda_environment(topic_arn=f"arn:aws:sns:{pw.REGION}:{pw.ACCOUNT}:{pw.TOPIC}")
    for logical_id, folder in pw.FUNCTIONS.items():
        environment = template.environment(logical_id)
        if not environment:  # a handler that takes everything from its event (SmokeTest) reads no variable
            assert "os.environ" not in (pw.REPO / "functions" / folder / "app.py").read_text(), logical_id
            continue
        assert {k: world[k] for k in environment} == environment, logical_id
    assert template.role_arn("SageMakerExecutionRole") == pw.ROLE_ARN


def _drop_action(role: str, action: str, where: Callable[[dict[str, Any]], bool] = lambda s: True) -> Any:
    def mutate(resources: dict[str, Any]) -> None:
        for policy in resources[role]["Properties"]["Policies"]:
            for statement in policy["PolicyDocument"]["Statement"]:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                if action in actions and where(statement):
                    statement["Action"] = [a for a in actions if a != action] or ["sts:GetCallerIdentity"]

    return mutate


def _prefix_condition(resources: dict[str, Any]) -> None:
    """Validate's ListBucket as it was: conditioned on s3:prefix."""
    for policy in resources["ValidateFunctionRole"]["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            if statement["Action"] == "s3:ListBucket":
                statement["Condition"] = {"StringLike": {"s3:prefix": ["datasets/*", "code/*"]}}


def _names(statement: dict[str, Any], text: str) -> bool:
    return text in json.dumps(statement["Resource"])


DEFECTS = {
    "1-GetObjectVersion": (
        [_manifest_read("v1")],
        _drop_action("ValidateFunctionRole", "s3:GetObjectVersion"),
        ("ValidateFunctionRole", "s3:GetObjectVersion"),
    ),
    "2-ListBucket-for-404": ([_source_probe("404")], _prefix_condition, ("ValidateFunctionRole", "s3:ListBucket")),
    "3-CreateEndpoint-config": (
        _deployment_calls(update=False),
        _drop_action("DeployFunctionRole", "sagemaker:CreateEndpoint", lambda s: _names(s, "endpoint-config/")),
        ("DeployFunctionRole", "sagemaker:CreateEndpoint"),
    ),
    "3-UpdateEndpoint-config": (
        _deployment_calls(update=True),
        _drop_action("DeployFunctionRole", "sagemaker:UpdateEndpoint", lambda s: _names(s, "endpoint-config/")),
        ("DeployFunctionRole", "sagemaker:UpdateEndpoint"),
    ),
    "4-rollback-alarms": (
        _deployment_calls(update=True),
        _drop_action("SageMakerExecutionRole", "cloudwatch:DescribeAlarms"),
        ("SageMakerExecutionRole", "cloudwatch:DescribeAlarms"),
    ),
    "5a-UpdateEndpointWeightsAndCapacities": (
        [*_deployment_calls(update=False), *_autoscaling_calls("CleanupFunction")],
        _drop_action("CleanupFunctionRole", "sagemaker:UpdateEndpointWeightsAndCapacities"),
        ("CleanupFunctionRole", "sagemaker:UpdateEndpointWeightsAndCapacities"),
    ),
    "5a-CreateServiceLinkedRole": (
        [*_deployment_calls(update=False), *_autoscaling_calls("CleanupFunction")],
        _drop_action("CleanupFunctionRole", "iam:CreateServiceLinkedRole"),
        ("CleanupFunctionRole", "iam:CreateServiceLinkedRole"),
    ),
}


@pytest.mark.parametrize("defect", DEFECTS)
def test_the_templates_fix_of_each_defect_is_what_authorizes_it(defect: str) -> None:
    calls, undo_fix, (principal, action) = DEFECTS[defect]
    fixed = iam_model.world_template()
    assert [v for v in _verdicts(fixed, calls) if not v.allowed] == []
    transformed = iam_model.sam_transform(iam_model.packaged_template())
    undo_fix(transformed["Resources"])
    denied = _denied(iam_model.WorldTemplate(transformed), calls)
    assert denied and {(p, a) for p, a, _ in denied} == {(principal, action)}


def test_the_state_machine_may_invoke_every_task_and_the_rule_may_start_it() -> None:
    template = iam_model.world_template()
    definition = json.loads(pw.substitute(pw.ASL_PATH.read_text(), pw.resolve_substitutions()))
    # A Task names its function in Resource (a function ARN) or, as a lambda:invoke integration, in FunctionName.
    targets = [json.dumps(s) for s in definition["States"].values() if s["Type"] == "Task"]
    tasks = {name for target in targets for name in re.findall(r":function:([\w-]+)", target)}
    assert tasks == set(pw.FUNCTIONS.values())
    verdicts = iam_model.evaluate(template, iam_model.state_machine_requests(template, tasks))
    assert len(verdicts) == len(tasks) and all(v.allowed for v in verdicts), iam_model.report(verdicts)
    rule = template.resources["PipelineStateMachineDatasetUploaded"]["Properties"]["Targets"][0]
    start = iam_model.Deriver(template, []).authorize(
        rule["RoleArn"]["Fn::GetAtt"][0],
        "EventBridge rule DatasetUploaded",
        "states:StartExecution",
        {"stateMachineArn": template.resolve(rule["Arn"])},
        "the rule starts an execution per manifest upload",
    )
    [verdict] = iam_model.evaluate(template, list(start))
    assert verdict.allowed and verdict.request.resource.endswith(f":stateMachine:{pw.STATE_MACHINE}")


def test_the_inference_function_may_invoke_the_endpoint() -> None:
    template = iam_model.world_template()
    endpoint = template.environment("InferenceFunction")["ENDPOINT_NAME"]
    call = iam_model.Call(
        "InferenceFunction",
        "sagemaker",
        "InvokeEndpoint",  # imgclf_lambda.endpoint.invoke
        {"EndpointName": endpoint, "ContentType": "image/jpeg", "Accept": "application/json"},
    )
    [verdict] = _verdicts(template, [call])
    assert verdict.allowed and verdict.request.resource == ENDPOINT_ARN


# --- conditional policies, parameter values, alternative resource types -------------------------------


def _conditional_template(parameters: dict[str, str]) -> iam_model.WorldTemplate:
    """A role whose S3 grant is an AWS::IAM::Policy that exists only when Mode=Open (as TeardownDataBucketPolicy)."""
    transformed = {
        "Parameters": {"Mode": {"Type": "String", "Default": "Closed", "AllowedValues": ["Closed", "Open"]}},
        "Conditions": {"IsOpen": {"Fn::Equals": [{"Ref": "Mode"}, "Open"]}},
        "Resources": {
            "WorkerRole": {"Type": "AWS::IAM::Role", "Properties": {"Policies": []}},
            "Worker": {"Type": "AWS::Lambda::Function", "Properties": {"Role": {"Fn::GetAtt": ["WorkerRole", "Arn"]}}},
            "OpenPolicy": {
                "Type": "AWS::IAM::Policy",
                "Condition": "IsOpen",
                "Properties": {
                    "PolicyName": "open",
                    "Roles": [{"Ref": "WorkerRole"}],
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            _allow(["s3:ListBucketVersions", "s3:DeleteObjectVersion"], [BUCKET_ARN, f"{BUCKET_ARN}/*"])
                        ],
                    },
                },
            },
        },
    }
    return iam_model.WorldTemplate(transformed, parameters)


def test_a_policy_under_a_condition_applies_only_where_the_parameters_make_it_true() -> None:
    calls = [
        iam_model.Call("Worker", "s3", "ListObjectVersions", {"Bucket": pw.BUCKET}),
        iam_model.Call(
            "Worker",
            "s3",
            "DeleteObjects",
            {"Bucket": pw.BUCKET, "Delete": {"Objects": [{"Key": "a.jpg", "VersionId": "v1"}]}},
        ),
    ]
    assert _denied(_conditional_template({"Mode": "Open"}), calls) == set()
    assert _denied(_conditional_template({}), calls) == {  # the default, Closed: CloudFormation creates no policy
        ("WorkerRole", "s3:ListBucketVersions", BUCKET_ARN),
        ("WorkerRole", "s3:DeleteObjectVersion", f"{BUCKET_ARN}/a.jpg"),
    }
    with pytest.raises(iam_model.DerivationError, match="AllowedValues"):
        _conditional_template({"Mode": "Ajar"})


def test_list_executions_is_authorized_on_the_state_machine_it_names() -> None:
    """The reference marks both stateMachine and mapRun required; the API takes one or the other."""
    machine = f"arn:aws:states:{pw.REGION}:{pw.ACCOUNT}:stateMachine:{pw.STATE_MACHINE}"
    template = _template({"Worker": [_allow("states:ListExecutions", machine)]})
    listing = iam_model.Call("Worker", "states", "ListExecutions", {"stateMachineArn": machine})
    [verdict] = _verdicts(template, [listing])
    assert verdict.allowed and verdict.request.resource == machine
    with pytest.raises(iam_model.DerivationError, match="exactly one of"):
        iam_model.Deriver(template, [iam_model.Call("Worker", "states", "ListExecutions", {})]).requests()
