"""Validate: the first task of a run.

Input: {"event": <S3 "Object Created" EventBridge event for datasets/<name>/manifest.json>,
        "defaults": <the stack's settings, from the state machine's ApplyDefaults state>}.
Output ($.run): the run's deterministic names, S3 locations, images and settings (mlpipeline.runs.plan_run).
Raises InvalidDataset (bad manifest, missing split, unknown override) or DuplicateRun (already ran).
"""

from __future__ import annotations

import functools
import urllib.parse
from pathlib import Path
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError
from mlpipeline import aws, function_env
from mlpipeline.errors import DuplicateRun, InvalidDataset, translate_aws_errors
from mlpipeline.runs import plan_run
from mlpipeline.settings import SettingsError, build_settings
from mlpipeline.sourcedir import build_sourcedir_tarball, sourcedir_key

from imgclf import manifest as manifest_mod

logger = Logger(service="validate")
# The layer ships a copy of training/ here (functions/pipeline_layer/Makefile).
DEFAULT_SOURCE_DIR = "/opt/training-source"


# This function's variables in template.yaml (mlpipeline.function_env).
ENVIRONMENT = function_env.read("data_bucket", "resource_prefix", training_source_dir=DEFAULT_SOURCE_DIR)


def _missing_splits(s3: Any, bucket: str, dataset: str, splits: dict[str, str]) -> list[str]:
    missing = []
    for split, folder in splits.items():
        prefix = f"{manifest_mod.dataset_prefix(dataset)}{folder}/"
        if s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0) == 0:
            missing.append(f"{split} (s3://{bucket}/{prefix} is empty)")
    return missing


def _already_ran(sagemaker: Any, tuning_job_name: str) -> str | None:
    job = aws.describe_or_none(
        sagemaker.describe_hyper_parameter_tuning_job, HyperParameterTuningJobName=tuning_job_name
    )
    return job["HyperParameterTuningJobStatus"] if job else None


def upload_source_once(s3: Any, bucket: str, source_dir: Path) -> str:
    """Tar the training source deterministically and upload it under its sha256, unless already there."""
    tarball = build_sourcedir_tarball(source_dir)
    key = sourcedir_key(tarball)
    if aws.describe_or_none(s3.head_object, Bucket=bucket, Key=key) is not None:
        logger.info("training source already at s3://%s/%s", bucket, key)
    else:
        s3.put_object(Bucket=bucket, Key=key, Body=tarball, ContentType="application/gzip")
        logger.info("uploaded training source to s3://%s/%s (%d bytes)", bucket, key, len(tarball))
    return key


@translate_aws_errors
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    logger.append_keys(run_id=None)  # not known yet (a warm start may carry the last run's)
    detail = event["event"].get("detail", {})
    bucket = detail.get("bucket", {}).get("name")
    # S3 event keys arrive URL-encoded (spaces as '+').
    key = urllib.parse.unquote_plus(detail.get("object", {}).get("key", ""))
    if bucket != ENVIRONMENT.data_bucket:
        raise InvalidDataset(f"bucket {bucket!r} is not this stack's data bucket {ENVIRONMENT.data_bucket!r}")
    s3 = boto3.client("s3")
    sagemaker = boto3.client("sagemaker")
    try:
        dataset = manifest_mod.dataset_from_key(key)
        try:
            # The versioned bucket keeps every upload: read exactly the version this event announced,
            # so a quick re-upload of the manifest cannot swap the content under an earlier event.
            version_id = detail.get("object", {}).get("version-id")
            extra = {"VersionId": version_id} if version_id and version_id != "null" else {}
            obj = s3.get_object(Bucket=bucket, Key=key, **extra)
        except ClientError as error:
            if aws.is_not_found(error):
                raise InvalidDataset(f"s3://{bucket}/{key} does not exist (deleted after upload?)") from error
            raise
        manifest = manifest_mod.parse_manifest(obj["Body"].read(), dataset)
        settings = build_settings(event["defaults"], manifest.overrides)
    except (manifest_mod.ManifestError, SettingsError) as error:
        raise InvalidDataset(str(error)) from error

    missing = _missing_splits(s3, bucket, dataset, manifest.splits)
    if missing:
        raise InvalidDataset(
            f"dataset {dataset!r} is missing splits: {', '.join(missing)}; upload the images "
            f"first and {manifest_mod.MANIFEST_FILENAME} last"
        )

    region = boto3.session.Session().region_name
    source_dir = Path(ENVIRONMENT.training_source_dir)
    # Names first (cheap), so a duplicate is ignored before anything is uploaded.
    plan = functools.partial(
        plan_run,
        bucket=bucket,
        manifest_key=key,
        manifest=manifest,
        settings=settings,
        prefix=ENVIRONMENT.resource_prefix,
        region=region,
        etag=obj.get("ETag"),
    )
    probe = plan(source_key="")
    logger.append_keys(run_id=probe.run_id)
    status = _already_ran(sagemaker, probe.tuning_job_name)
    if status is not None:
        raise DuplicateRun(
            f"dataset {dataset!r} ({probe.version_token}) already ran as "
            f"{probe.tuning_job_name} (tuning job {status}); change 'version' to run again"
        )
    source_key = upload_source_once(s3, bucket, source_dir)
    run = plan(source_key=source_key)
    logger.info("run %s for dataset %s (%s)", run.run_id, dataset, run.version_token)
    return run.to_dict()
