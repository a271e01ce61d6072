"""Pure builders of the registry, deployment and autoscaling requests the pipeline makes
(CreateModelPackage, CreateModel, CreateEndpointConfig, CreateEndpoint, UpdateEndpoint and the
Application Auto Scaling target and policy).

Each builder returns the keyword arguments of one boto3 call, e.g.
`sagemaker.create_model(**model_request(...))`; the tests validate every one of them with botocore's own
parameter validator against the service model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imgclf import contract, gate
from mlpipeline import approval, rollout, serverless
from mlpipeline.resource_tags import run_tags, tag_value
from mlpipeline.run_state import RunState
from mlpipeline.settings import Settings

VARIANT_NAME = "AllTraffic"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
# Blue/green: shift all traffic at once, then keep the old fleet for a baking period during which the
# endpoint alarms may trigger an automatic rollback.
TERMINATION_WAIT_SECONDS = 120


def model_package_request(
    run: RunState, group_name: str, training_job: Mapping[str, Any], decision: gate.GateDecision
) -> dict[str, Any]:
    """CreateModelPackage: a version in the group; Rejected when the model failed the gate, else Approved
    or, with ApprovalMode=manual, PendingManualApproval until a person decides (mlpipeline.approval)."""
    s = run.settings
    metadata = {
        "run_id": run.run_id,
        "dataset": tag_value(run.dataset),
        "test_accuracy": "none" if decision.test_accuracy is None else f"{decision.test_accuracy:.6f}",
        "live_accuracy": "none" if decision.live_accuracy is None else f"{decision.live_accuracy:.6f}",
        "threshold": f"{decision.threshold:.6f}",
        "gate": "passed" if decision.passed else "rejected",  # the reason is in the description
    }
    return {
        "ModelPackageGroupName": group_name,
        "ModelPackageDescription": f"{run.dataset} ({run.version_token}): {decision.reason}"[:1024],
        "InferenceSpecification": {
            "Containers": [container_definition(run, training_job["ModelArtifacts"]["S3ModelArtifacts"])],
            "SupportedContentTypes": list(contract.IMAGE_CONTENT_TYPES),
            "SupportedResponseMIMETypes": [contract.JSON_CONTENT_TYPE],
            "SupportedRealtimeInferenceInstanceTypes": [s.endpoint_instance_type],
        },
        "ModelApprovalStatus": approval.registered_status(decision.passed, s.approval_mode),
        "MetadataProperties": {"GeneratedBy": training_job["TrainingJobArn"]},
        "CustomerMetadataProperties": metadata,
    }



def container_definition(run: RunState, model_data_url: str) -> dict[str, Any]:
    """The PyTorch inference container with model.tar.gz (model.pt, metadata.json, code/inference.py)."""
    return {
        "Image": run.inference_image_uri,
        "ModelDataUrl": model_data_url,
        "Environment": {
            "SAGEMAKER_PROGRAM": "inference.py",
            "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
            "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
            "SAGEMAKER_REGION": run.region,
        },
    }


def model_request(run: RunState, role_arn: str, model_data_url: str) -> dict[str, Any]:
    """The model of the model.tar.gz the quality gate registered (or a redeployed package names)."""
    return {
        "ModelName": run.model_name,
        "ExecutionRoleArn": role_arn,
        "PrimaryContainer": container_definition(run, model_data_url),
        "Tags": run_tags(run),
    }


# Where the endpoint's sampled requests and answers go. SageMaker appends
# <endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl ("The format of the Amazon S3 path is:
# s3:///{endpoint-name}/{variant-name}/yyyy/mm/dd/hh/filename.jsonl",
# https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-data-capture-endpoint.html).
DATA_CAPTURE_PREFIX = "data-capture/"
# CaptureContentTypeHeader names the content types SageMaker records as JSON or CSV text; every other type
# is base64-encoded ("If no headers are specified SageMaker AI will by default base64 encode when capturing
# the data", API_DataCaptureConfig.html). So the JSON answer is listed, and the image types
# (contract.IMAGE_CONTENT_TYPES) are deliberately not: a JPEG is not JSON text, it must come back BASE64.
DATA_CAPTURE_JSON_CONTENT_TYPES = [contract.JSON_CONTENT_TYPE]


def data_capture_s3_uri(run: RunState) -> str:
    return f"s3://{run.bucket}/{DATA_CAPTURE_PREFIX}"


def data_capture_config(run: RunState) -> dict[str, Any] | None:
    """CreateEndpointConfig's DataCaptureConfig for the run's sampling percentage, None when it is 0 (off).

    Requests (Input) and answers (Output) both, so a captured image comes with the label the model gave it
    (the relabeling starts from it: imgclf_cli.capture). SageMaker writes the files as the model's execution
    role (s3:PutObject under DATA_CAPTURE_PREFIX in the template); no KmsKeyId: the bucket's default
    encryption (aws/s3) applies. Real-time instance endpoints only: AWS lists data capture among the
    features Serverless Inference does not support (sagemaker/latest/dg/serverless-endpoints.html)."""
    percentage = run.settings.data_capture_percentage
    if percentage == 0:
        return None
    return {
        "EnableCapture": True,
        "InitialSamplingPercentage": percentage,
        "DestinationS3Uri": data_capture_s3_uri(run),
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"JsonContentTypes": list(DATA_CAPTURE_JSON_CONTENT_TYPES)},
    }


def endpoint_config_request(run: RunState, test_accuracy: float) -> dict[str, Any]:
    """The config carries the model's accuracy as a tag: the next run's gate compares with it."""
    s = run.settings
    capture = data_capture_config(run)
    variant = {
        "VariantName": VARIANT_NAME,
        "ModelName": run.model_name,
        "InitialInstanceCount": s.endpoint_instance_count,
        "InstanceType": s.endpoint_instance_type,
        "InitialVariantWeight": 1.0,
    }
    if serverless.is_serverless(s):  # EndpointMode=serverless: ServerlessConfig, no instances
        variant = serverless.production_variant(VARIANT_NAME, run.model_name, s)
    return {
        **({"DataCaptureConfig": capture} if capture else {}),
        "EndpointConfigName": run.endpoint_config_name,
        "ProductionVariants": [variant],
        "Tags": [*run_tags(run), gate.accuracy_tag(test_accuracy)],
    }


def create_endpoint_request(endpoint_name: str, run: RunState) -> dict[str, Any]:
    return {
        "EndpointName": endpoint_name,
        "EndpointConfigName": run.endpoint_config_name,
        "Tags": run_tags(run),
    }


def update_endpoint_request(
    endpoint_name: str,
    run: RunState,
    alarm_names: list[str],
    exclude_retained: list[str] | tuple[str, ...] = (),
    fleet: int | None = None,
) -> dict[str, Any]:
    """Zero-downtime blue/green update: the new fleet takes the traffic in the settings' rollout steps
    (mlpipeline.rollout; `fleet` is the variant's instance count the update deploys, default the new
    config's), each step bakes under the alarms, and either endpoint alarm firing rolls back to the old
    config automatically.

    RetainAllVariantProperties keeps the live variant's instance count (which autoscaling may have scaled
    out) and weight; without it UpdateEndpoint resets them to the new config's InitialInstanceCount /
    InitialVariantWeight ("The default is false"). `exclude_retained` (VariantPropertyType values) takes
    those from the new config instead. The instance type is not a retained property (VariantPropertyType
    has DesiredInstanceCount, DesiredWeight, DataCaptureConfig), so a new type always takes effect.
    https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_UpdateEndpoint.html,
    https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_VariantProperty.html,
    https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-scaling-update.html
    """
    s = run.settings
    fleet = s.endpoint_instance_count if fleet is None else fleet
    routing = rollout.traffic_routing(s, fleet)
    request: dict[str, Any] = {
        "EndpointName": endpoint_name,
        "EndpointConfigName": run.endpoint_config_name,
        "RetainAllVariantProperties": True,
        "DeploymentConfig": {
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": routing,
                "TerminationWaitInSeconds": TERMINATION_WAIT_SECONDS,
                "MaximumExecutionTimeoutInSeconds": rollout.execution_timeout_seconds(
                    s.rollout_strategy,
                    s.rollout_step_type,
                    s.rollout_step_size,
                    s.rollout_wait_seconds,
                    fleet,
                ),
            },
            "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": name} for name in alarm_names]},
        },
    }
    if exclude_retained:
        request["ExcludeRetainedVariantProperties"] = [
            {"VariantPropertyType": prop} for prop in exclude_retained
        ]
    return request



def scalable_target_id(endpoint_name: str) -> dict[str, str]:
    return {
        "ServiceNamespace": "sagemaker",
        "ResourceId": f"endpoint/{endpoint_name}/variant/{VARIANT_NAME}",
        "ScalableDimension": SCALABLE_DIMENSION,
    }


def register_scalable_target_request(endpoint_name: str, settings: Settings) -> dict[str, Any]:
    return {
        **scalable_target_id(endpoint_name),
        "MinCapacity": settings.autoscaling_min_capacity,
        "MaxCapacity": settings.autoscaling_max_capacity,
    }


def scaling_policy_request(endpoint_name: str, settings: Settings) -> dict[str, Any]:
    """Target tracking on SageMakerVariantInvocationsPerInstance (invocations per instance per minute)."""
    return {
        "PolicyName": f"{endpoint_name}-invocations-per-instance",
        **scalable_target_id(endpoint_name),
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": settings.autoscaling_target_invocations,
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
            },
            "ScaleInCooldown": settings.scale_in_cooldown_seconds,
            "ScaleOutCooldown": settings.scale_out_cooldown_seconds,
        },
    }
