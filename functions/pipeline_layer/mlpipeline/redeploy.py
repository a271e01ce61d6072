"""Roll back or redeploy by hand: an earlier approved model package version of this stack's group goes
live through the same Deploy / WaitForEndpoint / SmokeTest / ConfigureAutoscaling states as a trained one
(the RedeployFunction is a thin shell around these).

Started with the execution input
`{"redeploy": {"model_package_arn": "arn:aws:sagemaker:<region>:<account>:model-package/<group>/<version>"}}`;
the ASL routes it past Validate, the feature extraction, tuning, training and the quality gate.
What a package carries (registered by the quality gate, mlpipeline.deployment_requests.model_package_request):
- InferenceSpecification.Containers[0]: the inference image and the model.tar.gz (ModelDataUrl) the run
  that trained it deployed; the smoke sample SmokeTest checks is inside that model.tar.gz;
- ModelApprovalStatus: only Approved is deployed, the model registry's own rule ("For versioned models, the
  value of this parameter must be set to Approved to deploy the model",
  https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateModelPackage.html);
- CustomerMetadataProperties: the run id, the dataset and the test accuracy the gate read, which Deploy
  tags on the endpoint config (the next run's gate compares with it, imgclf.gate);
- SupportedRealtimeInferenceInstanceTypes: the instance type the image was chosen for (cpu or gpu image).
The drift alarm's baseline is metadata.json["prediction_baseline"] inside model.tar.gz (train.py writes it
there and prints it as the training metrics the gate reads; the training job itself may have been deleted
since, DeleteTrainingJob "all of the metadata for the training job is lost").

The run gets its own names, from the package ARN and the execution (so a retry of the task is the same run,
and neither the original run's model and endpoint config nor an earlier redeploy's collide with it); its
settings are the stack's, as ApplyDefaults passes them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import IO, Any

from imgclf import manifest as manifest_mod
from imgclf import tar_stream
from mlpipeline import approval, images
from mlpipeline.errors import RedeployRefused
from mlpipeline.run_state import RunState
from mlpipeline.settings import Settings

REQUEST_KEYS = frozenset({"model_package_arn"})
APPROVED = "Approved"
# The model.tar.gz member train.py writes the model's metadata to (imgclf.artifacts), at the archive's root.
METADATA_MEMBER = "metadata.json"
# arn:${Partition}:sagemaker:${Region}:${Account}:model-package/${ModelPackageName}, where a versioned
# package's name is <group>/<version> (Service Authorization Reference, list_amazonsagemaker.html; a group
# name is [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}, API_CreateModelPackageGroup.html; ARNs carry it in lower case).
_PACKAGE_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):sagemaker:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"model-package/(?P<group>[a-zA-Z0-9](?:-*[a-zA-Z0-9]){0,62})/(?P<version>[1-9]\d*)$"
)
_GROUP_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):sagemaker:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"model-package-group/(?P<group>[a-zA-Z0-9](?:-*[a-zA-Z0-9]){0,62})$"
)


def package_arn_of(request: Any, group_arn: str) -> str:
    """The request's model package ARN, once it names a version of this stack's group (`group_arn`, the
    ModelPackageGroup's ARN); raises RedeployRefused otherwise (nothing was called yet)."""
    if not isinstance(request, Mapping) or set(request) != REQUEST_KEYS:
        raise RedeployRefused(
            f"the redeploy input must be {{\"model_package_arn\": \"arn:...:model-package/<group>/<version>\"}}, "
            f"got {json.dumps(request, default=str)[:300]}")
    arn = request["model_package_arn"]
    match = _PACKAGE_ARN.match(arn) if isinstance(arn, str) else None
    if match is None:
        raise RedeployRefused(
            f"{arn!r} is not a versioned model package ARN "
            "(arn:<partition>:sagemaker:<region>:<account>:model-package/<group>/<version>)")
    group = _GROUP_ARN.match(group_arn)
    assert group is not None, f"not a model package group ARN: {group_arn!r}"
    ours = [group[k].lower() for k in ("partition", "region", "account", "group")]
    if [match[k].lower() for k in ("partition", "region", "account", "group")] != ours:
        raise RedeployRefused(
            f"{arn} is not a version of this stack's model package group {group_arn}: only its approved "
            "versions can be redeployed")
    return arn


def _test_accuracy(package: Mapping[str, Any]) -> float:
    recorded = (package.get("CustomerMetadataProperties") or {}).get("test_accuracy")
    try:
        value = float(recorded)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise RedeployRefused(
            f"model package {package['ModelPackageArn']} records no test accuracy ({recorded!r}): Deploy tags the "
            "endpoint config with it for the next run's quality gate")
    return value


def _container(package: Mapping[str, Any], bucket: str) -> Mapping[str, Any]:
    containers = (package.get("InferenceSpecification") or {}).get("Containers") or []
    if len(containers) != 1 or not containers[0].get("Image") or not containers[0].get("ModelDataUrl"):
        raise RedeployRefused(
            f"model package {package['ModelPackageArn']} has no single inference container with an image "
            "and a ModelDataUrl: it was not registered by this pipeline")
    url = str(containers[0]["ModelDataUrl"])
    if not url.startswith(f"s3://{bucket}/models/"):
        raise RedeployRefused(
            f"model package {package['ModelPackageArn']}'s model {url} is not under s3://{bucket}/models/, "
            "where this stack's models are")
    return containers[0]


def check_package(package: Mapping[str, Any], group_name: str, settings: Settings, bucket: str) -> Mapping[str, Any]:
    """The package's inference container, once the package may be deployed by this stack; raises
    RedeployRefused (the reason, and what to do) otherwise."""
    arn = package["ModelPackageArn"]
    if str(package.get("ModelPackageGroupName", "")).lower() != group_name.lower():
        raise RedeployRefused(f"model package {arn} is in group {package.get('ModelPackageGroupName')!r}, "
                              f"not this stack's {group_name!r}")
    status = package.get("ModelApprovalStatus")
    if status != APPROVED:
        raise RedeployRefused(
            f"model package {arn} is {status}, not {APPROVED}: only an approved version is deployed "
            f"(approve it first: aws sagemaker update-model-package --model-package-arn {arn} "
            f"--model-approval-status {APPROVED})")
    container = _container(package, bucket)
    registered = (package.get("InferenceSpecification") or {}).get("SupportedRealtimeInferenceInstanceTypes") or []
    wanted = images.processor_for(settings.endpoint_instance_type)
    if registered and images.processor_for(registered[0]) != wanted:
        raise RedeployRefused(
            f"model package {arn}'s inference image {container['Image']} was chosen for {registered[0]} "
            f"({images.processor_for(registered[0])}); the stack now deploys on {settings.endpoint_instance_type} "
            f"({wanted}): set EndpointInstanceType back to a {images.processor_for(registered[0])} type to "
            "redeploy it")
    return container


def redeploy_run_id(prefix: str, package_arn: str, execution_arn: str) -> str:
    """`<prefix>-redeploy-v<version>-<hash>`: deterministic per package and execution (a retried task is the
    same run), distinct from the run that trained the package and from any other redeploy of it."""
    version = package_arn.rsplit("/", 1)[1]
    return manifest_mod.run_id(prefix, f"redeploy-v{version}", f"{package_arn}\0{execution_arn}")


def baseline_from_model_tar(fileobj: IO[bytes]) -> dict[str, Any] | None:
    """metadata.json["prediction_baseline"] of a model.tar.gz read as a stream (an S3 body; nothing else
    is extracted), or None when the model has none."""
    data = tar_stream.read_member(fileobj, METADATA_MEMBER)
    baseline = json.loads(data).get("prediction_baseline") if data is not None else None
    return baseline if isinstance(baseline, dict) else None


def plan(
    *,
    package: Mapping[str, Any],
    container: Mapping[str, Any],
    settings: Settings,
    prefix: str,
    region: str,
    bucket: str,
    execution_arn: str,
    baseline: dict[str, Any] | None,
) -> dict[str, Any]:
    """{"run", "gate"}: the state Deploy, SmokeTest, ConfigureAutoscaling, Report and Notify
    read, in the shape Validate ($.run) and QualityGate ($.gate) give a trained model. The run has no
    tuning or training job of its own."""
    arn = str(package["ModelPackageArn"])
    metadata = package.get("CustomerMetadataProperties") or {}
    run_id = redeploy_run_id(prefix, arn, execution_arn)
    accuracy = _test_accuracy(package)
    redeploy = {
        "model_package_arn": arn,
        "model_package_version": int(package.get("ModelPackageVersion") or arn.rsplit("/", 1)[1]),
        "trained_by_run": metadata.get("run_id"),
        "model_data_url": container["ModelDataUrl"],
    }
    base = f"s3://{bucket}/"
    run = RunState(
        run_id=run_id,
        dataset=metadata.get("dataset") or "unknown",
        version_token=f"redeploy:{arn}",
        region=region,
        bucket=bucket,
        # no dataset, training source or jobs of its own (RunState's docstring)
        manifest_key="",
        dataset_s3_uri="",
        splits={},
        source_s3_uri="",
        output_s3_uri=f"{base}models/",
        checkpoint_s3_uri=f"{base}checkpoints/",
        debugger_s3_uri=f"{base}debugger/",
        profiler_s3_uri=f"{base}profiler/",
        tuning_job_name="",
        training_job_name="",
        model_name=run_id,
        endpoint_config_name=run_id,
        training_image_uri="",
        tuning_image_uri="",
        cached_tuning_image_uri="",
        inference_image_uri=container["Image"],
        settings=settings,
        approval_timeout_seconds=approval.timeout_seconds(settings.approval_timeout_hours),
        redeploy=redeploy,
    )
    gate = {
        "passed": True,
        "reason": f"redeploy of approved model package {arn} (test accuracy {accuracy:.4f})",
        "test_accuracy": accuracy,
        "live_accuracy": None,
        "threshold": settings.quality_threshold,
        "model_package_arn": arn,
        "model_data_url": container["ModelDataUrl"],
        "prediction_baseline": baseline,
    }
    return {"run": run.to_dict(), "gate": gate}
