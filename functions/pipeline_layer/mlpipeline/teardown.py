"""Stack teardown: what `sam delete` must remove that CloudFormation does not know it owns.

The pipeline creates the endpoint, its endpoint configs and models, the autoscaling target (with its
target-tracking policy and the CloudWatch alarms Application Auto Scaling made for it), tuning and
training jobs, and model package versions. None of them is a CloudFormation resource, the endpoint and
running jobs bill by the hour, and two of them block the deletion of resources that are:
- "You can only delete an empty model group. Before you delete your model group, remove its model
  versions" (https://docs.aws.amazon.com/sagemaker/latest/dg/model-registry-delete-model-group.html);
- a bucket must hold no object version and no delete marker before DeleteBucket succeeds
  (https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteBucket.html), and the data bucket is versioned.

The TeardownFunction (functions/teardown/app.py) is the handler of the stack's StackTeardown custom
resource. On Delete it observes the world (Observation), asks `plan_teardown` what to do next, does it,
and repeats until a fresh observation needs nothing more; this module is that decision, pure.

Which resources are this stack's: those named `<ResourcePrefix>-...` (every job, model and endpoint config
the pipeline creates is, see imgclf.manifest.run_id). The prefix is unique per account and region while
the stack lives, because the stack's model package group is named `<ResourcePrefix>-models` and such
names are unique per account and region; the prefix has no hyphen (template AllowedPattern), so
`imgclf-` never matches another stack's `imgclfb-`. The endpoint is this stack's only while it serves one
of this stack's endpoint configs: an endpoint of the same name serving someone else's config is left alone.

Over ~300 lines on purpose: what the stack owns, the plan's order (jobs, endpoint, configs and models,
packages, bucket) and when to hand over to a fresh invocation are one decision, read top to bottom.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlpipeline import custom_resource, deployment_requests

# The DataBucketOnDelete parameter's AllowedValues (template.yaml; a test checks they agree).
BUCKET_RETAIN = "Retain"
BUCKET_EMPTY = "Empty"
BUCKET_ON_DELETE = (BUCKET_RETAIN, BUCKET_EMPTY)

# The stack status while DeleteStack runs. CloudFormation also sends Delete to a custom resource that an
# update removes from the template, that an update rollback removes (a stack updated to this template
# whose update then failed), or that a failed create rolls back: none of those may tear down a live
# endpoint, so only a stack being deleted is torn down.
# https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_Stack.html (StackStatus)
DELETING_STACK = "DELETE_IN_PROGRESS"

# DescribeEndpoint's EndpointStatus values (https://docs.aws.amazon.com/sagemaker/latest/APIReference/
# API_DescribeEndpoint.html). DeleteEndpoint is sent in the stable ones. SystemUpdating "cannot be updated
# or deleted or re-scaled until it has completed"; Creating/Updating/RollingBack end by themselves
# (an in-flight Deploy task of an execution we stopped); Deleting is what we wait for.
DELETABLE_ENDPOINT = frozenset({"InService", "Failed", "OutOfService", "UpdateRollbackFailed"})

# Job statuses that still bill or still write to the bucket. A stopped training job gets SIGTERM and up
# to 120 s "to save the model artifacts" while Stopping
# (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_StopTrainingJob.html): the bucket is
# emptied only once no job of the stack is InProgress or Stopping.
RUNNING_JOB = "InProgress"
ENDING_JOB = "Stopping"
LIVE_JOB_STATUSES = (RUNNING_JOB, ENDING_JOB)

# StopExecution aborts the execution, not the Lambda task it is running: Lambda has no API to cancel a
# running invocation, so a Deploy task may still call CreateEndpoint until its Timeout. After stopping an
# execution the teardown keeps looking for that long. It is the longest Timeout of the pipeline functions
# the state machine invokes (DeployFunction, 300 s); tests/pipeline/test_teardown.py checks it against
# template.yaml.
IN_FLIGHT_TASK_SECONDS = 300

# Pacing. One pass (observe, plan, act) every POLL_SECONDS; a pass never starts unless it can end
# HANDOVER_MARGIN_SECONDS before the Lambda timeout (900 s at most): then the function invokes itself
# asynchronously with the same event and its progress, and the last invocation answers CloudFormation.
# CloudFormation waits ServiceTimeout seconds for the answer (1-3600, default 3600:
# https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-cloudformation-customresource.html);
# the teardown answers FAILED, with what is left, RESPONSE_MARGIN_SECONDS before that, so the stack
# deletion ends DELETE_FAILED (delete it again to resume) and never hangs.
POLL_SECONDS = 15
HANDOVER_MARGIN_SECONDS = 60
RESPONSE_MARGIN_SECONDS = 120
DEFAULT_SERVICE_TIMEOUT_SECONDS = 3600

# Where a Delete's progress travels from one invocation to the next (not a CloudFormation field).
PROGRESS_KEY = "TeardownProgress"


class InvalidTeardownRequest(custom_resource.InvalidRequest):
    """The custom resource's properties are unusable; the message says what is wrong."""


