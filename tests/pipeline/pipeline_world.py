"""The test world for the pipeline: moto with the real handlers, and SageMaker's missing behaviour.

moto answers SageMaker calls but every job is Completed at once, a tuning job's BestTrainingJob is a
placeholder, names may be reused, and UpdateEndpoint does not exist. `SageMakerSim` fills exactly those
gaps the way the real service behaves, each behaviour citing the AWS doc it models (jobs stay InProgress
for a few polls, then end as the scenario says; a duplicate name is ResourceInUse; an endpoint being
created or updated shows the new config in PendingDeploymentSummary while EndpointConfigName still names
the old one; UpdateEndpoint keeps or resets the instance count as RetainAllVariantProperties says, refuses
an instance-type change while autoscaling is registered, plays the blue/green traffic-shift steps of its
TrafficRoutingConfiguration (ALL_AT_ONCE, CANARY, LINEAR; refusing the sizes AWS refuses), and ends
InService on the new config or, rolled back by an alarm in any step's baking period, on the old one; a
config just created may be invisible for a moment; failures the scenarios need). Everything else
(S3, SNS, SQS, Auto Scaling, Lambda, Step Functions' interpreter) is moto's own.
The handlers and the ASL are the real files.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import tarfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import boto3
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from mlpipeline import deployment_requests, resource_tags
from moto.applicationautoscaling.models import applicationautoscaling_backends
from moto.awslambda.models import LambdaFunction
from moto.s3.models import s3_backends
from moto.sagemaker import models as sm_models
from moto.sagemaker.exceptions import ResourceInUseException, SagemakerClientError, ValidationError
from moto.sagemaker.responses import SageMakerResponse
from moto.sagemakerruntime.responses import SageMakerRuntimeResponse
from stack import (  # noqa: F401 (re-exported: the scenarios use pw.<name>)
    ACCOUNT,
    ASL_PATH,
    BUCKET,
    DATASET,
    ENDPOINT,
    FUNCTIONS,
    LAYER,
    MODEL_PACKAGE_GROUP,
    PREFIX,
    REGION,
    REPO,
    ROLE_ARN,
    STATE_MACHINE,
    TEMPLATE_PATH,
    TOPIC,
    TOPIC_ARN,
    function_arn,
    function_properties,
    lambda_environment,
    load_handler,
    model_package_event,
    parameter_defaults,
    resolve_substitutions,
    s3_event,
    substitute,
    template,
)

from imgclf import contract, smoke_check

# --------------------------------------------------------------------------------------------------
# SageMaker behaviour moto lacks.


class Throttled(SagemakerClientError):
    code = "ThrottlingException"


class InternalFailure(SagemakerClientError):
    """SageMaker's 500 (https://docs.aws.amazon.com/sagemaker/latest/APIReference/CommonErrors.html)."""

    code = "InternalFailure"


class ResourceLimitExceeded(SagemakerClientError):
    """UpdateEndpoint's documented error when the account may not run the new fleet
    (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_UpdateEndpoint.html#API_UpdateEndpoint_Errors)."""

    code = "ResourceLimitExceeded"


# Docs the SageMakerSim behaviours below model.
UPDATE_ENDPOINT_DOC = "https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_UpdateEndpoint.html"
DESCRIBE_ENDPOINT_DOC = "https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DescribeEndpoint.html"
VARIANT_PROPERTY_DOC = "https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_VariantProperty.html"
SCALING_UPDATE_DOC = "https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-scaling-update.html"
TRAFFIC_ROUTING_DOC = "https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_TrafficRoutingConfig.html"
LINEAR_DOC = "https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-blue-green-linear.html"
ROLLBACK_DOC = "https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-configuration.html"
CHECKPOINTS_DOC = "https://docs.aws.amazon.com/sagemaker/latest/dg/model-checkpoints-enable.html"
VARIANT_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
DATA_CAPTURE_SUMMARY_DOC = "https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DataCaptureConfigSummary.html"


