"""StackTeardown (functions/teardown, mlpipeline/teardown.py): what `sam delete` leaves behind.

The real handler runs against moto with a world of two stacks (this one, prefix `imgclf`, and another,
prefix `other`, plus an `imgclfb-` job that only looks alike): a live endpoint with autoscaling, endpoint
configs, models, running tuning and training jobs, running executions, model package versions and a
versioned bucket. A local HTTP server on 127.0.0.1 stands in for the presigned ResponseURL and captures
the cfn-response PUT. Time is a fake clock, so minutes of endpoint deletion take no wall time.

moto lacks some of the behaviour the teardown depends on; TeardownSim below models it, each with its
AWS source: StopTrainingJob / StopHyperParameterTuningJob (not in moto), jobs that stay Stopping before
they are Stopped and write their model artifacts meanwhile, an endpoint that stays Deleting for minutes,
DeleteModelPackage / DeleteModelPackageGroup (not in moto) and a group that cannot be deleted while it
holds versions, the target-tracking alarms Application Auto Scaling creates for a SageMaker variant and
deletes with the scalable target, and the Lambda asynchronous self-invocation (queued, not run inline).
"""

from __future__ import annotations

import copy
import dataclasses
import http.server
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import iam_model
import pipeline_world as pw
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from mlpipeline import custom_resource, deployment_requests, teardown
from mlpipeline.errors import error_code
from mlpipeline.settings import build_settings
from moto import mock_aws
from moto.applicationautoscaling import models as aas_models
from moto.awslambda.models import LambdaFunction
from moto.cloudformation.models import cloudformation_backends
from moto.core.responses import EmptyResult
from moto.s3.models import s3_backends
from moto.sagemaker import models as sm_models
from moto.sagemaker.exceptions import ConflictException, ResourceNotFound, SagemakerClientError, ValidationError
from moto.sagemaker.responses import SageMakerResponse
from test_requests import asl_defaults

app = pw.load_handler("teardown")
autoscaling_app = pw.load_handler("configure_autoscaling")

OTHER = "other"  # another stack's resource prefix in the same account and region
OTHER_ENDPOINT = "other-classifier"
OTHER_BUCKET = "other-data-example"
FUNCTION_NAME = f"{pw.PREFIX}-teardown"
# Simulated durations. SageMaker gives a stopped training job's algorithm 120 s after SIGTERM to save its
# model artifacts (API_StopTrainingJob.html); deleting an endpoint takes minutes.
JOB_STOP_SECONDS = 90
ENDPOINT_DELETE_SECONDS = 240


class AccessDenied(SagemakerClientError):
    code = "AccessDeniedException"


# --------------------------------------------------------------------------------------------------
# Time, the Lambda context, the ResponseURL.


@dataclass
class FakeClock:
    t: float = 1_800_000_000.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class LambdaContext:
    clock: FakeClock
    timeout_s: float
    invoked_function_arn: str
    started: float = 0.0

    def __post_init__(self) -> None:
        self.started = self.clock.now()

    def get_remaining_time_in_millis(self) -> int:
        return int((self.started + self.timeout_s - self.clock.now()) * 1000)


class ResponseURL:
    """What CloudFormation's presigned S3 URL receives: every PUT, its headers and its JSON body."""

    def __init__(self) -> None:
        self.answers: list[dict[str, Any]] = []
        answers = self.answers

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                answers.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/response/StackTeardown?Signature=example"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------------------------------
# The service behaviour moto lacks.