@dataclass(frozen=True)
class StackResources:
    """What identifies this stack's resources: the custom resource's properties (template.yaml)."""

    stack_id: str
    resource_prefix: str
    endpoint_name: str
    state_machine_arn: str
    model_package_group_name: str
    data_bucket: str
    empty_data_bucket: bool
    service_timeout_seconds: int

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> StackResources:
        properties = event.get("ResourceProperties")
        if not isinstance(properties, Mapping):
            raise InvalidTeardownRequest("the request has no ResourceProperties")
        names = ("ResourcePrefix", "EndpointName", "StateMachineArn", "ModelPackageGroupName", "DataBucket")
        missing = [name for name in (*names, "DataBucketOnDelete") if not properties.get(name)]
        if missing or not event.get("StackId"):
            raise InvalidTeardownRequest(f"missing properties: {', '.join(missing or ['StackId'])}")
        on_delete = properties["DataBucketOnDelete"]
        if on_delete not in BUCKET_ON_DELETE:
            raise InvalidTeardownRequest(
                f"DataBucketOnDelete must be one of {', '.join(BUCKET_ON_DELETE)}, not {on_delete!r}"
            )
        timeout = str(properties.get("ServiceTimeout", DEFAULT_SERVICE_TIMEOUT_SECONDS))
        if not timeout.isdigit() or not 1 <= int(timeout) <= DEFAULT_SERVICE_TIMEOUT_SECONDS:
            raise InvalidTeardownRequest(f"ServiceTimeout must be 1-3600 seconds, not {timeout!r}")
        return cls(
            stack_id=str(event["StackId"]),
            resource_prefix=str(properties["ResourcePrefix"]),
            endpoint_name=str(properties["EndpointName"]),
            state_machine_arn=str(properties["StateMachineArn"]),
            model_package_group_name=str(properties["ModelPackageGroupName"]),
            data_bucket=str(properties["DataBucket"]),
            empty_data_bucket=on_delete == BUCKET_EMPTY,
            service_timeout_seconds=int(timeout),
        )

    def owns(self, name: str) -> bool:
        return name.startswith(f"{self.resource_prefix}-")

    @property
    def scalable_target(self) -> dict[str, str]:
        return deployment_requests.scalable_target_id(self.endpoint_name)


@dataclass(frozen=True)
class Observation:
    """One look at everything the teardown may have to remove, as the AWS APIs answered.

    Names are as listed (NameContains narrows server-side; ownership is decided here, exactly).
    """

    running_executions: tuple[str, ...] = ()
    tuning_jobs: tuple[tuple[str, str], ...] = ()  # (name, status), status InProgress or Stopping
    training_jobs: tuple[tuple[str, str], ...] = ()
    endpoint: Mapping[str, Any] | None = None  # DescribeEndpoint's answer, None when there is none
    scalable_target_registered: bool = False
    endpoint_configs: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    model_packages: tuple[tuple[str, str], ...] = ()  # (ModelPackageArn, ModelPackageStatus)
    bucket_has_data: bool = False  # object versions, delete markers or multipart uploads (Empty only)


