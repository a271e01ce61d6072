"""ApprovalMode=manual (issue 10, item 3): the real ASL under moto with the real handlers.

Where the behaviour comes from:
- the wait: moto's Step Functions interpreter (LocalStack's, moto/stepfunctions/parser) runs
  `arn:aws:states:::lambda:invoke.waitForTaskToken`, `$$.Task.Token`, SendTaskSuccess and TimeoutSecondsPath
  itself (States.Timeout when the wait outlives it), so the wait is moto's, not this file's;
- the person: `update-model-package` against moto's model registry, as the notification tells them to;
- SageMaker's event: moto emits none, so `registry_event` builds the "SageMaker Model Package State Change"
  event from the package's DescribeModelPackage answer, in the shape AWS documents
  (https://docs.aws.amazon.com/sagemaker/latest/dg/automating-sagemaker-with-eventbridge.html#eventbridge-model-package:
  envelope source aws.sagemaker, resources [the package ARN], detail = the package's description fields:
  ModelPackageGroupName, ModelPackageVersion, ModelPackageArn, ModelApprovalStatus, ...);
- EventBridge: the template's own ApprovalDecided pattern (SAM-transformed and resolved) is matched against
  that event by moto's EventBridge pattern matcher (moto.events.models.EventPattern, what moto's rules
  deliver by; moto does not implement the TestEventPattern API), following EventBridge's content filtering
  (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns.html: every field the pattern
  names must hold one of its values); only a matching event is delivered, as EventBridge's asynchronous
  invoke would (pipeline_world.deliver_event);
- IAM: every call the handlers made, ApprovalFunction's included, is evaluated per scenario (conftest.py).
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import iam_model
import pipeline_world as pw
import pytest
from mlpipeline import approval
from moto.events.models import EventPattern

MANUAL = {"approval_mode": "manual"}


# ---------------------------------------------------------------------------------------------------
# The registry's event and the template's rule.


def rule_pattern() -> dict[str, Any]:
    """ApprovalDecided's EventPattern as CloudFormation deploys it (SAM-transformed, resolved)."""
    template = iam_model.world_template()
    [rule] = [r for r in template.resources.values()
              if r["Type"] == "AWS::Events::Rule" and "ModelPackageGroupName" in json.dumps(r["Properties"])]
    return template.resolve(rule["Properties"]["EventPattern"])


def rule_matches(event: dict[str, Any]) -> bool:
    pattern = rule_pattern()
    return EventPattern(json.dumps(pattern), pattern).matches_event(event)


def test_the_rule_takes_this_groups_decisions_only(world: pw.PipelineWorld) -> None:
    package = world.sagemaker.create_model_package(
        ModelPackageGroupName=pw.MODEL_PACKAGE_GROUP, ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={"Containers": [{"Image": "x"}], "SupportedContentTypes": ["image/jpeg"],
                                "SupportedResponseMIMETypes": ["application/json"]})
    description = world.sagemaker.describe_model_package(ModelPackageName=package["ModelPackageArn"])
    assert not rule_matches(pw.model_package_event(description))  # pending is no decision
    for status in ("Approved", "Rejected"):
        assert rule_matches(pw.model_package_event({**description, "ModelApprovalStatus": status}))
    other = {**description, "ModelApprovalStatus": "Approved", "ModelPackageGroupName": "someone-elses"}
    assert not rule_matches(pw.model_package_event(other))
    assert not rule_matches({**pw.model_package_event({**description, "ModelApprovalStatus": "Approved"}),
                             "detail-type": "SageMaker Model State Change"})


def test_the_documented_example_event_is_a_decision() -> None:
    """The example of automating-sagemaker-with-eventbridge.html#eventbridge-model-package (its detail)."""
    arn = "arn:aws:sagemaker:us-east-2:123456789012:model-package/versionedmp-p-idy6c3e1fiqj/2"
    event = {"version": "0", "detail-type": "SageMaker Model Package State Change", "source": "aws.sagemaker",
             "resources": [arn], "detail": {"ModelPackageGroupName": "versionedmp-p-idy6c3e1fiqj",
                                            "ModelPackageVersion": 2, "ModelPackageArn": arn,
                                            "ModelPackageStatus": "Completed", "ModelApprovalStatus": "Rejected"}}
    decision = approval.decision_from_event(event)
    assert decision is not None and decision.status == "Rejected" and not decision.as_dict()["approved"]
    assert approval.token_key(arn) == "approvals/versionedmp-p-idy6c3e1fiqj/2.json"
    pending = {**event, "detail": {**event["detail"], "ModelApprovalStatus": "PendingManualApproval"}}
    assert approval.decision_from_event(pending) is None