@dataclass
class TeardownSim:
    clock: FakeClock
    stopping: dict[tuple[str, str], float] = field(default_factory=dict)  # (kind, name) -> since
    deleting: dict[str, float] = field(default_factory=dict)  # endpoint -> since
    handed_over: list[dict[str, Any]] = field(default_factory=list)

    def advance(self, backend: Any) -> None:
        """Stopping jobs end JOB_STOP_SECONDS after their stop; a training job writes its model artifact to
        its S3OutputPath meanwhile ("Algorithms might use this 120-second window to save the model
        artifacts", API_StopTrainingJob.html): writes that an early bucket-emptying would miss."""
        for (kind, name), since in list(self.stopping.items()):
            if self.clock.now() - since < JOB_STOP_SECONDS:
                continue
            del self.stopping[(kind, name)]
            if kind == "tuning":
                backend.hyper_parameter_tuning_jobs[name].hyper_parameter_tuning_job_status = "Stopped"
                continue
            job = backend.training_jobs[name]
            job.training_job_status = "Stopped"
            bucket, _, prefix = job.output_data_config["S3OutputPath"].removeprefix("s3://").partition("/")
            s3_backends[pw.ACCOUNT]["aws"].put_object(bucket, f"{prefix}{name}/output/model.tar.gz", b"artifact")
        for name, since in list(self.deleting.items()):
            if self.clock.now() - since >= ENDPOINT_DELETE_SECONDS:
                del self.deleting[name]
                del backend.endpoints[name]

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        sim = self
        backend_cls = sm_models.SageMakerModelBackend
        original = {
            name: getattr(backend_cls, name)
            for name in (
                "list_training_jobs",
                "list_hyper_parameter_tuning_jobs",
                "describe_training_job",
                "describe_endpoint",
            )
        }

        def advancing(name: str) -> Any:
            def call(self: Any, *args: Any, **kwargs: Any) -> Any:
                sim.advance(self)
                return original[name](self, *args, **kwargs)

            return call

        def stop_training(self: Any, training_job_name: str) -> None:
            job = self.training_jobs.get(training_job_name)
            if job is None:
                raise ResourceNotFound(f"Training job {training_job_name} does not exist")
            if job.training_job_status != "InProgress":
                raise ValidationError(f"The job {training_job_name} is {job.training_job_status}, not InProgress")
            job.training_job_status = "Stopping"
            sim.stopping[("training", training_job_name)] = sim.clock.now()

        def stop_tuning(self: Any, hyper_parameter_tuning_job_name: str) -> None:
            """ "Stops a running hyperparameter tuning job and all running training jobs that the tuning job
            launched" (API_StopHyperParameterTuningJob.html); trials are named <tuning job>-<NNN>-<hex>."""
            name = hyper_parameter_tuning_job_name
            job = self.hyper_parameter_tuning_jobs.get(name)
            if job is None:
                raise ResourceNotFound(f"Tuning job {name} does not exist")
            if job.hyper_parameter_tuning_job_status != "InProgress":
                raise ValidationError(f"The tuning job {name} is {job.hyper_parameter_tuning_job_status}")
            job.hyper_parameter_tuning_job_status = "Stopping"
            sim.stopping[("tuning", name)] = sim.clock.now()
            for trial in self.training_jobs.values():
                if trial.training_job_name.startswith(f"{name}-") and trial.training_job_status == "InProgress":
                    trial.training_job_status = "Stopping"
                    sim.stopping[("training", trial.training_job_name)] = sim.clock.now()

        def delete_endpoint(self: Any, endpoint_name: str) -> None:
            """DeleteEndpoint returns at once; the endpoint is Deleting until SageMaker has freed it."""
            endpoint = self.endpoints.get(endpoint_name)
            if endpoint is None:
                raise ValidationError(f"Could not find endpoint {endpoint_name}")
            if endpoint.endpoint_status in ("Deleting", "SystemUpdating"):
                raise ValidationError(f"Cannot delete endpoint {endpoint_name} in {endpoint.endpoint_status}")
            endpoint.endpoint_status = "Deleting"
            sim.deleting[endpoint_name] = sim.clock.now()

        def delete_model_package(self: Any, model_package_name: str) -> None:
            package = self.model_packages.pop(model_package_name, None)
            if package is None:
                raise ValidationError(f"Model package {model_package_name} does not exist")

        def delete_model_package_group(self: Any, model_package_group_name: str) -> None:
            """ "You can only delete an empty model group"
            (https://docs.aws.amazon.com/sagemaker/latest/dg/model-registry-delete-model-group.html);
            ConflictException is DeleteModelPackageGroup's documented error."""
            if any(p.model_package_group_name == model_package_group_name for p in self.model_packages.values()):
                raise ConflictException(f"Model package group {model_package_group_name} contains model packages")
            if self.model_package_groups.pop(model_package_group_name, None) is None:
                raise ValidationError(f"Model package group {model_package_group_name} does not exist")

        def respond(backend_method: str, *params: str) -> Any:
            def response(self: Any) -> Any:
                getattr(self.sagemaker_backend, backend_method)(*(self._get_param(p) for p in params))
                return EmptyResult()

            return response

        for name in original:
            monkeypatch.setattr(backend_cls, name, advancing(name))
        for method, implementation, params in (
            ("stop_training_job", stop_training, ("TrainingJobName",)),
            ("stop_hyper_parameter_tuning_job", stop_tuning, ("HyperParameterTuningJobName",)),
            ("delete_model_package", delete_model_package, ("ModelPackageName",)),
            ("delete_model_package_group", delete_model_package_group, ("ModelPackageGroupName",)),
        ):
            monkeypatch.setattr(backend_cls, method, implementation, raising=False)
            monkeypatch.setattr(SageMakerResponse, method, respond(method, *params), raising=False)
        monkeypatch.setattr(backend_cls, "delete_endpoint", delete_endpoint)

        # Application Auto Scaling: target tracking on a SageMaker variant creates the AlarmHigh/AlarmLow
        # pair "on your behalf", deleting the policy deletes them
        # (https://docs.aws.amazon.com/autoscaling/application/userguide/delete-target-tracking-policy.html),
        # and "Deregistering a scalable target deletes the scaling policies ... associated with it"
        # (API_DeregisterScalableTarget.html). moto does the first only for DynamoDB/ECS, not the last.
        policy_cls = aas_models.FakeApplicationAutoscalingPolicy
        create_alarms = policy_cls.create_alarms

        def create_alarms_with_sagemaker(self: Any) -> None:
            create_alarms(self)
            if self.policy_type == "TargetTrackingScaling" and self.service_namespace == "sagemaker":
                from moto.cloudwatch.models import cloudwatch_backends

                cloudwatch = cloudwatch_backends[self.account_id][self.region_name]
                for suffix, operator in (("AlarmHigh", "GreaterThanThreshold"), ("AlarmLow", "LessThanThreshold")):
                    self.alarms.append(
                        cloudwatch.put_metric_alarm(
                            name=f"TargetTracking-{self.resource_id}-{suffix}-{len(self.alarms)}",
                            namespace="AWS/SageMaker",
                            metric_name="InvocationsPerInstance",
                            metric_data_queries=[],
                            comparison_operator=operator,
                            evaluation_periods=3,
                            period=60,
                            threshold=100.0,
                            statistic="Sum",
                            description="DO NOT EDIT OR DELETE. For TargetTrackingScaling policy",
                            dimensions=[{"Name": "EndpointName", "Value": self.resource_id.split("/")[1]}],
                            alarm_actions=[self.policy_arn],
                        )
                    )

        deregister = aas_models.ApplicationAutoscalingBackend.deregister_scalable_target

        def deregister_with_policies(self: Any, namespace: str, r_id: str, dimension: str) -> None:
            deregister(self, namespace, r_id, dimension)
            for key, policy in list(self.policies.items()):
                if (policy.service_namespace, policy.resource_id, policy.scalable_dimension) == (
                    namespace,
                    r_id,
                    dimension,
                ):
                    policy.delete_alarms(self.account_id, self.region_name)
                    del self.policies[key]

        monkeypatch.setattr(policy_cls, "create_alarms", create_alarms_with_sagemaker)
        monkeypatch.setattr(
            aas_models.ApplicationAutoscalingBackend, "deregister_scalable_target", deregister_with_policies
        )

        # Lambda's asynchronous invocation (InvocationType Event) queues the event and answers 202; the test
        # runs the queue after the invoking function has returned, as Lambda would.
        def queue_invocation(function: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
            sim.handed_over.append(json.loads(event) if isinstance(event, str | bytes) else event)
            return "", False, ""

        monkeypatch.setattr(LambdaFunction, "_invoke_lambda", queue_invocation)


# --------------------------------------------------------------------------------------------------
# The world: this stack and another one.


@dataclass
class World:
    clock: FakeClock
    sim: TeardownSim
    response: ResponseURL
    stack_id: str
    state_machine_arn: str
    other_state_machine_arn: str
    function_arn: str
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    # The same calls with their answers, each with the custom resource properties of the invocation that
    # made it (the parameter values the stack was deployed with): what the IAM evaluation reads.
    recorded: list[tuple[dict[str, Any], pw.RecordedCall]] = field(default_factory=list)
    recording: bool = False
    properties: dict[str, Any] = field(default_factory=dict)  # of the invocation running now

    def __post_init__(self) -> None:
        region = pw.REGION
        self.sagemaker = boto3.client("sagemaker", region_name=region)
        self.s3 = boto3.client("s3", region_name=region)
        self.sfn = boto3.client("stepfunctions", region_name=region)
        self.autoscaling = boto3.client("application-autoscaling", region_name=region)
        self.cloudwatch = boto3.client("cloudwatch", region_name=region)

    def set_stack_status(self, status: str) -> None:
        """What DescribeStacks answers during the request (CloudFormation's own state, set directly)."""
        cloudformation_backends[pw.ACCOUNT][pw.REGION].stacks[self.stack_id].status = status

    def event(self, request_type: str, **properties: Any) -> dict[str, Any]:
        event: dict[str, Any] = {
            "RequestType": request_type,
            "ServiceToken": self.function_arn,
            "ResponseURL": self.response.url,
            "StackId": self.stack_id,
            "RequestId": f"{request_type.lower()}-request-1",
            "LogicalResourceId": "StackTeardown",
            "ResourceType": "Custom::StackTeardown",
            "ResourceProperties": {
                "ServiceToken": self.function_arn,
                "ServiceTimeout": "3600",
                "ResourcePrefix": pw.PREFIX,
                "EndpointName": pw.ENDPOINT,
                "StateMachineArn": self.state_machine_arn,
                "ModelPackageGroupName": pw.MODEL_PACKAGE_GROUP,
                "DataBucket": pw.BUCKET,
                "DataBucketOnDelete": "Empty",
                **properties,
            },
        }
        if request_type != "Create":
            event["PhysicalResourceId"] = f"{self.stack_id}/StackTeardown"
        return event

    def invoke(self, event: dict[str, Any], timeout_s: float = 900, max_invocations: int = 60) -> int:
        """The event, then every invocation it hands over to, as Lambda would run them; the count."""
        queue, count = [event], 0
        while queue:
            count += 1
            assert count <= max_invocations, "the teardown keeps handing over"
            context = LambdaContext(self.clock, timeout_s, self.function_arn)
            current = queue.pop(0)
            self.properties = dict(current.get("ResourceProperties", {}))
            self.recording = True
            try:
                app.handler(current, context)
            finally:
                self.recording = False
            queue += self.sim.handed_over
            self.sim.handed_over.clear()
        return count

    def snapshot(self) -> dict[str, Any]:
        """Everything the teardown could touch, as AWS reports it."""
        sm = self.sagemaker
        versions = {
            bucket: sorted(
                (v["Key"], v["VersionId"])
                for kind in ("Versions", "DeleteMarkers")
                for v in self.s3.list_object_versions(Bucket=bucket).get(kind, [])
            )
            for bucket in (pw.BUCKET, OTHER_BUCKET)
        }
        return {
            "executions": sorted(
                (e["executionArn"], e["status"])
                for arn in (self.state_machine_arn, self.other_state_machine_arn)
                for e in self.sfn.list_executions(stateMachineArn=arn)["executions"]
            ),
            "tuning": sorted(
                (j["HyperParameterTuningJobName"], j["HyperParameterTuningJobStatus"])
                for j in sm.list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"]
            ),
            "training": sorted(
                (j["TrainingJobName"], j["TrainingJobStatus"]) for j in sm.list_training_jobs()["TrainingJobSummaries"]
            ),
            "endpoints": sorted((e["EndpointName"], e["EndpointStatus"]) for e in sm.list_endpoints()["Endpoints"]),
            "configs": sorted(c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]),
            "models": sorted(m["ModelName"] for m in sm.list_models()["Models"]),
            "targets": sorted(
                t["ResourceId"]
                for t in self.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
            ),
            "policies": sorted(
                p["PolicyName"]
                for p in self.autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
            ),
            "alarms": sorted(a["AlarmName"] for a in self.cloudwatch.describe_alarms()["MetricAlarms"]),
            "packages": sorted(
                p["ModelPackageArn"]
                for group in (pw.MODEL_PACKAGE_GROUP, f"{OTHER}-models")
                for p in sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
            ),
            "objects": versions,
            "uploads": {
                bucket: len(self.s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))
                for bucket in (pw.BUCKET, OTHER_BUCKET)
            },
        }


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return None\n")
    return buffer.getvalue()