@dataclass(frozen=True)
class Action:
    kind: str  # stop_execution, stop_tuning_job, stop_training_job, deregister_scalable_target,
    # delete_endpoint, delete_endpoint_config, delete_model, delete_model_package, empty_bucket
    target: str


@dataclass(frozen=True)
class TeardownPlan:
    actions: tuple[Action, ...]
    waiting_for: tuple[str, ...]  # what is still there and will end by itself (or after the actions)
    left_alone: tuple[str, ...]  # what looked related but is not this stack's
    quiet_until: float  # no "done" before this (epoch seconds): in-flight tasks of stopped executions

    @property
    def done(self) -> bool:
        return not self.actions and not self.waiting_for

    def summary(self) -> dict[str, Any]:
        return {
            "actions": [{"action": a.kind, "target": a.target} for a in self.actions],
            "waiting_for": list(self.waiting_for),
            "left_alone": list(self.left_alone),
        }


def _endpoint_is_ours(stack: StackResources, endpoint: Mapping[str, Any] | None) -> bool:
    return endpoint is not None and stack.owns(str(endpoint.get("EndpointConfigName", "")))


@dataclass
class _Draft:
    actions: list[Action] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    left_alone: list[str] = field(default_factory=list)


def _plan_jobs(stack: StackResources, seen: Observation, draft: _Draft) -> bool:
    """Stop this stack's running jobs, wait for its stopping ones; whether any is still live."""
    live = False
    for kind, jobs in (("tuning", seen.tuning_jobs), ("training", seen.training_jobs)):
        for name, status in jobs:
            if not stack.owns(name):
                continue
            live = True
            if status == RUNNING_JOB:
                draft.actions.append(Action(f"stop_{kind}_job", name))
            else:
                draft.waiting.append(f"{kind} job {name} ({status})")
    return live


def _plan_endpoint(stack: StackResources, seen: Observation, draft: _Draft) -> bool:
    """Deregister autoscaling and delete this stack's endpoint; whether no endpoint of ours is left."""
    endpoint = seen.endpoint
    target = stack.scalable_target["ResourceId"]
    if endpoint is not None and not _endpoint_is_ours(stack, endpoint):
        draft.left_alone.append(
            f"endpoint {endpoint.get('EndpointName')} serves {endpoint.get('EndpointConfigName')}, "
            f"which is not a {stack.resource_prefix}- config"
        )
        if seen.scalable_target_registered:
            draft.left_alone.append(f"scalable target {target}")
        return True  # not ours: nothing of ours to wait for there
    if seen.scalable_target_registered:  # also without an endpoint: a target left for this stack's name
        draft.actions.append(Action("deregister_scalable_target", target))
    if endpoint is None:
        return True
    status = str(endpoint.get("EndpointStatus"))
    if status in DELETABLE_ENDPOINT:
        draft.actions.append(Action("delete_endpoint", stack.endpoint_name))
    else:
        draft.waiting.append(f"endpoint {stack.endpoint_name} ({status})")
    return False


def _plan_configs_and_models(stack: StackResources, seen: Observation, endpoint_gone: bool, draft: _Draft) -> None:
    configs = [name for name in seen.endpoint_configs if stack.owns(name)]
    models = [name for name in seen.models if stack.owns(name)]
    if endpoint_gone:
        draft.actions += [Action("delete_endpoint_config", name) for name in configs]
        draft.actions += [Action("delete_model", name) for name in models]
    elif configs or models:
        draft.waiting.append(f"{len(configs)} endpoint configs and {len(models)} models (after the endpoint)")


