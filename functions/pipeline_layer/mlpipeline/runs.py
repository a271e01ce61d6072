"""The run: everything later states need, decided once by ValidateFunction from the manifest and settings."""

from __future__ import annotations

from imgclf import manifest as manifest_mod
from mlpipeline import approval, images
from mlpipeline.run_state import RunState
from mlpipeline.settings import Settings


def plan_run(
    *,
    bucket: str,
    manifest_key: str,
    manifest: manifest_mod.Manifest,
    settings: Settings,
    prefix: str,
    region: str,
    etag: str | None,
    source_key: str,
) -> RunState:
    """The run of an execution (`$.run`, as RunState.to_dict): deterministic names, S3 locations, resolved
    images, settings."""
    token = manifest_mod.version_token(manifest, etag)
    run_id = manifest_mod.run_id(prefix, manifest.dataset, token)
    training_image = settings.training_image_uri or images.pytorch_image_uri(
        "training", settings.framework_version, settings.py_version, settings.training_instance_type, region
    )
    # The tuning trials may run on another instance family (cpu vs gpu) than the final job.
    tuning_image = settings.training_image_uri or images.pytorch_image_uri(
        "training", settings.framework_version, settings.py_version, settings.tuning_instance_type, region
    )
    # Trials on cached features train only the head: the image of their own (CPU) instance type.
    cached_tuning_image = settings.training_image_uri or images.pytorch_image_uri(
        "training", settings.framework_version, settings.py_version,
        settings.cached_features_tuning_instance_type, region,
    )
    inference_image = settings.inference_image_uri or images.pytorch_image_uri(
        "inference", settings.framework_version, settings.py_version, settings.endpoint_instance_type, region
    )
    base = f"s3://{bucket}/"
    return RunState(
        run_id=run_id,
        dataset=manifest.dataset,
        version_token=token,
        region=region,
        bucket=bucket,
        manifest_key=manifest_key,
        dataset_s3_uri=f"{base}{manifest_mod.dataset_prefix(manifest.dataset)}",
        splits=dict(manifest.splits),
        source_s3_uri=f"{base}{source_key}",
        output_s3_uri=f"{base}models/",
        checkpoint_s3_uri=f"{base}checkpoints/",
        debugger_s3_uri=f"{base}debugger/",
        profiler_s3_uri=f"{base}profiler/",
        tuning_job_name=run_id,
        training_job_name=manifest_mod.training_job_name(run_id),
        model_name=run_id,
        endpoint_config_name=run_id,
        training_image_uri=training_image,
        tuning_image_uri=tuning_image,
        cached_tuning_image_uri=cached_tuning_image,
        inference_image_uri=inference_image,
        settings=settings,
        # WaitForApproval's TimeoutSecondsPath (ASL wants whole seconds; the setting is in hours).
        approval_timeout_seconds=approval.timeout_seconds(settings.approval_timeout_hours),
    )