def _training_request(name: str, bucket: str) -> dict[str, Any]:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": "pytorch-training:2.6", "TrainingInputMode": "File"},
        "RoleArn": pw.ROLE_ARN,
        "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/models/"},
        "ResourceConfig": {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
        "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
    }


def _tuning_request(name: str, bucket: str) -> dict[str, Any]:
    definition = _training_request("unused", bucket)
    definition.pop("TrainingJobName")
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": {
            "Strategy": "Bayesian",
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 8, "MaxParallelTrainingJobs": 2},
        },
        "TrainingJobDefinition": definition,
    }


def _stack_resources(world: World, prefix: str, endpoint: str, bucket: str, state_machine_arn: str) -> None:
    """What the pipeline leaves in a stack's account: one run tuning, one training, one deployed earlier."""
    sm, backend = world.sagemaker, sm_models.sagemaker_backends[pw.ACCOUNT][pw.REGION]
    tuning = f"{prefix}-dogimages-0123456789"
    sm.create_hyper_parameter_tuning_job(**_tuning_request(tuning, bucket))
    backend.hyper_parameter_tuning_jobs[tuning].hyper_parameter_tuning_job_status = "InProgress"
    for name, status in (
        (f"{tuning}-001-1a2b3c4d", "InProgress"),  # trials of the tuning job
        (f"{tuning}-002-5e6f7a8b", "InProgress"),
        (f"{prefix}-cats-abcdef0123-final", "InProgress"),  # another run's final training
        (f"{prefix}-dogimages-9876543210-final", "Completed"),  # the live model's training
    ):
        sm.create_training_job(**_training_request(name, bucket))
        backend.training_jobs[name].training_job_status = status
    for run in (f"{prefix}-dogimages-9876543210", f"{prefix}-dogimages-5555555555"):  # live, and an older one
        sm.create_model(ModelName=run, ExecutionRoleArn=pw.ROLE_ARN, PrimaryContainer={"Image": "pytorch-inference"})
        sm.create_endpoint_config(
            EndpointConfigName=run,
            ProductionVariants=[
                {
                    "VariantName": deployment_requests.VARIANT_NAME,
                    "ModelName": run,
                    "InitialInstanceCount": 1,
                    "InstanceType": "ml.m5.large",
                }
            ],
        )
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=f"{prefix}-dogimages-9876543210")
    settings = dataclasses.replace(
        build_settings(asl_defaults()),
        autoscaling_min_capacity=1,
        autoscaling_max_capacity=4,
        autoscaling_target_invocations=100.0,
        scale_in_cooldown_seconds=300,
        scale_out_cooldown_seconds=60,
    )
    autoscaling_app.configure(world.autoscaling, endpoint, settings)  # the pipeline's own requests
    group = f"{prefix}-models"
    if prefix != pw.PREFIX:
        sm.create_model_package_group(ModelPackageGroupName=group)
    for version in (1, 2):
        sm.create_model_package(
            ModelPackageGroupName=group,
            ModelPackageDescription=f"version {version}",
            InferenceSpecification={
                "Containers": [
                    {"Image": "pytorch-inference", "ModelDataUrl": f"s3://{bucket}/models/m{version}.tar.gz"}
                ],
                "SupportedContentTypes": ["image/jpeg"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
            ModelApprovalStatus="Approved",
        )
    s3 = world.s3
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for key in (
        "datasets/dogImages/train/001.Affenpinscher/a.jpg",
        "datasets/dogImages/manifest.json",
        "code/src.tar.gz",
    ):
        s3.put_object(Bucket=bucket, Key=key, Body=b"v1")
    s3.put_object(Bucket=bucket, Key="datasets/dogImages/manifest.json", Body=b"v2")  # a second version
    s3.delete_object(Bucket=bucket, Key="code/src.tar.gz")  # a delete marker over the old version
    s3.create_multipart_upload(Bucket=bucket, Key="models/big/model.tar.gz")  # an upload cut short
    for i in range(2):
        world.sfn.start_execution(stateMachineArn=state_machine_arn, name=f"run-{i}", input="{}")


@pytest.fixture
def world(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    clock = FakeClock()
    monkeypatch.setattr(app, "CLOCK", app.Clock(now=clock.now, sleep=clock.sleep))
    sim = TeardownSim(clock)
    sim.install(monkeypatch)
    response = ResponseURL()
    with mock_aws():
        region = pw.REGION
        iam = boto3.client("iam", region_name=region)
        role = iam.create_role(RoleName="teardown", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        function_arn = boto3.client("lambda", region_name=region).create_function(
            FunctionName=FUNCTION_NAME, Runtime="python3.12", Role=role, Handler="app.handler", Code={"ZipFile": _zip()}
        )["FunctionArn"]
        stack_id = boto3.client("cloudformation", region_name=region).create_stack(
            StackName="imgclf-pipeline",
            TemplateBody=json.dumps({"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}),
        )["StackId"]
        sfn = boto3.client("stepfunctions", region_name=region)
        definition = json.dumps({"StartAt": "Wait", "States": {"Wait": {"Type": "Pass", "End": True}}})
        ours, theirs = (
            sfn.create_state_machine(name=name, definition=definition, roleArn=role)["stateMachineArn"]
            for name in ("imgclf-pipeline", "other-pipeline")
        )
        boto3.client("sagemaker", region_name=region).create_model_package_group(
            ModelPackageGroupName=pw.MODEL_PACKAGE_GROUP
        )
        world = World(clock, sim, response, stack_id, ours, theirs, function_arn)
        _stack_resources(world, pw.PREFIX, pw.ENDPOINT, pw.BUCKET, ours)
        _stack_resources(world, OTHER, OTHER_ENDPOINT, OTHER_BUCKET, theirs)
        # Looks like ours but is not: prefix "imgclfb" (another stack's), so `imgclf-` must match exactly.
        world.sagemaker.create_training_job(**_training_request("imgclfb-dogs-0000000000-final", OTHER_BUCKET))
        sm_models.sagemaker_backends[pw.ACCOUNT][pw.REGION].training_jobs[
            "imgclfb-dogs-0000000000-final"
        ].training_job_status = "InProgress"
        world.set_stack_status("DELETE_IN_PROGRESS")

        def recording(make_api_call: Any) -> Any:
            def call(client: Any, operation_name: str, api_params: Any) -> Any:
                if not world.recording:
                    return make_api_call(client, operation_name, api_params)
                service = client.meta.service_model.signing_name
                world.calls.append((service, operation_name, dict(api_params)))
                record = pw.RecordedCall("teardown", service, operation_name, dict(api_params), {}, None)
                try:
                    response = make_api_call(client, operation_name, api_params)
                except ClientError as error:
                    world.recorded.append((world.properties, record._replace(error=error_code(error))))
                    raise
                answer = {k: v for k, v in response.items() if isinstance(v, str)}
                world.recorded.append((world.properties, record._replace(answer=answer)))
                return response

            return call

        monkeypatch.setattr(BaseClient, "_make_api_call", recording(BaseClient._make_api_call))
        try:
            yield world
        finally:
            response.close()
    # Every scenario: each call the teardown made must be authorized by its role as AWS evaluates it
    # (iam_model, as conftest.py does for the pipeline's scenarios).
    assert_teardown_authorized(world)


def _is_ours(item: Any) -> bool:
    text = item[0] if isinstance(item, tuple) else str(item)
    if ":execution:" in text:
        return f":execution:{pw.PREFIX}-pipeline:" in text
    if ":model-package/" in text:
        text = text.split(":model-package/")[1]
    return text.removeprefix("TargetTracking-").removeprefix("endpoint/").startswith(f"{pw.PREFIX}-")


def _ours(items: list[Any]) -> list[Any]:
    return [item for item in items if _is_ours(item)]


def _theirs(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The part of a snapshot that is not this stack's (another stack's, and the look-alike)."""
    return {
        key: {bucket: v for bucket, v in value.items() if bucket != pw.BUCKET}
        if isinstance(value, dict)
        else [item for item in value if not _is_ours(item)]
        for key, value in snapshot.items()
    }


# --------------------------------------------------------------------------------------------------
# Delete: nothing billing of this stack remains, nothing of another stack is touched.


def test_delete_leaves_nothing_that_bills_and_touches_no_other_stack(world: World) -> None:
    before = world.snapshot()
    assert _ours(before["endpoints"]) == [(pw.ENDPOINT, "InService")]
    assert any(a.startswith(f"TargetTracking-endpoint/{pw.ENDPOINT}/") for a in before["alarms"])
    with pytest.raises(ClientError, match="ConflictException"):  # the group holds versions: blocked
        world.sagemaker.delete_model_package_group(ModelPackageGroupName=pw.MODEL_PACKAGE_GROUP)

    # A Lambda timeout of 120 s makes the teardown hand over to itself several times.
    invocations = world.invoke(world.event("Delete"), timeout_s=120)

    after = world.snapshot()
    assert invocations > 1
    # This stack: every execution aborted, every job ended, no endpoint, no scaling, nothing to rebuild it.
    assert {status for _, status in _ours(after["executions"])} == {"ABORTED"}
    assert {status for _, status in _ours(after["tuning"])} == {"Stopped"}
    assert {n: s for n, s in _ours(after["training"])} == {
        f"{pw.PREFIX}-dogimages-0123456789-001-1a2b3c4d": "Stopped",
        f"{pw.PREFIX}-dogimages-0123456789-002-5e6f7a8b": "Stopped",
        f"{pw.PREFIX}-cats-abcdef0123-final": "Stopped",
        f"{pw.PREFIX}-dogimages-9876543210-final": "Completed",
    }
    assert _ours(after["endpoints"]) == []
    assert _ours(after["configs"]) == [] and _ours(after["models"]) == []
    assert f"endpoint/{pw.ENDPOINT}/variant/{deployment_requests.VARIANT_NAME}" not in after["targets"]
    assert not [p for p in after["policies"] if p.startswith(pw.ENDPOINT)]
    assert not [a for a in after["alarms"] if a.startswith(f"TargetTracking-endpoint/{pw.ENDPOINT}/")]
    assert _ours(after["packages"]) == []
    # The bucket is empty in S3's sense (no version, no delete marker, no upload), even of the artifacts the
    # stopped jobs wrote while Stopping, and the two resources it blocked can now be deleted.
    assert after["objects"][pw.BUCKET] == [] and after["uploads"][pw.BUCKET] == 0
    world.sagemaker.delete_model_package_group(ModelPackageGroupName=pw.MODEL_PACKAGE_GROUP)
    world.s3.delete_bucket(Bucket=pw.BUCKET)
    # The other stack, and the look-alike `imgclfb-` job, are exactly as they were.
    assert _theirs(after) == _theirs(before)
    assert ("imgclfb-dogs-0000000000-final", "InProgress") in after["training"]
    # One answer, SUCCESS, in the shape CloudFormation reads.
    [answer] = world.response.answers
    assert answer["headers"].get("Content-Type", "") == ""  # the URL is presigned without a content type
    body = answer["body"]
    assert body["Status"] == "SUCCESS", body["Reason"]
    assert body["PhysicalResourceId"] == f"{world.stack_id}/StackTeardown"
    assert (body["StackId"], body["RequestId"], body["LogicalResourceId"]) == (
        world.stack_id,
        "delete-request-1",
        "StackTeardown",
    )


def test_delete_waits_for_in_flight_tasks_and_stopping_jobs_before_it_answers(world: World) -> None:
    started = world.clock.now()
    world.invoke(world.event("Delete"))
    # Executions were running: an in-flight Lambda task may still create things for IN_FLIGHT_TASK_SECONDS.
    assert world.clock.now() - started >= teardown.IN_FLIGHT_TASK_SECONDS
    assert world.response.answers[0]["body"]["Status"] == "SUCCESS"
    # The bucket was emptied once, after the last job had written its artifact while Stopping: one
    # DeleteObjects call (the world's keys fit one batch) that includes those artifacts.
    deletes = [p for service, op, p in world.calls if op == "DeleteObjects"]
    assert len(deletes) == 1
    deleted = {o["Key"] for o in deletes[0]["Delete"]["Objects"]}
    assert f"models/{pw.PREFIX}-cats-abcdef0123-final/output/model.tar.gz" in deleted


def test_an_endpoint_created_by_an_in_flight_task_after_the_first_pass_is_deleted_too(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Deploy task of an execution the teardown stopped creates a model, a config and the endpoint minutes
    later (Lambda cannot cancel a running invocation): the passes of the in-flight wait find and delete them."""
    late = {"done": False}
    advance = world.sim.advance
    # Well into the teardown: after the jobs have stopped and the bucket is empty, within the in-flight wait.
    deploy_at = world.clock.now() + ENDPOINT_DELETE_SECONDS + 200

    def advance_with_late_deploy(sagemaker_backend: Any) -> None:
        advance(sagemaker_backend)
        if not late["done"] and world.clock.now() >= deploy_at:
            late["done"] = True
            recording, world.recording = world.recording, False  # the Deploy task's calls, not the teardown's
            try:
                run = f"{pw.PREFIX}-late-0000000000"
                world.sagemaker.create_model(
                    ModelName=run, ExecutionRoleArn=pw.ROLE_ARN, PrimaryContainer={"Image": "pytorch-inference"}
                )
                world.sagemaker.create_endpoint_config(
                    EndpointConfigName=run,
                    ProductionVariants=[
                        {
                            "VariantName": "AllTraffic",
                            "ModelName": run,
                            "InitialInstanceCount": 1,
                            "InstanceType": "ml.m5.large",
                        }
                    ],
                )
                world.sagemaker.create_endpoint(EndpointName=pw.ENDPOINT, EndpointConfigName=run)
            finally:
                world.recording = recording

    world.sagemaker.delete_endpoint(EndpointName=pw.ENDPOINT)  # gone before the teardown starts
    world.clock.sleep(ENDPOINT_DELETE_SECONDS)
    monkeypatch.setattr(world.sim, "advance", advance_with_late_deploy)
    world.invoke(world.event("Delete"))
    assert late["done"]
    after = world.snapshot()
    assert _ours(after["endpoints"]) == [] and _ours(after["configs"]) == [] and _ours(after["models"]) == []
    assert ("sagemaker", "DeleteEndpoint", {"EndpointName": pw.ENDPOINT}) in world.calls
    assert world.response.answers[-1]["body"]["Status"] == "SUCCESS"


def test_retain_keeps_the_bucket_and_every_object_version(world: World) -> None:
    before = world.snapshot()
    world.invoke(world.event("Delete", DataBucketOnDelete="Retain"))
    after = world.snapshot()
    assert world.response.answers[0]["body"]["Status"] == "SUCCESS"
    # The data stays (plus what the stopped jobs saved); nothing of S3 was even listed.
    assert set(before["objects"][pw.BUCKET]) <= set(after["objects"][pw.BUCKET])
    assert after["uploads"][pw.BUCKET] == 1
    assert not [op for service, op, _ in world.calls if service == "s3"]
    # Everything that bills or blocks is gone all the same.
    assert _ours(after["endpoints"]) == [] and _ours(after["packages"]) == []
    assert {status for _, status in _ours(after["executions"])} == {"ABORTED"}


def test_an_endpoint_of_the_same_name_serving_another_stacks_config_is_left_alone(world: World) -> None:
    backend = sm_models.sagemaker_backends[pw.ACCOUNT][pw.REGION]
    backend.endpoints[pw.ENDPOINT].endpoint_config_name = f"{OTHER}-dogimages-9876543210"
    world.invoke(world.event("Delete"))
    after = world.snapshot()
    assert (pw.ENDPOINT, "InService") in after["endpoints"]
    assert f"endpoint/{pw.ENDPOINT}/variant/{deployment_requests.VARIANT_NAME}" in after["targets"]
    assert _ours(after["configs"]) == []  # ours are no longer in use by it
    assert world.response.answers[0]["body"]["Status"] == "SUCCESS"


# --------------------------------------------------------------------------------------------------
# Create and Update change nothing; a Delete that is not a stack deletion changes nothing.


def test_create_and_update_answer_success_and_change_nothing(world: World) -> None:
    before = world.snapshot()
    world.invoke(world.event("Create"))
    update = world.event("Update", DataBucketOnDelete="Retain")
    update["OldResourceProperties"] = world.event("Create")["ResourceProperties"]
    world.invoke(update)
    assert world.snapshot() == before
    assert world.calls == []  # not a single AWS call
    bodies = [a["body"] for a in world.response.answers]
    assert [b["Status"] for b in bodies] == ["SUCCESS", "SUCCESS"]
    # the same physical id in every answer (another id on Update would make CloudFormation delete "the old one")
    assert {b["PhysicalResourceId"] for b in bodies} == {f"{world.stack_id}/StackTeardown"}


@pytest.mark.parametrize(
    "status", ["UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", "UPDATE_ROLLBACK_IN_PROGRESS", "ROLLBACK_IN_PROGRESS"]
)
def test_a_delete_that_is_not_a_stack_deletion_tears_nothing_down(world: World, status: str) -> None:
    """Removed from the template, rolled back after an update that added it, or a failed create."""
    world.set_stack_status(status)
    before = world.snapshot()
    world.invoke(world.event("Delete"))
    assert world.snapshot() == before
    assert [(s, op) for s, op, _ in world.calls] == [("cloudformation", "DescribeStacks")]
    body = world.response.answers[0]["body"]
    assert body["Status"] == "SUCCESS" and status in body["Reason"]


def test_bad_properties_fail_the_deploy_but_never_block_a_deletion(world: World) -> None:
    world.invoke(world.event("Create", DataBucketOnDelete="Maybe"))
    body = world.response.answers[0]["body"]
    assert body["Status"] == "FAILED" and "DataBucketOnDelete" in body["Reason"] and "Maybe" in body["Reason"]
    # The rollback then deletes the resource with the same properties: nothing ran, nothing to tear down.
    before = world.snapshot()
    world.invoke(world.event("Delete", DataBucketOnDelete="Maybe"))
    assert world.response.answers[1]["body"]["Status"] == "SUCCESS"
    assert world.snapshot() == before


def test_no_response_url_is_a_lambda_error(world: World) -> None:
    event = world.event("Delete")
    del event["ResponseURL"]
    with pytest.raises(custom_resource.InvalidRequest, match="ResponseURL"):
        app.handler(event, LambdaContext(world.clock, 900, world.function_arn))


# --------------------------------------------------------------------------------------------------
# Failures answer FAILED; the deletion never hangs.


@pytest.mark.filterwarnings("ignore:Exception\\(AccessDenied\\)")  # IAM's error, not in SageMaker's model
def test_a_denied_call_answers_failed_with_the_reason(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(self: Any, endpoint_name: str) -> None:
        raise AccessDenied(f"not authorized to perform: sagemaker:DeleteEndpoint on endpoint/{endpoint_name}")

    monkeypatch.setattr(sm_models.SageMakerModelBackend, "delete_endpoint", denied)
    invocations = world.invoke(world.event("Delete"))
    assert invocations == 1
    [answer] = world.response.answers
    assert answer["body"]["Status"] == "FAILED"
    assert "AccessDeniedException" in answer["body"]["Reason"] and "DeleteEndpoint" in answer["body"]["Reason"]


def test_an_endpoint_that_never_settles_answers_failed_before_cloudformation_gives_up(world: World) -> None:
    backend = sm_models.sagemaker_backends[pw.ACCOUNT][pw.REGION]
    backend.endpoints[pw.ENDPOINT].endpoint_status = "Updating"  # and it stays so
    started = world.clock.now()
    world.invoke(world.event("Delete", ServiceTimeout="900"), timeout_s=300)
    [answer] = world.response.answers
    assert answer["body"]["Status"] == "FAILED"
    assert f"endpoint {pw.ENDPOINT} (Updating)" in answer["body"]["Reason"]
    assert "Delete the stack again" in answer["body"]["Reason"]
    assert world.clock.now() - started <= 900 - teardown.RESPONSE_MARGIN_SECONDS
    # what could go did go
    assert {status for _, status in _ours(world.snapshot()["tuning"])} == {"Stopped"}


# --------------------------------------------------------------------------------------------------
# The plan and the protocol, pure.


def _stack(**changes: Any) -> teardown.StackResources:
    event = {
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/s/1",
        "ResourceProperties": {
            "ResourcePrefix": "imgclf",
            "EndpointName": "imgclf-classifier",
            "StateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:imgclf-pipeline",
            "ModelPackageGroupName": "imgclf-models",
            "DataBucket": "bucket",
            "DataBucketOnDelete": "Empty",
            **changes,
        },
    }
    return teardown.StackResources.from_event(event)


def test_plan_orders_configs_after_the_endpoint_and_the_bucket_after_every_writer() -> None:
    stack = _stack()
    seen = teardown.Observation(
        training_jobs=(("imgclf-a-final", "Stopping"),),
        endpoint={"EndpointName": "imgclf-classifier", "EndpointStatus": "Deleting", "EndpointConfigName": "imgclf-a"},
        endpoint_configs=("imgclf-a",),
        models=("imgclf-a",),
        bucket_has_data=True,
    )
    plan = teardown.plan_teardown(stack, seen, now=1000.0)
    assert plan.actions == ()  # nothing may go yet
    assert len(plan.waiting_for) == 4 and not plan.done
    gone = teardown.plan_teardown(
        stack, teardown.Observation(endpoint_configs=("imgclf-a",), bucket_has_data=True), now=1000.0
    )
    assert [a.kind for a in gone.actions] == ["delete_endpoint_config", "empty_bucket"]


def test_plan_waits_the_in_flight_task_time_after_stopping_an_execution() -> None:
    stack = _stack()
    plan = teardown.plan_teardown(stack, teardown.Observation(running_executions=("arn:x",)), now=1000.0)
    assert [a.kind for a in plan.actions] == ["stop_execution"]
    assert plan.quiet_until == 1000.0 + teardown.IN_FLIGHT_TASK_SECONDS
    later = teardown.plan_teardown(stack, teardown.Observation(), now=1200.0, quiet_until=plan.quiet_until)
    assert not later.done
    assert teardown.plan_teardown(stack, teardown.Observation(), now=1300.0, quiet_until=plan.quiet_until).done


def test_decide_hands_over_before_the_lambda_timeout_and_fails_before_the_service_timeout() -> None:
    busy = teardown.TeardownPlan((), ("endpoint e (Deleting)",), (), 0.0)
    assert teardown.decide(busy, now=0, deadline=1000, remaining_seconds=600).verdict == "poll"
    margin = teardown.POLL_SECONDS + teardown.HANDOVER_MARGIN_SECONDS
    assert teardown.decide(busy, now=0, deadline=1000, remaining_seconds=margin - 1).verdict == "hand_over"
    failed = teardown.decide(busy, now=990, deadline=1000, remaining_seconds=600)
    assert failed.verdict == "failed" and "endpoint e (Deleting)" in failed.reason


def test_the_answer_fits_cloudformations_4096_bytes() -> None:
    event = {"StackId": "arn:s", "RequestId": "r", "LogicalResourceId": "StackTeardown", "ResponseURL": "https://x"}
    body = custom_resource.response_body(event, "FAILED", "é" * 10_000)
    assert len(body) <= custom_resource.MAX_RESPONSE_BYTES
    assert json.loads(body)["Reason"].endswith("[cut]")
    with pytest.raises(ValueError):
        custom_resource.response_body(event, "MAYBE", "")


def test_names_are_matched_by_exact_prefix() -> None:
    stack = _stack()
    assert stack.owns("imgclf-dogs-0123456789") and not stack.owns("imgclfb-dogs-0123456789")
    assert not stack.owns("other-imgclf-x")
    with pytest.raises(teardown.InvalidTeardownRequest, match="ServiceTimeout"):
        _stack(ServiceTimeout="7200")


# --------------------------------------------------------------------------------------------------
# The template: the parameter, the bucket's DeletionPolicy, the order of deletion, the role.


def _depends_on(resources: dict[str, Any], name: str) -> set[str]:
    """Every resource `name` depends on, directly or not (Ref, GetAtt, Sub, DependsOn)."""

    def references(node: Any) -> set[str]:
        found: set[str] = set()
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "Ref" and isinstance(value, str):
                    found.add(value)
                elif key == "Fn::GetAtt":
                    found.add(value[0] if isinstance(value, list) else value.split(".")[0])
                elif key == "Fn::Sub":
                    text = value if isinstance(value, str) else value[0]
                    found |= {ref.split(".")[0] for ref in _sub_refs(text)}
                    found |= references(value)
                else:
                    found |= references(value)
        elif isinstance(node, list):
            for value in node:
                found |= references(value)
        return found

    seen: set[str] = set()
    todo = [name]
    while todo:
        resource = resources[todo.pop()]
        depends = resource.get("DependsOn", [])
        direct = references(resource.get("Properties", {})) | set([depends] if isinstance(depends, str) else depends)
        for ref in direct & set(resources) - seen:
            seen.add(ref)
            todo.append(ref)
    return seen


def _sub_refs(text: str) -> list[str]:
    import re

    return re.findall(r"\$\{([^}!]+)\}", text)


def test_the_teardown_is_deleted_before_everything_it_needs(aws_env: None) -> None:
    """CloudFormation deletes a resource before the resources it references: everything the teardown calls
    or must outlive is among StackTeardown's (transitive) dependencies in the SAM-transformed template."""
    resources = iam_model.sam_transform(iam_model.packaged_template())["Resources"]
    needed = {
        "TeardownFunction",
        "TeardownRole",
        "TeardownLogGroup",
        "TeardownDataBucketPolicy",
        next(name for name in resources if name.startswith("PipelineLayer")),  # SAM adds a content hash
        "PipelineStateMachine",
        "DataBucket",
        "ModelPackageGroup",
        "SageMakerExecutionRole",  # "Do not delete or revoke the permissions for your ExecutionRoleArn"
    }
    assert needed <= _depends_on(resources, "StackTeardown")
    # and nothing the teardown must outlive depends on it (it would then be deleted first)
    assert not {name for name in needed if "StackTeardown" in _depends_on(resources, name)}


def test_the_custom_resource_carries_what_the_handler_reads() -> None:
    template = pw.template()
    resource = template["Resources"]["StackTeardown"]
    properties = resource["Properties"]
    assert set(properties) == {
        "ServiceToken",
        "ServiceTimeout",
        "ResourcePrefix",
        "EndpointName",
        "StateMachineArn",
        "ModelPackageGroupName",
        "DataBucket",
        "DataBucketOnDelete",
        "DataBucketAccess",
    }
    assert 1 <= properties["ServiceTimeout"] <= teardown.DEFAULT_SERVICE_TIMEOUT_SECONDS
    assert (
        properties["ModelPackageGroupName"]
        == template["Resources"]["QualityGateFunction"]["Properties"]["Environment"]["Variables"][
            "MODEL_PACKAGE_GROUP_NAME"
        ]
    )
    function = pw.function_properties(template, "TeardownFunction")
    assert function["Timeout"] == 900 and function["Layers"] == [{"Ref": "PipelineLayer"}]
    assert function["Timeout"] > teardown.POLL_SECONDS + teardown.HANDOVER_MARGIN_SECONDS
    assert function["FunctionName"] == {"Fn::Sub": "${ResourcePrefix}-teardown"}
    log_group = template["Resources"]["TeardownLogGroup"]["Properties"]
    assert log_group["LogGroupName"] == {"Fn::Sub": "/aws/lambda/${ResourcePrefix}-teardown"}
    assert log_group["RetentionInDays"] > 0
    assert function["LoggingConfig"]["LogGroup"] == {"Ref": "TeardownLogGroup"}


def test_the_data_bucket_follows_the_parameter_and_the_transform_allows_it() -> None:
    template = pw.template()
    parameter = template["Parameters"]["DataBucketOnDelete"]
    assert tuple(parameter["AllowedValues"]) == teardown.BUCKET_ON_DELETE and parameter["Default"] == "Retain"
    assert template["Conditions"]["EmptyDataBucketOnDelete"] == {
        "Fn::Equals": [{"Ref": "DataBucketOnDelete"}, teardown.BUCKET_EMPTY]
    }
    bucket = template["Resources"]["DataBucket"]
    assert bucket["DeletionPolicy"] == {"Fn::If": ["EmptyDataBucketOnDelete", "Delete", "Retain"]}
    assert bucket["UpdateReplacePolicy"] == "Retain"
    assert template["Resources"]["DataBucketPolicy"]["DeletionPolicy"] == bucket["DeletionPolicy"]  # stays TLS-only
    # Intrinsics in DeletionPolicy need AWS::LanguageExtensions, declared before the SAM transform
    # (https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/transform-aws-languageextensions.html).
    assert template["Transform"] == ["AWS::LanguageExtensions", "AWS::Serverless-2016-10-31"]
    # Only a stack that empties its bucket may delete data.
    assert template["Resources"]["TeardownDataBucketPolicy"]["Condition"] == "EmptyDataBucketOnDelete"


def test_the_in_flight_wait_covers_every_pipeline_task_timeout() -> None:
    resources = pw.template()["Resources"]
    longest = max(int(resources[logical_id]["Properties"]["Timeout"]) for logical_id in pw.FUNCTIONS)
    assert longest <= teardown.IN_FLIGHT_TASK_SECONDS


# --------------------------------------------------------------------------------------------------
# IAM as AWS evaluates it (iam_model): every call the teardown made, in every scenario above (the `world`
# fixture), is authorized by TeardownRole and, where DataBucketOnDelete=Empty, TeardownDataBucketPolicy.

TEARDOWN_FUNCTIONS = {"TeardownFunction": "teardown"}  # logical id -> code folder
# StackTeardown properties that name nothing a policy scopes by: CloudFormation's wait for the answer
# (one scenario shortens it), and the property that only orders the deletion.
_UNSCOPED_PROPERTIES = {"ServiceTimeout", "DataBucketAccess"}


def teardown_template(
    world: World, properties: dict[str, Any], transformed: dict[str, Any] | None = None
) -> iam_model.WorldTemplate:
    """The template as deployed for this invocation: each parameter a StackTeardown property is a Ref of
    takes the property's value (DataBucketOnDelete), and every other property the handler reads must be
    what the template gives it in the test world, so the policies and the calls name the same things."""
    base = iam_model.world_template()
    declared = base.resources["StackTeardown"]["Properties"]
    parameters = {
        value["Ref"]: str(properties[key])
        for key, value in declared.items()
        if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in base.parameters and key in properties
    }
    if transformed is None:
        template = iam_model.world_template(parameters, stack_id=world.stack_id)
    else:
        template = iam_model.WorldTemplate(transformed, parameters, world.stack_id)
    for key, value in template.resolve(declared).items():
        if key not in _UNSCOPED_PROPERTIES:
            assert str(properties.get(key)) == str(value), f"the world's {key} is not the template's {value}"
    return template


def teardown_requests(
    world: World, transformed: dict[str, Any] | None = None
) -> list[tuple[iam_model.WorldTemplate, list[iam_model.AuthRequest]]]:
    """The requests AWS authorizes for the teardown's calls, per deployment (the properties the
    invocations carried; hand-overs carry their first invocation's), in call order."""
    deployments: dict[str, tuple[dict[str, Any], list[pw.RecordedCall]]] = {}
    for properties, call in world.recorded:
        deployments.setdefault(json.dumps(properties, sort_keys=True), (properties, []))[1].append(call)
    found = []
    for properties, log in deployments.values():
        template = teardown_template(world, properties, transformed)
        calls = iam_model.calls_from_log(log, TEARDOWN_FUNCTIONS)
        found.append((template, iam_model.Deriver(template, calls).requests()))
    return found


def assert_teardown_authorized(world: World) -> list[iam_model.Verdict]:
    return [v for template, found in teardown_requests(world) for v in iam_model.assert_authorized(template, found)]


@pytest.mark.parametrize("on_delete", ["Empty", "Retain"])
def test_every_call_of_the_teardown_is_authorized_as_aws_evaluates_it(world: World, on_delete: str) -> None:
    world.invoke(world.event("Delete", DataBucketOnDelete=on_delete), timeout_s=120)
    assert world.response.answers[-1]["body"]["Status"] == "SUCCESS"
    verdicts = assert_teardown_authorized(world)
    made = {v.request.action for v in verdicts}
    # The calls that matter were made and evaluated, with what AWS checks beyond the call's own action:
    # the hand-over to itself, Application Auto Scaling's caller permissions for the deregistration.
    assert {
        "cloudformation:DescribeStacks",
        "states:StopExecution",
        "sagemaker:StopHyperParameterTuningJob",
        "sagemaker:DeleteEndpoint",
        "sagemaker:DeleteModelPackage",
        "application-autoscaling:DeregisterScalableTarget",
        "sagemaker:UpdateEndpointWeightsAndCapacities",
        "sagemaker:DescribeEndpointConfig",
        "cloudwatch:PutMetricAlarm",
        "lambda:InvokeFunction",
    } <= made
    [template] = {id(t): t for t, _ in teardown_requests(world)}.values()
    attached = {p["name"] for p in template.policies("TeardownRole")}
    assert ("TeardownDataBucketPolicy" in attached) == (on_delete == "Empty")
    s3 = {v.request.action for v in verdicts if v.request.action.startswith("s3:")}
    if on_delete == "Retain":
        assert s3 == set()
        return
    assert s3 == {
        "s3:ListBucketVersions",
        "s3:ListBucketMultipartUploads",
        "s3:DeleteObjectVersion",
        "s3:AbortMultipartUpload",
    }
    # DeleteObjects is authorized object by object, each named version as s3:DeleteObjectVersion.
    [delete] = [p for service, op, p in world.calls if op == "DeleteObjects"]
    versions = {
        (v.request.resource, dict(v.request.context).get("s3:versionid"))
        for v in verdicts
        if v.request.action == "s3:DeleteObjectVersion"
    }
    assert versions == {(f"arn:aws:s3:::{pw.BUCKET}/{o['Key']}", o["VersionId"]) for o in delete["Delete"]["Objects"]}


def _without_statement(policy: str, sid: str) -> dict[str, Any]:
    """The SAM-transformed template with one statement of the teardown's policies removed."""
    transformed = copy.deepcopy(dict(iam_model._transformed(pw.TEMPLATE_PATH.read_text(), pw.ASL_PATH.read_text())))
    resources = transformed["Resources"]
    if policy == "TeardownDataBucketPolicy":
        documents = [resources[policy]["Properties"]["PolicyDocument"]]
    else:
        documents = [p["PolicyDocument"] for p in resources["TeardownRole"]["Properties"]["Policies"]]
    for document in documents:
        kept = [s for s in document["Statement"] if s.get("Sid") != sid]
        if len(kept) < len(document["Statement"]):
            document["Statement"] = kept
            return transformed
    raise AssertionError(f"no statement {sid} in {policy}")


def _statements() -> list[tuple[str, str, list[str]]]:
    resources = iam_model.world_template().resources
    found = []
    for policy in resources["TeardownRole"]["Properties"]["Policies"]:
        found += [("TeardownRole", s["Sid"], s["Action"]) for s in policy["PolicyDocument"]["Statement"]]
    bucket = resources["TeardownDataBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    found += [("TeardownDataBucketPolicy", s["Sid"], s["Action"]) for s in bucket]
    return [(policy, sid, actions if isinstance(actions, list) else [actions]) for policy, sid, actions in found]


# The Lambda service's own writes as the function's role (its logs, its X-Ray segments), no handler call:
# not derived by iam_model (see its docstring), so no scenario exercises these statements.
_RUNTIME_STATEMENTS = {"OwnLogs", "Tracing"}


def test_removing_any_statement_of_the_teardown_fails_the_evaluation_naming_its_action(world: World) -> None:
    world.invoke(world.event("Delete", DataBucketOnDelete="Empty"), timeout_s=120)
    assert world.response.answers[-1]["body"]["Status"] == "SUCCESS"
    statements = _statements()
    assert {sid for _, sid, _ in statements} >= _RUNTIME_STATEMENTS
    variants = {
        sid: teardown_requests(world, _without_statement(policy, sid))[0]
        for policy, sid, _ in statements
        if sid not in _RUNTIME_STATEMENTS
    }
    evaluated = dict(zip(variants, iam_model.evaluate_many(list(variants.values())), strict=True))  # one node run
    for policy, sid, actions in statements:
        if sid in _RUNTIME_STATEMENTS:
            continue
        template, found = variants[sid]
        denied = {v.request.action.lower() for v in evaluated[sid] if not v.allowed}
        assert denied, f"{policy}'s statement {sid} is needed by no call of the scenario"
        assert denied <= {a.lower() for a in actions}, (sid, denied)
        with pytest.raises(AssertionError) as failure:
            iam_model.assert_authorized(template, found)
        named = [a for a in actions if a.lower() in denied]
        assert named and all(a.lower() in str(failure.value).lower() for a in named), str(failure.value)
    # In Retain mode CloudFormation creates no TeardownDataBucketPolicy (its Condition is false): the same
    # calls are denied exactly their S3 actions.
    [(_empty, found)] = teardown_requests(world)
    retain = iam_model.world_template({"DataBucketOnDelete": "Retain"}, stack_id=world.stack_id)
    denied = {v.request.action for v in iam_model.evaluate(retain, found) if not v.allowed}
    assert denied == {
        "s3:ListBucketVersions",
        "s3:ListBucketMultipartUploads",
        "s3:DeleteObjectVersion",
        "s3:AbortMultipartUpload",
    }