# ---------------------------------------------------------------------------------------------------
# Scenarios.


def _start(world: pw.PipelineWorld, name: str, overrides: dict[str, Any]) -> str:
    return world.start(pw.upload_dataset(world.s3, manifest={"version": name, "overrides": overrides}), name)


def _decide(world: pw.PipelineWorld, arn: str, status: str, why: str) -> dict[str, Any]:
    """A person runs the command the notification gave; SageMaker's event goes through the rule."""
    world.sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status, ApprovalDescription=why)
    event = pw.model_package_event(world.sagemaker.describe_model_package(ModelPackageName=arn))
    assert rule_matches(event)
    return pw.deliver_event("approval", event)


def _request_notification(world: pw.PipelineWorld) -> str:
    [message] = [m for m in world.notifications() if "APPROVAL_REQUESTED" in m]
    return message


def test_approved_by_a_person_the_model_is_deployed(world: pw.PipelineWorld) -> None:
    execution_arn = _start(world, "approve", MANUAL)
    arn = world.waiting_for_approval(execution_arn)
    package = world.sagemaker.describe_model_package(ModelPackageName=arn)
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    assert world.sagemaker.list_endpoints()["Endpoints"] == []  # nothing deployed while it waits
    message = _request_notification(world)
    command = (f"aws sagemaker update-model-package --region {pw.REGION} --model-package-arn {arn} "
               "--model-approval-status Approved")
    assert command in message and "--model-approval-status Rejected" in message and "72 h" in message

    answer = _decide(world, arn, "Approved", "looks right")
    assert answer["resumed"] == execution_arn and answer["approved"] is True
    execution = world.ended(execution_arn)
    assert execution["status"] == "SUCCEEDED", execution
    states = world.states_entered(execution_arn)
    assert states[states.index("QualityGate"):states.index("Deploy") + 1] == [
        "QualityGate", "GatePassed?", "ApprovalRequired?", "WaitForApproval", "Approved?", "Deploy"]
    assert states[-1] == "Succeeded"
    assert world.sagemaker.describe_endpoint(EndpointName=pw.ENDPOINT)["EndpointStatus"] == "InService"
    assert json.loads(execution["output"])["approval"]["reason"] == "approved in the model registry: looks right"
    # the run's report says who decided, and why
    output = json.loads(execution["output"])
    key = output["report"]["report_s3_uri"].split(f"s3://{pw.BUCKET}/", 1)[1]
    page = world.s3.get_object(Bucket=pw.BUCKET, Key=key)["Body"].read().decode()
    assert "Manual approval: Approved (approved in the model registry: looks right)." in page
    # the token is used once: the record is gone, a repeated event resumes nothing
    assert world.s3.list_objects_v2(Bucket=pw.BUCKET, Prefix=approval.TOKEN_PREFIX).get("KeyCount") == 0
    event = pw.model_package_event(world.sagemaker.describe_model_package(ModelPackageName=arn))
    assert "ignored" in pw.deliver_event("approval", event)


def test_rejected_by_a_person_the_model_is_never_deployed(world: pw.PipelineWorld) -> None:
    execution_arn = _start(world, "reject", MANUAL)
    arn = world.waiting_for_approval(execution_arn)
    assert _decide(world, arn, "Rejected", "misclassifies terriers")["approved"] is False
    execution = world.ended(execution_arn)
    assert execution["status"] == "SUCCEEDED", execution
    states = world.states_entered(execution_arn)
    assert "Deploy" not in states and states[-4:] == ["Approved?", "ReportRejected", "NotifyRejected", "ModelRejected"]
    assert world.sagemaker.list_endpoints()["Endpoints"] == [] and world.sagemaker.list_models()["Models"] == []
    rejected = [m for m in world.notifications() if "REJECTED" in m]
    assert rejected and "Manual approval: rejected in the model registry: misclassifies terriers" in rejected[-1]