def plan_teardown(stack: StackResources, seen: Observation, *, now: float, quiet_until: float = 0.0) -> TeardownPlan:
    """What to do next about what `seen` holds, in dependency order; `done` when nothing is left.

    1. Stop the state machine's running executions (they would start jobs and deploy), then wait
       IN_FLIGHT_TASK_SECONDS for their in-flight Lambda task.
    2. Stop the stack's running tuning and training jobs.
    3. Deregister the endpoint's scalable target (it deletes the scaling policies and, with them, the
       target-tracking alarms), then delete the endpoint. AWS asks for both steps: "If you delete an
       endpoint, Application Auto Scaling ... deregisters those models as scalable targets" only with
       permission to (https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-delete-with-scaling.html).
    4. Once the endpoint is gone, delete the stack's endpoint configs and models ("You must not delete an
       EndpointConfig in use by an endpoint that is live",
       https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DeleteEndpointConfig.html).
    5. Delete the model package versions of the stack's group.
    6. With DataBucketOnDelete=Empty, once nothing can write to the bucket any more (no execution, no
       live job, no endpoint, quiet period over), delete every object version, delete marker and
       multipart upload; CloudFormation then deletes the bucket (DeletionPolicy Delete).
    """
    draft = _Draft()
    draft.actions += [Action("stop_execution", arn) for arn in seen.running_executions]
    if seen.running_executions:
        quiet_until = max(quiet_until, now + IN_FLIGHT_TASK_SECONDS)
    if now < quiet_until:
        draft.waiting.append(f"in-flight tasks of stopped executions (for {quiet_until - now:.0f} s more)")
    live_jobs = _plan_jobs(stack, seen, draft)
    endpoint_gone = _plan_endpoint(stack, seen, draft)
    _plan_configs_and_models(stack, seen, endpoint_gone, draft)
    for arn, status in seen.model_packages:
        if status == "Deleting":
            draft.waiting.append(f"model package {arn} (Deleting)")
        else:
            draft.actions.append(Action("delete_model_package", arn))
    if stack.empty_data_bucket and seen.bucket_has_data:
        if not seen.running_executions and not live_jobs and endpoint_gone and now >= quiet_until:
            draft.actions.append(Action("empty_bucket", stack.data_bucket))
        else:
            draft.waiting.append(f"bucket {stack.data_bucket} (emptied once no execution, job or endpoint is left)")
    return TeardownPlan(tuple(draft.actions), tuple(draft.waiting), tuple(draft.left_alone), quiet_until)


# ---------------------------------------------------------------------------------------------------
# The custom resource protocol around it.


@dataclass(frozen=True)
class Progress:
    """A Delete's progress across invocations (carried in the event under PROGRESS_KEY)."""

    started_at: float
    quiet_until: float = 0.0
    invocation: int = 1

    @classmethod
    def of(cls, event: Mapping[str, Any], now: float) -> Progress:
        carried = event.get(PROGRESS_KEY)
        if not isinstance(carried, Mapping):
            return cls(started_at=now)
        return cls(
            started_at=float(carried["started_at"]),
            quiet_until=float(carried.get("quiet_until", 0.0)),
            invocation=int(carried.get("invocation", 1)),
        )

    def deadline(self, stack: StackResources) -> float:
        return self.started_at + stack.service_timeout_seconds - RESPONSE_MARGIN_SECONDS

    def next_event(self, event: Mapping[str, Any], quiet_until: float) -> dict[str, Any]:
        progress = {"started_at": self.started_at, "quiet_until": quiet_until, "invocation": self.invocation + 1}
        return {**event, PROGRESS_KEY: progress}


@dataclass(frozen=True)
class Decision:
    verdict: str  # "success", "failed", "poll" (sleep POLL_SECONDS, then another pass), "hand_over"
    reason: str = ""


def decide(plan: TeardownPlan, *, now: float, deadline: float, remaining_seconds: float) -> Decision:
    """After a pass: answer SUCCESS, answer FAILED (out of time), poll again, or hand over."""
    if plan.done:  # the quiet period, while it lasts, is in plan.waiting_for
        return Decision("success", "nothing of the stack is left that bills or blocks its deletion")
    if now + POLL_SECONDS >= deadline:
        left = [*(f"{a.kind} {a.target}" for a in plan.actions), *plan.waiting_for]
        return Decision(
            "failed",
            "the teardown ran out of time; still left: " + "; ".join(left) + ". Delete the stack again to resume.",
        )
    if remaining_seconds < POLL_SECONDS + HANDOVER_MARGIN_SECONDS:
        return Decision("hand_over")
    return Decision("poll")


def should_tear_down(stack_status: str) -> bool:
    return stack_status == DELETING_STACK