def data_capture_summary(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """What DescribeEndpoint shows of the endpoint config's DataCaptureConfig: a DataCaptureConfigSummary,
    "the currently active data capture configuration used by your Endpoint", whose five members are all
    required (EnableCapture, CaptureStatus Started|Stopped, CurrentSamplingPercentage, DestinationS3Uri,
    KmsKeyId; DATA_CAPTURE_SUMMARY_DOC and botocore's sagemaker model); none for a config without capture.
    EnableCapture defaults to enabled (API_DataCaptureConfig.html). moto shows the config's dict itself."""
    if not config:
        return None
    enabled = bool(config.get("EnableCapture", True))
    return {
        "EnableCapture": enabled,
        "CaptureStatus": "Started" if enabled else "Stopped",
        "CurrentSamplingPercentage": config["InitialSamplingPercentage"],
        "DestinationS3Uri": config["DestinationS3Uri"],
        "KmsKeyId": config.get("KmsKeyId", ""),
    }


@dataclass
class SageMakerSim:
    polls: int = 1  # how many Describe calls see InProgress/Creating/Updating before the outcome
    update_polls: int | None = None  # the same for Updating only (None: `polls`); large = stuck updating
    tuning_outcome: str = "Completed"  # or "Failed"
    tuned: dict[str, str] = field(default_factory=lambda: {"lr": "0.0123", "batch-size": "64"})
    training_outcome: str = "Completed"
    # The feature-extraction job (a training job with train.py --extract-features-only): how it ends, and
    # whether the feature set it wrote reached S3 (SageMaker syncs its CheckpointConfig.LocalPath there).
    extraction_outcome: str = "Completed"
    extraction_uploads: bool = True
    test_accuracy: float | None = 0.91
    endpoint_outcome: str = "InService"  # or "Failed"
    update_outcome: str = "InService"  # or "RolledBack", "UpdateRollbackFailed"
    throttle_create_training: int = 0  # throttle this many CreateTrainingJob calls first
    throttle_describe_tuning: int = 0  # throttle this many DescribeHyperParameterTuningJob calls first
    # CreateHyperParameterTuningJob creates the job, then answers 500 (the caller cannot know it worked).
    lose_create_tuning_response: bool = False
    # Another execution (this ARN) creates the same tuning job just before this one's create arrives.
    racing_execution: str | None = None
    # This many CreateEndpoint/UpdateEndpoint calls after CreateEndpointConfig do not see the new config yet.
    config_not_visible_for: int = 0
    update_endpoint_error: str | None = None  # e.g. "ResourceLimitExceeded": every UpdateEndpoint fails so
    # An auto-rollback alarm trips in the baking period after this traffic-shift step (1-based) of an
    # update (None: no alarm; update_outcome="RolledBack" is an alarm after the last step).
    rollback_at_step: int | None = None
    # Each update's traffic shifts as the deployment guardrails play them: {"endpoint", "type",
    # "fleet", "steps": [instances of the new fleet taking traffic after each step], "outcome"}.
    rollouts: list[dict[str, Any]] = field(default_factory=list)
    # The post-deploy smoke test: each completed training job ships model.tar.gz with its smoke sample
    # (imgclf.smoke_sample's format); the endpoint answers InvokeEndpoint from the served model's recorded
    # answers ("recorded") or as a different model would ("different": the top two labels swapped).
    smoke_answers: str = "recorded"
    smoke_samples: dict[str, dict[str, Any]] = field(default_factory=dict)  # ModelDataUrl -> sample
    calls: list[str] = field(default_factory=list)
    # The tuning job's trials (ListTrainingJobsForHyperParameterTuningJob, which moto lacks) and the seconds
    # each job ran and was billed: (suffix, status, objective, training s, billable s, spot)
    trials: tuple[tuple[str, str, float | None, int, int, bool], ...] = (
        ("001-0a0a0a0a", "Completed", 0.61, 600, 600, False),
        ("002-0b0b0b0b", "Stopped", 0.95, 300, 120, True),  # stopped early by the tuning job
        ("003-1a2b3c4d", "Completed", 0.42, 590, 590, False),
    )
    final_training_seconds: int = 1200
    final_billable_seconds: int = 1200
    on_training_end: Any = None  # called with moto's job when a training job ends
    _seen: dict[str, int] = field(default_factory=dict)
    _tuning_jobs: list[str] = field(default_factory=list)
    _pending_update: dict[str, dict[str, Any]] = field(default_factory=dict)
    _invisible_configs: dict[str, int] = field(default_factory=dict)
    _moto: dict[str, Any] = field(default_factory=dict, repr=False)  # moto's own backend methods, by name

    def _tick(self, key: str, polls: int | None = None) -> bool:
        """True once `polls` (default self.polls) describes of `key` have seen it in progress."""
        self._seen[key] = self._seen.get(key, 0) + 1
        return self._seen[key] > (self.polls if polls is None else polls)

    def _trial_jobs(self) -> dict[str, tuple[str, str, float | None, int, int, bool]]:
        return {f"{tuning}-{t[0]}": (tuning, *t[1:]) for tuning in self._tuning_jobs for t in self.trials}

    def list_trials(self, tuning_job_name: str) -> dict[str, Any]:
        """ListTrainingJobsForHyperParameterTuningJob's answer (API_HyperParameterTrainingJobSummary.html)."""
        if tuning_job_name not in self._tuning_jobs:
            raise ValidationError(f"Could not find hyper-parameter tuning job {tuning_job_name}")
        summaries = []
        for name, (_tuning, status, objective, _seconds, _billable, _spot) in self._trial_jobs().items():
            if not name.startswith(tuning_job_name):
                continue
            summary = {"TrainingJobName": name,
                       "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name}",
                       "CreationTime": "2026-11-23T12:00:00Z", "TrainingJobStatus": status,
                       "TunedHyperParameters": {"lr": "0.0123" if name.endswith("1a2b3c4d") else "0.05",
                                                "batch-size": '"64"'},
                       "ObjectiveStatus": "Succeeded" if status == "Completed" else "Pending"}
            if objective is not None:
                summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
                    "Type": "Minimize", "MetricName": "average test loss", "Value": objective}
            summaries.append(summary)
        return {"TrainingJobSummaries": summaries}

    def trial_description(self, name: str) -> dict[str, Any] | None:
        trial = self._trial_jobs().get(name)
        if trial is None:
            return None
        _tuning, status, _objective, seconds, billable, spot = trial
        return {"TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name}",
                "TrainingJobStatus": status, "CreationTime": "2026-11-23T12:00:00Z",
                "ResourceConfig": {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
                "EnableManagedSpotTraining": spot, "TrainingTimeInSeconds": seconds,
                "BillableTimeInSeconds": billable}

    def _plan_rollout(self, endpoint_name: str, routing: dict[str, Any] | None, fleet: int) -> None:
        """The steps of a blue/green update of `fleet` instances, as TRAFFIC_ROUTING_DOC defines them
        (ALL_AT_ONCE: one step of the whole fleet; CANARY: the canary, then the rest; LINEAR: steps of the
        step size until the whole fleet takes traffic), refusing what that reference refuses (a canary over
        50%, a linear step outside 10-50% of the variant's instance count) with a ValidationException.
        A percentage rounds down to whole instances (AWS leaves the rounding unstated)."""
        routing = routing or {"Type": "ALL_AT_ONCE"}
        kind = routing["Type"]
        size = routing.get("CanarySize" if kind == "CANARY" else "LinearStepSize")
        steps = [fleet]
        if kind in ("CANARY", "LINEAR"):
            if size is None:
                raise ValidationError(f"{kind} traffic routing needs its CapacitySize")
            value = size["Value"]
            percent = value if size["Type"] == "CAPACITY_PERCENT" else 100 * value / fleet
            low = 10 if kind == "LINEAR" else 0
            if not low <= percent <= 50:
                raise ValidationError(
                    f"{kind} size {value} ({size['Type']}) must be "
                    f"{'10-50%' if kind == 'LINEAR' else 'at most 50%'} of the variant's {fleet} instances"
                )
            step = value if size["Type"] == "INSTANCE_COUNT" else value * fleet // 100
            steps = (
                [step, fleet] if kind == "CANARY" else [min(fleet, step * k) for k in range(1, -(-fleet // step) + 1)]
            )
        self.rollouts.append(
            {
                "endpoint": endpoint_name,
                "type": kind,
                "fleet": fleet,
                "planned": steps,
                "steps": [steps[0]],
                "outcome": "InProgress",
            }
        )

    def _advance_rollout(self, endpoint_name: str) -> bool:
        """The baking period of the current step ended: True when the next step began (still Updating);
        False when the update ends now (outcome "RolledBack" if an alarm tripped, else "Completed")."""
        rollout = self.rollouts[-1] if self.rollouts else None
        if rollout is None or rollout["endpoint"] != endpoint_name or rollout["outcome"] != "InProgress":
            return False
        if self.rollback_at_step == len(rollout["steps"]):
            # "If alarms trip during any of the baking periods, 100% of the endpoint traffic rolls back to
            # the blue fleet" (LINEAR_DOC).
            rollout["outcome"] = "RolledBack"
            return False
        if len(rollout["steps"]) < len(rollout["planned"]):
            rollout["steps"].append(rollout["planned"][len(rollout["steps"])])
            return True
        rollout["outcome"] = "RolledBack" if self.update_outcome == "RolledBack" else "Completed"
        return False

    def _ship_model_artifact(self, job: Any) -> None:
        """What train.py leaves in S3ModelArtifacts: model.tar.gz with smoke_check.SAMPLE_FILE at its root,
        two test images of this job and the answers its model gave them (moto's S3 backend directly: the
        training job's own write, not a handler's call)."""
        name = job.training_job_name
        predictions = [("Affenpinscher", 0, 0.93), ("Afghan hound", 1, 0.07)]
        images = [b"\xff\xd8\xff\xe0" + f"{name} test image {i}".encode() for i in range(2)]
        sample = {
            "schema_version": smoke_check.SCHEMA_VERSION,
            "top_k": smoke_check.TOP_K,
            "images": [
                {"name": f"00{i + 1}.x/img_{i}.jpg", "content_type": contract.JPEG_CONTENT_TYPE,
                 "image_base64": base64.b64encode(image).decode()}
                for i, image in enumerate(images)
            ],
            "precisions": {"torch": "fp32"},
            "recordings": {"torch": {"precision": "fp32", "answers": [
                {"predictions": [{"label": label, "class_id": cid, "probability": p} for label, cid, p in predictions],
                 "runtime": "torch"} for _ in images]}},
        }
        body = json.dumps(sample).encode()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for member_name, data in (("model.pt", b"weights"), (smoke_check.SAMPLE_FILE, body)):
                info = tarfile.TarInfo(member_name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        url = job.model_artifacts["S3ModelArtifacts"]
        bucket, key = url[len("s3://"):].split("/", 1)
        s3_backends[ACCOUNT]["aws"].put_object(bucket, key, buffer.getvalue())
        self.smoke_samples[url] = sample

    def _invoke_answer(self, backend: Any, endpoint_name: str, body: bytes) -> dict[str, Any]:
        """The served model's answer: the model of the config the endpoint serves now (its EndpointConfigName;
        DESCRIBE_ENDPOINT_DOC), from that model's recording."""
        self.calls.append("InvokeEndpoint")
        endpoint = backend.endpoints.get(endpoint_name)
        if endpoint is None or endpoint.endpoint_status not in ("InService", "Updating"):
            raise ValidationError(f"Endpoint {endpoint_name} of account {ACCOUNT} not found.")
        config = backend.endpoint_configs[endpoint.endpoint_config_name]
        model = backend._models[config.production_variants[0]["ModelName"]]
        sample = self.smoke_samples[model.primary_container["ModelDataUrl"]]
        index = [base64.b64decode(i["image_base64"]) for i in sample["images"]].index(body)
        answer = copy.deepcopy(sample["recordings"]["torch"]["answers"][index])
        if self.smoke_answers == "different":
            first, second = answer["predictions"][:2]
            first["label"], second["label"] = second["label"], first["label"]
        return answer

    # ----------------------------------------------------------------------------------------------
    # One handler per simulated operation. `install` puts each where moto looks for it
    # (SIMULATED_OPERATIONS); a handler takes moto's own `self` (the SageMaker backend, or for the wire
    # layer the SageMakerResponse) after the sim, and calls moto's own method through self._moto.

    def install(self, monkeypatch: Any) -> None:
        """Answer every operation of SIMULATED_OPERATIONS with its handler, keeping moto's own backend
        methods (where moto has one) for the handlers to build on."""
        for owner, method, handler in SIMULATED_OPERATIONS:
            if owner is sm_models.SageMakerModelBackend and hasattr(owner, method):
                self._moto[method] = getattr(owner, method)
            monkeypatch.setattr(owner, method, _as_method(getattr(self, handler)), raising=False)
        # InvokeEndpoint's body is the image's raw bytes: keep them bytes (API_runtime_InvokeEndpoint.html).
        monkeypatch.setattr(SageMakerRuntimeResponse, "use_raw_body", True)

    def _create_tuning_job(self, backend: Any, hyper_parameter_tuning_job_name: str, **kwargs: Any) -> str:
        """CreateHyperParameterTuningJob (API_CreateHyperParameterTuningJob.html): a name in use is
        ResourceInUse (moto would overwrite the job); the job starts InProgress. The scenario may let another
        execution create the same job first, or lose the answer of a create that worked."""
        self.calls.append("CreateHyperParameterTuningJob")
        jobs = backend.hyper_parameter_tuning_jobs
        if self.racing_execution is not None and hyper_parameter_tuning_job_name not in jobs:
            # the other execution's StartTuning wins the race: the same request, its own execution tag
            tags = [t for t in kwargs.get("tags") or [] if t["Key"] != resource_tags.EXECUTION_TAG_KEY]
            tags.append(resource_tags.execution_tag(self.racing_execution))
            self._moto["create_hyper_parameter_tuning_job"](
                backend, hyper_parameter_tuning_job_name, **{**kwargs, "tags": tags}
            )
            jobs[hyper_parameter_tuning_job_name].hyper_parameter_tuning_job_status = "InProgress"
        if hyper_parameter_tuning_job_name in jobs:
            raise ResourceInUseException(f"Hyperparameter tuning job {hyper_parameter_tuning_job_name} already exists")
        self._tuning_jobs.append(hyper_parameter_tuning_job_name)
        arn = self._moto["create_hyper_parameter_tuning_job"](backend, hyper_parameter_tuning_job_name, **kwargs)
        jobs[hyper_parameter_tuning_job_name].hyper_parameter_tuning_job_status = "InProgress"
        if self.lose_create_tuning_response:
            self.lose_create_tuning_response = False
            raise InternalFailure("We encountered an internal error. Please try again.")
        return arn

    def _describe_tuning_job(self, backend: Any, hyper_parameter_tuning_job_name: str) -> dict[str, Any]:
        """DescribeHyperParameterTuningJob (API_DescribeHyperParameterTuningJob.html): InProgress for
        `polls` describes, then the scenario's outcome, with the BestTrainingJob a completed job names
        (API_HyperParameterTrainingJobSummary.html) or a failed job's FailureReason. The scenario may
        throttle the first describes (CommonErrors.html: ThrottlingException)."""
        if self.throttle_describe_tuning > 0:
            self.throttle_describe_tuning -= 1
            raise Throttled("Rate exceeded")
        job = backend.hyper_parameter_tuning_jobs.get(hyper_parameter_tuning_job_name)
        if (
            job is not None
            and job.hyper_parameter_tuning_job_status == "InProgress"
            and self._tick(f"tuning:{hyper_parameter_tuning_job_name}")
        ):
            job.hyper_parameter_tuning_job_status = self.tuning_outcome
            if self.tuning_outcome == "Completed":
                job.best_training_job = {
                    "TrainingJobName": f"{hyper_parameter_tuning_job_name}-003-1a2b3c4d",
                    "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/"
                    f"{hyper_parameter_tuning_job_name}-003-1a2b3c4d",
                    "CreationTime": job.creation_time,
                    "TrainingJobStatus": "Completed",
                    "TunedHyperParameters": dict(self.tuned),
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
        return self._moto["describe_hyper_parameter_tuning_job"](backend, hyper_parameter_tuning_job_name)

    def _stop_tuning_job(self, backend: Any, hyper_parameter_tuning_job_name: str) -> None:
        """StopHyperParameterTuningJob (API_StopHyperParameterTuningJob.html), which moto lacks: the job
        is Stopping."""
        self._stop("StopHyperParameterTuningJob", backend.hyper_parameter_tuning_jobs,
                   hyper_parameter_tuning_job_name, "tuning job", "hyper_parameter_tuning_job_status")

    def _stop_tuning_job_response(self, response: Any) -> Any:
        """StopHyperParameterTuningJob on the wire (moto does not route it): an empty answer."""
        return _empty_answer(response, "stop_hyper_parameter_tuning_job", "HyperParameterTuningJobName")

    def _list_trials_response(self, response: Any) -> Any:
        """ListTrainingJobsForHyperParameterTuningJob on the wire (moto does not route it): `list_trials`
        (API_ListTrainingJobsForHyperParameterTuningJob.html)."""
        from moto.core.responses import ActionResult

        return ActionResult(self.list_trials(response._get_param("HyperParameterTuningJobName")))

    def _create_training_job(self, backend: Any, training_job_name: str, *args: Any, **kwargs: Any) -> Any:
        """CreateTrainingJob (API_CreateTrainingJob.html): a name in use is ResourceInUse (moto would
        overwrite the job); the job starts InProgress. The scenario may throttle the first creates of
        training (not feature-extraction) jobs (CommonErrors.html: ThrottlingException)."""
        extraction = contract.EXTRACT_FEATURES_HYPERPARAMETER in (kwargs.get("hyper_parameters") or {})
        self.calls.append("CreateTrainingJob[extraction]" if extraction else "CreateTrainingJob")
        if self.throttle_create_training > 0 and not extraction:
            self.throttle_create_training -= 1
            raise Throttled("Rate exceeded")
        if training_job_name in backend.training_jobs:
            raise ResourceInUseException(f"Training job {training_job_name} already exists")
        job = self._moto["create_training_job"](backend, training_job_name, *args, **kwargs)
        backend.training_jobs[training_job_name].training_job_status = "InProgress"
        return job

    def _describe_training_job(self, backend: Any, training_job_name: str) -> dict[str, Any]:
        """DescribeTrainingJob (API_DescribeTrainingJob.html): InProgress for `polls` describes, then the
        scenario's outcome with the job's FinalMetricDataList and, once it ends, the seconds it ran and
        was billed; a completed job's model artifact is in S3. A tuning job's trials answer from `trials`."""
        job = backend.training_jobs.get(training_job_name)
        if job is not None and job.training_job_status == "InProgress" and self._tick(f"training:{training_job_name}"):
            if contract.EXTRACT_FEATURES_HYPERPARAMETER in (job.hyper_parameters or {}):
                self._finish_extraction(backend, job)
                return self._moto["describe_training_job"](backend, training_job_name)
            self._finish_training(job)
        trial = self.trial_description(training_job_name)
        if trial is not None:
            return trial
        answer = self._moto["describe_training_job"](backend, training_job_name)
        if answer.get("TrainingJobStatus") in ("Completed", "Failed", "Stopped"):
            # What DescribeTrainingJob reports once a job ends (moto leaves both out): seconds billed
            # and run (API_DescribeTrainingJob.html); managed spot bills less than it ran.
            answer.setdefault("TrainingTimeInSeconds", self.final_training_seconds)
            answer.setdefault("BillableTimeInSeconds", self.final_billable_seconds)
        return answer

    def _finish_training(self, job: Any) -> None:
        """A training job ends as the scenario says, with the metrics train.py prints (FinalMetricDataList,
        API_DescribeTrainingJob.html) and, completed, its model artifact."""
        job.training_job_status = self.training_outcome
        if self.on_training_end is not None:
            self.on_training_end(job)  # what the job leaves in S3 (model.tar.gz, output.tar.gz)
        if self.test_accuracy is not None:
            job.final_metric_data_list = [
                {"MetricName": "average test loss", "Value": 0.42, "Timestamp": job.creation_time},
                {"MetricName": "test accuracy", "Value": self.test_accuracy, "Timestamp": job.creation_time},
                # train.py's prediction-baseline line, read by its MetricDefinitions (contract).
                *({"MetricName": name, "Value": value, "Timestamp": job.creation_time} for name, value in (
                    (contract.BASELINE_COUNT_METRIC_NAME, 120.0),
                    (contract.BASELINE_TOP1_MEAN_METRIC_NAME, 0.86),
                    (contract.BASELINE_TOP1_STD_METRIC_NAME, 0.11))),
            ]
        if job.training_job_status == "Completed":
            self._ship_model_artifact(job)

    def _finish_extraction(self, backend: Any, job: Any) -> None:
        """The extraction job ends as the scenario says. Completed, what train.py wrote under
        CheckpointConfig.LocalPath is in CheckpointConfig.S3Uri ("SageMaker AI ... copies checkpoint
        data from a local path to Amazon S3", CHECKPOINTS_DOC): the feature cache's folder with its
        manifest, written last (the files' bytes are train.py's business, tested in tests/training)."""
        job.training_job_status = self.extraction_outcome
        if self.extraction_outcome != "Completed":
            job.failure_reason = "AlgorithmError: ExecuteUserScriptError: CUDA out of memory"
            return
        if not self.extraction_uploads:
            return
        bucket, _, folder = job.checkpoint_config["S3Uri"].removeprefix("s3://").partition("/")
        cache = f"{folder}{contract.FEATURE_CACHE_FOLDER}/"
        s3 = s3_backends[backend.account_id]["aws"]
        for split in ("train", "valid", "test"):
            s3.put_object(bucket, f"{cache}resnet18-{split}-0123.pt", b"\0" * 64)
        s3.put_object(bucket, cache + contract.FEATURE_SET_MANIFEST, b"{}")

    def _stop_training_job(self, backend: Any, training_job_name: str) -> None:
        """StopTrainingJob (API_StopTrainingJob.html), which moto lacks: the job is Stopping."""
        self._stop("StopTrainingJob", backend.training_jobs, training_job_name, "training job", "training_job_status")

    def _stop_training_job_response(self, response: Any) -> Any:
        """StopTrainingJob on the wire (moto does not route it): an empty answer."""
        return _empty_answer(response, "stop_training_job", "TrainingJobName")

    def _stop(self, operation: str, jobs: dict[str, Any], name: str, kind: str, status_attribute: str) -> None:
        """A Stop* call: the job named `name` of `jobs` is Stopping; an unknown name is a ValidationException."""
        self.calls.append(operation)
        job = jobs.get(name)
        if job is None:
            raise ValidationError(f"Could not find {kind} {name}")
        setattr(job, status_attribute, "Stopping")

    def _create_model(self, backend: Any, model_name: str, *args: Any, **kwargs: Any) -> Any:
        """CreateModel (API_CreateModel.html): names are unique, SageMaker refuses a second CreateModel
        (moto would overwrite the first)."""
        if model_name in backend._models:
            arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/{model_name}"
            raise ValidationError(f'Cannot create already existing model "{arn}".')
        return self._moto["create_model"](backend, model_name, *args, **kwargs)

    def _create_endpoint_config(self, backend: Any, endpoint_config_name: str, *args: Any, **kwargs: Any) -> Any:
        """CreateEndpointConfig (API_CreateEndpointConfig.html): names are unique (moto would overwrite);
        the scenario may leave a new config invisible for a moment (`_check_config_visible`)."""
        if endpoint_config_name in backend.endpoint_configs:
            arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/{endpoint_config_name}"
            raise ValidationError(f'Cannot create already existing endpoint configuration "{arn}".')
        config = self._moto["create_endpoint_config"](backend, endpoint_config_name, *args, **kwargs)
        if self.config_not_visible_for:
            self._invisible_configs[endpoint_config_name] = self.config_not_visible_for
        return config

    def _describe_endpoint_config_response(self, response: Any) -> Any:
        """DescribeEndpointConfig on the wire: DataCaptureConfig is an optional member that SageMaker
        returns only for a config created with one (API_DescribeEndpointConfig.html); moto shows {} for
        every other config."""
        from moto.core.responses import ActionResult

        answer = dict(response.sagemaker_backend.describe_endpoint_config(response._get_param("EndpointConfigName")))
        if not answer.get("DataCaptureConfig"):
            answer.pop("DataCaptureConfig", None)
        return ActionResult(answer)

    def _check_config_visible(self, backend: Any, endpoint_config_name: str) -> None:
        """A config just created may be invisible to CreateEndpoint/UpdateEndpoint for a moment: they
        answer as for a missing config (eventual consistency; the answer is DescribeEndpointConfig's
        "Could not find endpoint configuration")."""
        if self._invisible_configs.get(endpoint_config_name, 0) > 0:
            self._invisible_configs[endpoint_config_name] -= 1
            arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/{endpoint_config_name}"
            raise ValidationError(f"Could not find endpoint configuration '{arn}'.")
        backend.describe_endpoint_config(endpoint_config_name)  # a config that does not exist at all

    def _create_endpoint(self, backend: Any, endpoint_name: str, endpoint_config_name: str, tags: Any) -> Any:
        """CreateEndpoint (API_CreateEndpoint.html): names are unique; the endpoint is Creating, with the
        config's capture as a DataCaptureConfigSummary (DATA_CAPTURE_SUMMARY_DOC) and the config it is
        creating with in PendingDeploymentSummary (DESCRIBE_ENDPOINT_DOC)."""
        self.calls.append("CreateEndpoint")
        if endpoint_name in backend.endpoints:
            raise ValidationError(f"Cannot create already existing endpoint {endpoint_name}")
        self._check_config_visible(backend, endpoint_config_name)
        endpoint = self._moto["create_endpoint"](backend, endpoint_name, endpoint_config_name, tags)
        endpoint.endpoint_status = "Creating"
        endpoint.data_capture_config = data_capture_summary(
            backend.endpoint_configs[endpoint_config_name].data_capture_config
        )
        endpoint.pending_deployment_summary = _pending_summary(
            backend, endpoint_config_name, endpoint.production_variants
        )
        return endpoint

    def _describe_endpoint(self, backend: Any, endpoint_name: str) -> dict[str, Any]:
        """DescribeEndpoint (DESCRIBE_ENDPOINT_DOC): an endpoint stays Creating, or Updating, for `polls`
        (`update_polls`) describes of each traffic-shift step, then ends as the scenario says."""
        endpoint = backend.endpoints.get(endpoint_name)
        status = endpoint.endpoint_status if endpoint is not None else None
        step = len(self.rollouts[-1]["steps"]) if status == "Updating" and self.rollouts else 0
        if status in ("Creating", "Updating") and self._tick(
            f"endpoint:{endpoint_name}:{status}:{len(self.calls)}:{step}",
            self.update_polls if status == "Updating" else None,
        ):
            rolling = status == "Updating" and self.update_outcome != "UpdateRollbackFailed"
            # A step whose baking period ended without an alarm advances the rollout: the next step shifts
            # more traffic and the endpoint stays Updating on the old config (DESCRIBE_ENDPOINT_DOC).
            advanced = rolling and self._advance_rollout(endpoint_name)
            if status == "Creating":
                self._end_creation(endpoint)
            elif not advanced:
                self._end_update(backend, endpoint_name, endpoint)
        return self._moto["describe_endpoint"](backend, endpoint_name)

    def _end_creation(self, endpoint: Any) -> None:
        """A created endpoint is InService, or Failed with a FailureReason (DESCRIBE_ENDPOINT_DOC)."""
        endpoint.pending_deployment_summary = None
        endpoint.endpoint_status = self.endpoint_outcome
        if self.endpoint_outcome == "Failed":
            endpoint.failure_reason = (
                "The primary container for production variant AllTraffic did not pass the ping health check."
            )

    def _end_update(self, backend: Any, endpoint_name: str, endpoint: Any) -> None:
        """An update ends: InService on the new config, rolled back to the old one, or neither."""
        if self.update_outcome == "UpdateRollbackFailed":
            # "Both the rolling deployment and auto-rollback failed. Your endpoint is in service with
            # a mix of the old and new endpoint configurations" (DESCRIBE_ENDPOINT_DOC): both stay in
            # use, the new one still named by PendingDeploymentSummary.
            self._pending_update.pop(endpoint_name)
            endpoint.endpoint_status = "UpdateRollbackFailed"
            endpoint.failure_reason = "The rollback of the deployment failed."
            return
        endpoint.pending_deployment_summary = None
        rollout = self.rollouts[-1] if self.rollouts else None
        update = self._pending_update.pop(endpoint_name)
        endpoint.endpoint_status = "InService"
        if rollout is None or rollout["outcome"] == "Completed":
            endpoint.endpoint_config_name = update["config"]
            endpoint.production_variants = update["variants"]
            # The capture follows the config the endpoint now runs (a rollback keeps the old).
            endpoint.data_capture_config = data_capture_summary(
                backend.endpoint_configs[update["config"]].data_capture_config
            )
        else:
            # An alarm tripped during a baking period: "a complete rollback to the old
            # endpoint" (ROLLBACK_DOC): InService again, on the old config and the old fleet.
            endpoint.failure_reason = (
                f"Deployment rolled back: alarm {ENDPOINT}-5xx-errors went into ALARM during the "
                f"baking period of step {len(rollout['steps'])} ({rollout['steps'][-1]} of "
                f"{rollout['fleet']} new instances taking traffic)"
            )

    def _update_endpoint(
        self,
        backend: Any,
        endpoint_name: str,
        endpoint_config_name: str,
        retain: bool,
        exclude: set[str],
        deployment: dict[str, Any] | None = None,
    ) -> str:
        """UpdateEndpoint (UPDATE_ENDPOINT_DOC), which moto lacks: only an InService endpoint updates; an
        instance-type change of a variant registered with autoscaling is refused (SCALING_UPDATE_DOC); the
        endpoint is Updating, still on the old config, with the new one and the variants it deploys
        (`_variants_after_update`) in PendingDeploymentSummary, its traffic shifts planned
        (`_plan_rollout`). The scenario may make every update fail with ResourceLimitExceeded."""
        self.calls.append("UpdateEndpoint")
        endpoint = backend.endpoints.get(endpoint_name)
        if endpoint is None:
            raise ValidationError(f"Could not find endpoint {endpoint_name}")
        if endpoint.endpoint_status != "InService":
            raise ValidationError(f"Cannot update in-progress endpoint {endpoint_name}")
        self._check_config_visible(backend, endpoint_config_name)
        _refuse_scaled_instance_type_change(backend, endpoint_name, endpoint, endpoint_config_name)
        if self.update_endpoint_error == "ResourceLimitExceeded":
            raise ResourceLimitExceeded(
                "The account-level service limit 'ml.c5.xlarge for endpoint usage' is 0 Instances."
            )
        variants = _variants_after_update(backend, endpoint, endpoint_config_name, retain, exclude)
        routing = (deployment or {}).get("BlueGreenUpdatePolicy", {}).get("TrafficRoutingConfiguration")
        self._plan_rollout(endpoint_name, routing, variants[0]["DesiredInstanceCount"])
        endpoint.endpoint_status = "Updating"
        # While updating, EndpointConfigName still names the old config (DESCRIBE_ENDPOINT_DOC).
        endpoint.pending_deployment_summary = _pending_summary(backend, endpoint_config_name, variants)
        self._pending_update[endpoint_name] = {"config": endpoint_config_name, "variants": variants}
        return endpoint.arn

    def _update_endpoint_response(self, response: Any) -> Any:
        """UpdateEndpoint on the wire (moto does not route it): its request members as `_update_endpoint`
        takes them, and the EndpointArn it answers (UPDATE_ENDPOINT_DOC)."""
        from moto.core.responses import ActionResult

        arn = response.sagemaker_backend.update_endpoint(
            response._get_param("EndpointName"),
            response._get_param("EndpointConfigName"),
            bool(response._get_param("RetainAllVariantProperties", False)),
            {p["VariantPropertyType"] for p in response._get_param("ExcludeRetainedVariantProperties") or []},
            response._get_param("DeploymentConfig"),
        )
        return ActionResult({"EndpointArn": arn})

    def _invoke_endpoint_response(self, response: Any) -> Any:
        """InvokeEndpoint on the wire (API_runtime_InvokeEndpoint.html): the endpoint's name is in the path,
        /endpoints/{EndpointName}/invocations, the body the image's raw bytes; `_invoke_answer` answers."""
        answer = self._invoke_answer(
            sm_models.sagemaker_backends[ACCOUNT][REGION], response.path.split("/")[2], response.body)
        return 200, {"Content-Type": contract.JSON_CONTENT_TYPE,
                     "x-Amzn-Invoked-Production-Variant": deployment_requests.VARIANT_NAME}, json.dumps(answer)


# Where moto looks for each simulated operation: (moto's class, its method, the SageMakerSim handler).
# moto's backend (SageMakerModelBackend) holds the service's behaviour; its wire layer (SageMakerResponse,
# SageMakerRuntimeResponse) turns a request into a backend call, and lacks the routes of some operations.
SIMULATED_OPERATIONS: tuple[tuple[type, str, str], ...] = (
    (sm_models.SageMakerModelBackend, "create_hyper_parameter_tuning_job", "_create_tuning_job"),
    (sm_models.SageMakerModelBackend, "describe_hyper_parameter_tuning_job", "_describe_tuning_job"),
    (sm_models.SageMakerModelBackend, "stop_hyper_parameter_tuning_job", "_stop_tuning_job"),
    (SageMakerResponse, "stop_hyper_parameter_tuning_job", "_stop_tuning_job_response"),
    (SageMakerResponse, "list_training_jobs_for_hyper_parameter_tuning_job", "_list_trials_response"),
    (sm_models.SageMakerModelBackend, "create_training_job", "_create_training_job"),
    (sm_models.SageMakerModelBackend, "describe_training_job", "_describe_training_job"),
    (sm_models.SageMakerModelBackend, "stop_training_job", "_stop_training_job"),
    (SageMakerResponse, "stop_training_job", "_stop_training_job_response"),
    (sm_models.SageMakerModelBackend, "create_model", "_create_model"),
    (sm_models.SageMakerModelBackend, "create_endpoint_config", "_create_endpoint_config"),
    (SageMakerResponse, "describe_endpoint_config", "_describe_endpoint_config_response"),
    (sm_models.SageMakerModelBackend, "create_endpoint", "_create_endpoint"),
    (sm_models.SageMakerModelBackend, "describe_endpoint", "_describe_endpoint"),
    (sm_models.SageMakerModelBackend, "update_endpoint", "_update_endpoint"),
    (SageMakerResponse, "update_endpoint", "_update_endpoint_response"),
    (SageMakerRuntimeResponse, "invoke_endpoint", "_invoke_endpoint_response"),
)


def _as_method(handler: Any) -> Any:
    """`handler` (a bound SageMakerSim method) as a method of moto's class: moto's `self` comes first."""

    def method(owner: Any, *args: Any, **kwargs: Any) -> Any:
        return handler(owner, *args, **kwargs)

    return method


def _empty_answer(response: Any, backend_method: str, name_member: str) -> Any:
    """An operation with an empty answer on the wire: the backend's method, given the request's `name_member`."""
    from moto.core.responses import EmptyResult

    getattr(response.sagemaker_backend, backend_method)(response._get_param(name_member))
    return EmptyResult()


def _pending_summary(backend: Any, config_name: str, variants: list[dict[str, Any]]) -> dict[str, Any]:
    """PendingDeploymentSummary: "only returned when the endpoint is creating or updating with a
    new endpoint configuration" (DESCRIBE_ENDPOINT_DOC)."""
    config = {v["VariantName"]: v for v in backend.endpoint_configs[config_name].production_variants}

    def summary(v: dict[str, Any]) -> dict[str, Any]:
        new = config[v["VariantName"]]
        if "ServerlessConfig" in new:
            # A serverless variant has no instances: DesiredServerlessConfig instead
            # (API_PendingProductionVariantSummary).
            return {"VariantName": v["VariantName"], "DesiredServerlessConfig": new["ServerlessConfig"],
                    "DesiredWeight": v.get("DesiredWeight", 1.0)}
        return {
            "VariantName": v["VariantName"],
            "InstanceType": new["InstanceType"],
            "DesiredInstanceCount": v.get("DesiredInstanceCount"),
            # InitialVariantWeight defaults to 1.0 (API_ProductionVariant)
            "DesiredWeight": v.get("DesiredWeight", 1.0),
        }

    return {
        "EndpointConfigName": config_name,
        "StartTime": sm_models.utcnow(),
        "ProductionVariants": [summary(v) for v in variants],
    }


def _variants_after_update(
    backend: Any, endpoint: Any, config_name: str, retain: bool, exclude: set[str]
) -> list[dict[str, Any]]:
    """The variants an update deploys. Without RetainAllVariantProperties (default false) every
    variant gets the new config's InitialInstanceCount and InitialVariantWeight; with it, a variant
    of the same name keeps the endpoint's latest DesiredInstanceCount and DesiredWeight, "regardless
    of the value of the InitialInstanceCount field in the new EndpointConfig", except the
    VariantPropertyTypes in ExcludeRetainedVariantProperties, which come from the new config
    (UPDATE_ENDPOINT_DOC, VARIANT_PROPERTY_DOC, SCALING_UPDATE_DOC)."""
    live = {v["VariantName"]: v for v in endpoint.production_variants}
    variants = []
    for new in backend.endpoint_configs[config_name].production_variants:
        count, weight = new.get("InitialInstanceCount"), new.get("InitialVariantWeight", 1.0)
        old = live.get(new["VariantName"])
        if retain and old is not None:
            if "DesiredInstanceCount" not in exclude:
                count = old.get("DesiredInstanceCount", count)
            if "DesiredWeight" not in exclude:
                weight = old.get("DesiredWeight", weight)
        variants.append(
            {
                "VariantName": new["VariantName"],
                "CurrentInstanceCount": count,
                "DesiredInstanceCount": count,
                "CurrentWeight": weight,
                "DesiredWeight": weight,
            }
        )
    return variants


def _refuse_scaled_instance_type_change(backend: Any, endpoint_name: str, endpoint: Any, config_name: str) -> None:
    """An update that changes a variant's instance type while the variant is registered with autoscaling is a
    ValidationException: "If the update would change the instance type for any model that is a target for
    auto scaling, the update fails" (SCALING_UPDATE_DOC)."""
    live_config = backend.endpoint_configs[endpoint.endpoint_config_name]
    live = {v["VariantName"]: v.get("InstanceType") for v in live_config.production_variants}
    targets = applicationautoscaling_backends[backend.account_id][backend.region_name]
    for variant in backend.endpoint_configs[config_name].production_variants:
        name = variant["VariantName"]
        registered = targets.describe_scalable_targets(
            "sagemaker", [f"endpoint/{endpoint_name}/variant/{name}"], VARIANT_DIMENSION
        )
        if registered and live.get(name, variant.get("InstanceType")) != variant.get("InstanceType"):
            raise ValidationError(
                f"The variant {name} of endpoint {endpoint_name} is registered with Application Auto "
                "Scaling: deregister it before changing its instance type."
            )


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


def price_list_answer(api_params: dict[str, Any]) -> dict[str, Any]:
    """The AWS Price List API's GetProducts answer, which moto lacks: one PriceList JSON document per
    instance of the asked component in the asked region (the documented shape, parsed by
    mlpipeline.costs.parse_price_list_product), priced as the repo's dated table prices them."""
    filters = {f["Field"]: f["Value"] for f in api_params.get("Filters", [])}
    table = json.loads((LAYER / "mlpipeline" / "prices.json").read_text())["regions"].get(filters.get("regionCode"), {})
    documents = []
    for instance, usd in table.get("sagemaker_per_hour", {}).get(filters.get("component"), {}).items():
        documents.append(json.dumps({
            "product": {"productFamily": "ML Instance", "attributes": {
                "regionCode": filters["regionCode"], "component": filters["component"], "instanceName": instance}},
            "serviceCode": "AmazonSageMaker",
            "terms": {"OnDemand": {"SKU.TERM": {"priceDimensions": {"SKU.TERM.RATE": {
                "unit": "Hrs", "pricePerUnit": {"USD": f"{usd:.10f}"}}}}}}}))
    return {"FormatVersion": "aws_v1", "PriceList": documents}


def _recording(make_api_call: Any) -> Any:
    def call(client: Any, operation_name: str, api_params: Any) -> Any:
        function = getattr(_running, "function", None)
        if function is None:
            return make_api_call(client, operation_name, api_params)
        record = RecordedCall(
            function, client.meta.service_model.signing_name, operation_name, dict(api_params), {}, None
        )
        try:
            if client.meta.service_model.service_name == "pricing" and operation_name == "GetProducts":
                response = price_list_answer(api_params)  # moto has no Price List API
            else:
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


def deliver_event(folder: str, event: dict[str, Any]) -> dict[str, Any]:
    """An event an EventBridge rule hands to functions/<folder> (an asynchronous invoke: the service, not the
    state machine, calls it), run as the Lambda runtime would, its AWS calls recorded for the IAM check."""
    _running.function = folder
    try:
        return load_handler(folder).handler(copy.deepcopy(event), None)
    finally:
        _running.function = None


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
        self.state_machine_arn = self.sfn.create_state_machine(name=STATE_MACHINE, definition=definition, roleArn=role)[
            "stateMachineArn"
        ]

    def start(self, key: str, name: str, etag: str = "0123456789abcdef0123456789abcdef",
              event: dict[str, Any] | None = None) -> str:
        """Start an execution for an upload of `key` (or with `event` as input); its ARN. The event carries the
        version S3 gave the latest put of `key`, as S3's own event would."""
        if event is None:
            version_id = self.s3.head_object(Bucket=BUCKET, Key=key)["VersionId"]
            event = s3_event(key, etag, version_id=version_id)
        return self.sfn.start_execution(stateMachineArn=self.state_machine_arn, name=name,
                                        input=json.dumps(event))["executionArn"]

    def ended(self, execution_arn: str, timeout: float = 60) -> dict[str, Any]:
        """The execution once it is no longer RUNNING."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            execution = self.sfn.describe_execution(executionArn=execution_arn)
            if execution["status"] != "RUNNING":
                return execution
            time.sleep(0.05)
        raise AssertionError(f"execution {execution_arn} still running after {timeout} s")

    def waiting_for_approval(self, execution_arn: str, timeout: float = 60) -> str:
        """Until the run waits for a person (ApprovalMode=manual): the model package's ARN. Waiting means the
        WaitForApproval task was submitted, i.e. its Lambda call (token stored, owner notified) returned:
        Step Functions records TaskSubmitted for a .waitForTaskToken task once the call is accepted
        (https://docs.aws.amazon.com/step-functions/latest/dg/connect-to-resource.html#connect-wait-token)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
            if any(e["type"] == "TaskSubmitted" for e in events):
                # The package the wait is for, from the task's own parameters (its token may already be gone:
                # a short ApprovalTimeoutHours expires while a slow test looks).
                scheduled = [json.loads(e["taskScheduledEventDetails"]["parameters"]) for e in events
                             if e["type"] == "TaskScheduled"]
                [wait] = [p for p in scheduled if (p.get("Payload") or {}).get("action") == "request"]
                return str(wait["Payload"]["gate"]["model_package_arn"])
            status = self.sfn.describe_execution(executionArn=execution_arn)["status"]
            assert status == "RUNNING", f"the run ended ({status}) without waiting for approval"
            time.sleep(0.05)
        raise AssertionError("the run never waited for approval")

    def run(
        self,
        key: str,
        name: str,
        etag: str = "0123456789abcdef0123456789abcdef",
        timeout: float = 60,
        event: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Start an execution (see `start`) and wait for it to end."""
        return self.ended(self.start(key, name, etag, event), timeout)

    def failure(self, execution: dict[str, Any]) -> tuple[str, str]:
        """(error, cause) of a FAILED execution, from its ExecutionFailed history event."""
        assert execution["status"] == "FAILED", execution
        history = self.sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)["events"]
        failed = [e["executionFailedEventDetails"] for e in history if "executionFailedEventDetails" in e]
        assert failed, "no ExecutionFailed event"
        return failed[-1]["error"], failed[-1]["cause"]

    def notifications(self) -> list[str]:
        messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        return [m["Body"] for m in messages]

    def states_entered(self, execution_arn: str) -> list[str]:
        events = self.sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
        return [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]


def execution_output(execution: dict[str, Any]) -> dict[str, Any]:
    """An execution's output as JSON ({} while it has none)."""
    return json.loads(execution.get("output") or "{}")