def test_no_decision_in_time_rejects_the_package(world: pw.PipelineWorld) -> None:
    execution_arn = _start(world, "expire", {**MANUAL, "approval_timeout_hours": 0.0005})  # 2 s
    arn = world.waiting_for_approval(execution_arn)
    execution = world.ended(execution_arn)
    assert execution["status"] == "SUCCEEDED", execution
    states = world.states_entered(execution_arn)
    assert "Deploy" not in states
    assert states[-4:] == ["ExpireApproval", "ReportRejected", "NotifyRejected", "ModelRejected"]
    package = world.sagemaker.describe_model_package(ModelPackageName=arn)
    assert package["ModelApprovalStatus"] == "Rejected"
    assert package["ApprovalDescription"] == "no decision within 0.0005 h: the approval expired"
    assert world.sagemaker.list_endpoints()["Endpoints"] == []
    assert any("the approval expired" in m for m in world.notifications())
    # the registry's event for the expiry itself, and a late approval, resume nothing
    assert "ignored" in pw.deliver_event("approval", pw.model_package_event(package))
    assert "ignored" in _decide(world, arn, "Approved", "too late")
    assert world.sagemaker.list_endpoints()["Endpoints"] == []


def test_a_run_that_fails_while_its_model_waits_rejects_the_package(world: pw.PipelineWorld) -> None:
    """The wait itself fails (here the topic it notifies is gone): Cleanup marks the package Rejected and drops
    its token, so the registry holds no PendingManualApproval version that no run will ever deploy."""
    sns = boto3.client("sns", region_name=pw.REGION)
    sns.delete_topic(TopicArn=world.topic_arn)
    execution = world.ended(_start(world, "broken-wait", MANUAL))
    assert execution["status"] == "FAILED", execution
    states = world.states_entered(execution["executionArn"])
    assert "WaitForApproval" in states and "Cleanup" in states and "Deploy" not in states
    [package] = world.sagemaker.list_model_packages(ModelPackageGroupName=pw.MODEL_PACKAGE_GROUP)[
        "ModelPackageSummaryList"]
    described = world.sagemaker.describe_model_package(ModelPackageName=package["ModelPackageArn"])
    assert described["ModelApprovalStatus"] == "Rejected"
    assert described["ApprovalDescription"] == "the run failed before a decision: never deployed"
    assert world.s3.list_objects_v2(Bucket=pw.BUCKET, Prefix=approval.TOKEN_PREFIX).get("KeyCount") == 0
    assert world.sagemaker.list_endpoints()["Endpoints"] == []


def test_a_decision_before_the_wait_began_is_not_lost(world: pw.PipelineWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """A person approves in the registry between QualityGate and WaitForApproval: the event finds no token
    yet, so WaitForApproval's own look at the package resumes the run."""
    gate = pw.load_handler("quality_gate")
    original = gate.handler

    def gate_then_a_quick_person(event: dict, context: Any = None) -> dict:
        answer = original(event, context)
        arn = answer["model_package_arn"]
        pw._running.function = None  # the person's call, not the gate's
        world.sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved",
                                             ApprovalDescription="quick")
        registry = pw.model_package_event(world.sagemaker.describe_model_package(ModelPackageName=arn))
        assert "ignored" in pw.deliver_event("approval", registry)  # no run waits yet
        pw._running.function = "quality_gate"
        return answer

    monkeypatch.setattr(gate, "handler", gate_then_a_quick_person)
    execution = world.run(pw.upload_dataset(world.s3, manifest={"version": "quick", "overrides": MANUAL}), "quick")
    assert execution["status"] == "SUCCEEDED", execution
    assert "Deploy" in world.states_entered(execution["executionArn"])
    assert json.loads(execution["output"])["approval"]["reason"] == "approved in the model registry: quick"
    assert not any("APPROVAL_REQUESTED" in m for m in world.notifications())
    assert world.s3.list_objects_v2(Bucket=pw.BUCKET, Prefix=approval.TOKEN_PREFIX).get("KeyCount") == 0


