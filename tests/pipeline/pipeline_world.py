"""The test world for the pipeline: moto with the real handlers, and SageMaker's missing behaviour.

moto answers SageMaker calls but every job is Completed at once, a tuning job's BestTrainingJob is a
placeholder, names may be reused, and UpdateEndpoint does not exist. `SageMakerSim` fills exactly those
gaps the way the real service behaves (jobs stay InProgress for a few polls, then end as the scenario
says; a duplicate name is ResourceInUse; UpdateEndpoint switches to Updating and then to the new config,
or rolls back to the old one). Everything else (S3, SNS, SQS, Auto Scaling, Lambda, Step Functions'
interpreter) is moto's own. The handlers and the ASL are the real files.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import boto3
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from moto.awslambda.models import LambdaFunction
from moto.sagemaker import models as sm_models
from moto.sagemaker.exceptions import ResourceInUseException, SagemakerClientError, ValidationError
from moto.sagemaker.responses import SageMakerResponse
from samtranslator.yaml_helper import yaml_parse

REPO = Path(__file__).resolve().parents[2]
LAYER = REPO / "functions" / "pipeline_layer"
if str(LAYER) not in sys.path:  # what the Lambda layer's python/ puts on sys.path at run time
    sys.path.insert(0, str(LAYER))

REGION = "us-east-1"
ACCOUNT = "123456789012"
BUCKET = "imgclf-data-example"
PREFIX = "imgclf"
ENDPOINT = "imgclf-classifier"
TOPIC = "imgclf-notifications"
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
    "CleanupFunction": "cleanup",
    "NotifyFunction": "notify",
}


def load_handler(folder: str) -> ModuleType:
    """functions/<folder>/app.py as a module (every function's file is app.py, so load each by path)."""
    name = f"pipeline_fn_{folder}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "functions" / folder / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def lambda_environment(topic_arn: str = "") -> dict[str, str]:
    """The union of the pipeline functions' environment variables in template.yaml, for this world."""
    return {
        "DATA_BUCKET": BUCKET,
        "RESOURCE_PREFIX": PREFIX,
        "SAGEMAKER_ROLE_ARN": ROLE_ARN,
        "ENDPOINT_NAME": ENDPOINT,
        "MODEL_PACKAGE_GROUP_NAME": MODEL_PACKAGE_GROUP,
        "NOTIFICATION_TOPIC_ARN": topic_arn,
        "ERRORS_ALARM_NAME": f"{ENDPOINT}-5xx-errors",
        "LATENCY_ALARM_NAME": f"{ENDPOINT}-model-latency",
        "TRAINING_SOURCE_DIR": str(REPO / "training"),
    }


def template() -> dict[str, Any]:
    return yaml_parse(TEMPLATE_PATH.read_text())


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


# --------------------------------------------------------------------------------------------------
# SageMaker behaviour moto lacks.


class Throttled(SagemakerClientError):
    code = "ThrottlingException"


@dataclass
class SageMakerSim:
    polls: int = 1  # how many Describe calls see InProgress/Creating/Updating before the outcome
    tuning_outcome: str = "Completed"  # or "Failed"
    tuned: dict[str, str] = field(default_factory=lambda: {"lr": "0.0123", "batch-size": "64"})
    training_outcome: str = "Completed"
    test_accuracy: float | None = 0.91
    endpoint_outcome: str = "InService"  # or "Failed"
    update_outcome: str = "InService"  # or "RolledBack"
    throttle_create_training: int = 0  # throttle this many CreateTrainingJob calls first
    calls: list[str] = field(default_factory=list)
    _seen: dict[str, int] = field(default_factory=dict)
    _pending_update: dict[str, str] = field(default_factory=dict)

    def _tick(self, key: str) -> bool:
        """True once `polls` describes of `key` have seen it in progress."""
        self._seen[key] = self._seen.get(key, 0) + 1
        return self._seen[key] > self.polls

    def install(self, monkeypatch: Any) -> None:
        sim = self
        backend_cls = sm_models.SageMakerModelBackend
        original = {
            name: getattr(backend_cls, name)
            for name in (
                "create_hyper_parameter_tuning_job",
                "describe_hyper_parameter_tuning_job",
                "create_training_job",
                "describe_training_job",
                "create_endpoint",
                "describe_endpoint",
            )
        }

        def create_tuning(self: Any, hyper_parameter_tuning_job_name: str, **kwargs: Any) -> str:
            sim.calls.append("CreateHyperParameterTuningJob")
            if hyper_parameter_tuning_job_name in self.hyper_parameter_tuning_jobs:
                raise ResourceInUseException(
                    f"Hyperparameter tuning job {hyper_parameter_tuning_job_name} already exists"
                )
            arn = original["create_hyper_parameter_tuning_job"](self, hyper_parameter_tuning_job_name, **kwargs)
            self.hyper_parameter_tuning_jobs[
                hyper_parameter_tuning_job_name
            ].hyper_parameter_tuning_job_status = "InProgress"
            return arn

        def describe_tuning(self: Any, hyper_parameter_tuning_job_name: str) -> dict[str, Any]:
            job = self.hyper_parameter_tuning_jobs.get(hyper_parameter_tuning_job_name)
            if (
                job is not None
                and job.hyper_parameter_tuning_job_status == "InProgress"
                and sim._tick(f"tuning:{hyper_parameter_tuning_job_name}")
            ):
                job.hyper_parameter_tuning_job_status = sim.tuning_outcome
                if sim.tuning_outcome == "Completed":
                    job.best_training_job = {
                        "TrainingJobName": f"{hyper_parameter_tuning_job_name}-003-1a2b3c4d",
                        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/"
                        f"{hyper_parameter_tuning_job_name}-003-1a2b3c4d",
                        "CreationTime": job.creation_time,
                        "TrainingJobStatus": "Completed",
                        "TunedHyperParameters": dict(sim.tuned),
                        "FinalHyperParameterTuningJobObjectiveMetric": {
                            "Type": "Minimize",
                            "MetricName": "average test loss",
                            "Value": 0.42,
                        },
                        "ObjectiveStatus": "Succeeded",
                    }
                else:
                    job.failure_reason = "All training jobs failed: ClientError: no space left on device"
                    job.best_training_job = None
            return original["describe_hyper_parameter_tuning_job"](self, hyper_parameter_tuning_job_name)

        def create_training(self: Any, training_job_name: str, *args: Any, **kwargs: Any) -> Any:
            sim.calls.append("CreateTrainingJob")
            if sim.throttle_create_training > 0:
                sim.throttle_create_training -= 1
                raise Throttled("Rate exceeded")
            if training_job_name in self.training_jobs:
                raise ResourceInUseException(f"Training job {training_job_name} already exists")
            job = original["create_training_job"](self, training_job_name, *args, **kwargs)
            self.training_jobs[training_job_name].training_job_status = "InProgress"
            return job

        def describe_training(self: Any, training_job_name: str) -> dict[str, Any]:
            job = self.training_jobs.get(training_job_name)
            if (
                job is not None
                and job.training_job_status == "InProgress"
                and sim._tick(f"training:{training_job_name}")
            ):
                job.training_job_status = sim.training_outcome
                if sim.test_accuracy is not None:
                    job.final_metric_data_list = [
                        {"MetricName": "average test loss", "Value": 0.42, "Timestamp": job.creation_time},
                        {"MetricName": "test accuracy", "Value": sim.test_accuracy, "Timestamp": job.creation_time},
                    ]
            return original["describe_training_job"](self, training_job_name)

        def create_endpoint(self: Any, endpoint_name: str, endpoint_config_name: str, tags: Any) -> Any:
            sim.calls.append("CreateEndpoint")
            if endpoint_name in self.endpoints:
                raise ValidationError(f"Cannot create already existing endpoint {endpoint_name}")
            endpoint = original["create_endpoint"](self, endpoint_name, endpoint_config_name, tags)
            endpoint.endpoint_status = "Creating"
            return endpoint

        def describe_endpoint(self: Any, endpoint_name: str) -> dict[str, Any]:
            endpoint = self.endpoints.get(endpoint_name)
            if (
                endpoint is not None
                and endpoint.endpoint_status in ("Creating", "Updating")
                and sim._tick(f"endpoint:{endpoint_name}:{endpoint.endpoint_status}:{len(sim.calls)}")
            ):
                if endpoint.endpoint_status == "Creating":
                    endpoint.endpoint_status = sim.endpoint_outcome
                    if sim.endpoint_outcome == "Failed":
                        endpoint.failure_reason = (
                            "The primary container for production variant AllTraffic did "
                            "not pass the ping health check."
                        )
                else:
                    new_config = sim._pending_update.pop(endpoint_name)
                    endpoint.endpoint_status = "InService"
                    if sim.update_outcome == "InService":
                        endpoint.endpoint_config_name = new_config
                    else:
                        endpoint.failure_reason = (
                            f"Deployment rolled back: alarm {ENDPOINT}-5xx-errors went into "
                            "ALARM during the baking period"
                        )
            return original["describe_endpoint"](self, endpoint_name)

        def update_endpoint(self: Any, endpoint_name: str, endpoint_config_name: str) -> str:
            sim.calls.append("UpdateEndpoint")
            endpoint = self.endpoints.get(endpoint_name)
            if endpoint is None:
                raise ValidationError(f"Could not find endpoint {endpoint_name}")
            if endpoint.endpoint_status != "InService":
                raise ValidationError(f"Cannot update in-progress endpoint {endpoint_name}")
            self.describe_endpoint_config(endpoint_config_name)  # must exist
            endpoint.endpoint_status = "Updating"
            sim._pending_update[endpoint_name] = endpoint_config_name
            return endpoint.arn

        def stop_tuning(self: Any, hyper_parameter_tuning_job_name: str) -> None:
            sim.calls.append("StopHyperParameterTuningJob")
            job = self.hyper_parameter_tuning_jobs.get(hyper_parameter_tuning_job_name)
            if job is None:
                raise ValidationError(f"Could not find tuning job {hyper_parameter_tuning_job_name}")
            job.hyper_parameter_tuning_job_status = "Stopping"

        def stop_tuning_response(self: Any) -> Any:
            from moto.core.responses import EmptyResult

            self.sagemaker_backend.stop_hyper_parameter_tuning_job(self._get_param("HyperParameterTuningJobName"))
            return EmptyResult()

        def stop_training(self: Any, training_job_name: str) -> None:
            sim.calls.append("StopTrainingJob")
            job = self.training_jobs.get(training_job_name)
            if job is None:
                raise ValidationError(f"Could not find training job {training_job_name}")
            job.training_job_status = "Stopping"

        def stop_training_response(self: Any) -> Any:
            from moto.core.responses import EmptyResult

            self.sagemaker_backend.stop_training_job(self._get_param("TrainingJobName"))
            return EmptyResult()

        def update_endpoint_response(self: Any) -> Any:
            from moto.core.responses import ActionResult

            arn = self.sagemaker_backend.update_endpoint(
                self._get_param("EndpointName"), self._get_param("EndpointConfigName")
            )
            return ActionResult({"EndpointArn": arn})

        monkeypatch.setattr(backend_cls, "create_hyper_parameter_tuning_job", create_tuning)
        monkeypatch.setattr(backend_cls, "describe_hyper_parameter_tuning_job", describe_tuning)
        monkeypatch.setattr(backend_cls, "create_training_job", create_training)
        monkeypatch.setattr(backend_cls, "describe_training_job", describe_training)
        monkeypatch.setattr(backend_cls, "create_endpoint", create_endpoint)
        monkeypatch.setattr(backend_cls, "describe_endpoint", describe_endpoint)
        monkeypatch.setattr(backend_cls, "update_endpoint", update_endpoint, raising=False)
        monkeypatch.setattr(SageMakerResponse, "update_endpoint", update_endpoint_response, raising=False)
        monkeypatch.setattr(backend_cls, "stop_training_job", stop_training, raising=False)
        monkeypatch.setattr(SageMakerResponse, "stop_training_job", stop_training_response, raising=False)
        monkeypatch.setattr(backend_cls, "stop_hyper_parameter_tuning_job", stop_tuning, raising=False)
        monkeypatch.setattr(SageMakerResponse, "stop_hyper_parameter_tuning_job", stop_tuning_response, raising=False)


_running = threading.local()  # which pipeline function's handler runs on this thread (if any)


class RecordedCall(NamedTuple):
    """An AWS call a handler made; tests/pipeline/iam_model.py derives what AWS authorizes for it."""

    function: str  # folder in functions/
    service: str  # the client's signing name
    operation: str
    params: dict[str, Any]
    answer: dict[str, str]  # the answer's top-level strings (a created ARN, a described config name)
    error: str | None  # the error code the world answered with


AWS_CALL_LOG: list[RecordedCall] = []


def _recording(make_api_call: Any) -> Any:
    def call(client: Any, operation_name: str, api_params: Any) -> Any:
        function = getattr(_running, "function", None)
        if function is None:
            return make_api_call(client, operation_name, api_params)
        record = RecordedCall(
            function, client.meta.service_model.signing_name, operation_name, dict(api_params), {}, None
        )
        try:
            response = make_api_call(client, operation_name, api_params)
        except ClientError as error:
            AWS_CALL_LOG.append(record._replace(error=error.response.get("Error", {}).get("Code")))
            raise
        answer = {k: v for k, v in response.items() if isinstance(v, str)}
        AWS_CALL_LOG.append(record._replace(answer=answer))
        return response

    return call


def install_inprocess_lambdas(monkeypatch: Any, invocations: list[tuple[str, dict[str, Any]]]) -> None:
    """moto runs Lambda code in Docker; here each function's real handler runs in-process instead, and an
    exception becomes the Lambda runtime's error payload ({"errorType", "errorMessage"}). Every AWS call a
    handler makes is recorded in AWS_CALL_LOG (for the IAM evaluation, tests/pipeline/iam_model.py)."""
    monkeypatch.setattr(BaseClient, "_make_api_call", _recording(BaseClient._make_api_call))

    def invoke(self: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
        payload = json.loads(event) if isinstance(event, str | bytes) else (event or {})
        invocations.append((self.function_name, payload))
        handler = load_handler(self.function_name).handler
        _running.function = self.function_name
        try:
            return json.dumps(handler(payload, None)), False, ""
        except Exception as error:  # what the Lambda runtime does with an uncaught exception
            body = {"errorType": type(error).__name__, "errorMessage": str(error)}
            return json.dumps(body), True, ""
        finally:
            _running.function = None

    monkeypatch.setattr(LambdaFunction, "_invoke_lambda", invoke)


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()


def upload_dataset(
    s3: Any,
    dataset: str = DATASET,
    splits: tuple[str, ...] = ("train", "valid", "test"),
    manifest: dict[str, Any] | None = None,
) -> str:
    """A (tiny) dataset in the dogImages layout and its manifest, uploaded last. Returns the manifest key."""
    for split in splits:
        for class_folder in ("001.Affenpinscher", "002.Afghan_hound"):
            s3.put_object(
                Bucket=BUCKET,
                Key=f"datasets/{dataset}/{split}/{class_folder}/img_0.jpg",
                Body=b"\xff\xd8\xff\xe0 not really a jpeg",
            )
    key = f"datasets/{dataset}/manifest.json"
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(manifest if manifest is not None else {"version": "v1"}))
    return key


class PipelineWorld:
    """Bucket, topic (+ SQS queue to read notifications), model package group, Lambdas, state machine."""

    def __init__(self, sim: SageMakerSim, invocations: list[tuple[str, dict[str, Any]]]):
        self.sim = sim
        self.invocations = invocations
        self.s3 = boto3.client("s3", region_name=REGION)
        self.sagemaker = boto3.client("sagemaker", region_name=REGION)
        self.autoscaling = boto3.client("application-autoscaling", region_name=REGION)
        self.sfn = boto3.client("stepfunctions", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        sns = boto3.client("sns", region_name=REGION)
        self.s3.create_bucket(Bucket=BUCKET)
        # Versioned, as template.yaml's DataBucket: every event then carries the put's version-id.
        self.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        self.topic_arn = sns.create_topic(Name=TOPIC)["TopicArn"]
        queue_url = self.sqs.create_queue(QueueName="notifications")["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sns.subscribe(
            TopicArn=self.topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"}
        )
        self.queue_url = queue_url
        self.sagemaker.create_model_package_group(ModelPackageGroupName=MODEL_PACKAGE_GROUP)
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(
            RoleName="pipeline-lambda",
            AssumeRolePolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": "sts:AssumeRole",
                            "Principal": {"Service": "lambda.amazonaws.com"},
                        }
                    ],
                }
            ),
        )["Role"]["Arn"]
        awslambda = boto3.client("lambda", region_name=REGION)
        for folder in FUNCTIONS.values():
            awslambda.create_function(
                FunctionName=folder, Runtime="python3.12", Role=role, Handler="app.handler", Code={"ZipFile": _zip()}
            )
        definition = substitute(ASL_PATH.read_text(), resolve_substitutions(poll_seconds=0))
        self.state_machine_arn = self.sfn.create_state_machine(
            name=STATE_MACHINE, definition=definition, roleArn=role
        )["stateMachineArn"]

    def run(
        self,
        key: str,
        name: str,
        etag: str = "0123456789abcdef0123456789abcdef",
        timeout: float = 60,
        event: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Start an execution for an upload of `key` (or with `event` as input) and wait for it to end. The
        event carries the version S3 gave the latest put of `key`, as S3's own event would."""
        if event is None:
            version_id = self.s3.head_object(Bucket=BUCKET, Key=key)["VersionId"]
            event = s3_event(key, etag, version_id=version_id)
        arn = self.sfn.start_execution(
            stateMachineArn=self.state_machine_arn, name=name, input=json.dumps(event)
        )["executionArn"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            execution = self.sfn.describe_execution(executionArn=arn)
            if execution["status"] != "RUNNING":
                return execution
            time.sleep(0.05)
        raise AssertionError(f"execution {name} still running after {timeout} s")

    def notifications(self) -> list[str]:
        messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        return [m["Body"] for m in messages]

    def states_entered(self, execution_arn: str) -> list[str]:
        events = self.sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
        return [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]