def test_auto_mode_registers_approved_and_never_waits(world: pw.PipelineWorld) -> None:
    execution = world.run(pw.upload_dataset(world.s3), "auto")
    assert execution["status"] == "SUCCEEDED", execution
    states = world.states_entered(execution["executionArn"])
    assert "WaitForApproval" not in states and "Deploy" in states
    [summary] = world.sagemaker.list_model_packages(ModelPackageGroupName=pw.MODEL_PACKAGE_GROUP)[
        "ModelPackageSummaryList"]
    assert summary["ModelApprovalStatus"] == "Approved"
    # the gate's own Approved registration also emits a decision event: nobody waits, nothing happens
    event = pw.model_package_event(world.sagemaker.describe_model_package(ModelPackageName=summary["ModelPackageArn"]))
    assert rule_matches(event) and "ignored" in pw.deliver_event("approval", event)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"approval_mode": "sometimes"}, "approval_mode must be one of ['auto', 'manual']"),
    ({"approval_timeout_hours": 0}, "approval_timeout_hours must be > 0 and <= 8760"),
    ({"approval_timeout_hours": 9000}, "approval_timeout_hours must be > 0 and <= 8760"),
])
def test_validate_refuses_nonsense_before_any_job(world: pw.PipelineWorld, overrides: dict, message: str) -> None:
    execution = world.ended(_start(world, "bad", overrides))
    error, cause = world.failure(execution)
    assert error == "InvalidDataset" and message in cause
    assert world.sagemaker.list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"] == []
    assert world.sagemaker.list_training_jobs()["TrainingJobSummaries"] == []


# ---------------------------------------------------------------------------------------------------
# The template.


def _statements(template: iam_model.WorldTemplate, role: str) -> list[dict[str, Any]]:
    return [s for p in template.policies(role) for s in p["policy"]["Statement"]]


def test_the_template_wires_the_rule_and_scopes_the_permissions() -> None:
    template = iam_model.world_template()
    function_arn = template.attribute("ApprovalFunction", "Arn")
    [rule] = [r for r in template.resources.values() if r["Type"] == "AWS::Events::Rule"
              and template.resolve(r["Properties"]["Targets"])[0]["Arn"] == function_arn]
    assert template.resolve(rule["Properties"]["EventPattern"]) == rule_pattern() == {
        "source": ["aws.sagemaker"], "detail-type": ["SageMaker Model Package State Change"],
        "detail": {"ModelPackageGroupName": [pw.MODEL_PACKAGE_GROUP], "ModelApprovalStatus": ["Approved", "Rejected"]}}
    [permission] = [template.resolve(r["Properties"]) for r in template.resources.values()
                    if r["Type"] == "AWS::Lambda::Permission"
                    and r["Properties"].get("Principal") == "events.amazonaws.com"
                    and template.resolve(r["Properties"]["FunctionName"]) == "approval"]
    assert permission["SourceArn"].endswith(":rule/ApprovalFunctionApprovalDecided")
    statements = _statements(template, template.role_of("ApprovalFunction"))
    by_action = {a: s for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    update = by_action["sagemaker:UpdateModelPackage"]
    assert update["Resource"] == f"arn:aws:sagemaker:{pw.REGION}:{pw.ACCOUNT}:model-package/{pw.PREFIX}-models/*"
    assert update["Condition"] == {"StringEquals": {"sagemaker:ModelApprovalStatus": "Rejected"}}  # never approves
    assert by_action["states:SendTaskSuccess"]["Resource"] == "*"  # no resource types in the reference
    assert "states:SendTaskFailure" not in by_action
    assert by_action["s3:PutObject"]["Resource"] == f"arn:aws:s3:::{pw.BUCKET}/{approval.TOKEN_PREFIX}*"
    # the state machine may invoke it (WaitForApproval, ExpireApproval)
    machine = template.role_of("PipelineStateMachine")
    assert any(function_arn in json.dumps(s.get("Resource")) and "lambda:InvokeFunction" in json.dumps(s["Action"])
               for s in _statements(template, machine))
