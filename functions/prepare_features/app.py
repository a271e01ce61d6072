"""PrepareFeatures: the run's cached backbone features (a frozen backbone only), found in the data bucket's
content-addressed store or made by one extraction job (mlpipeline.feature_sets has the key,
mlpipeline.training_requests the request).

Input {"phase": "start" | "collect", "run", "execution_arn" ($$.Execution.Id), "features" (collect: the
start phase's answer)}.
Output {"ready", "feature_set" (the store key), "s3_uri" (the feature set's folder), "reused" (found with
no job), "job_name" (the extraction job, when one was started, else None)}.

start: lists the splits' objects (the dataset's content) and hashes them with the backbone, numerics and
code into the feature set's key; when that set's manifest is in the bucket (HeadObject) it is used as is,
with no job. Otherwise CreateTrainingJob starts the extraction (train.py --extract-features-only). Its name
is deterministic per run and it carries the execution's tag, so a retried attempt that meets
ResourceInUse carries on with the job its first attempt created, and another execution's job is a
DuplicateRun (ignored by the state machine), as in StartTuning.
collect (after the job completed): the manifest must now be there; else FeaturesMissing.
"""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError
from mlpipeline import feature_sets, function_env, resource_tags, training_requests
from mlpipeline.errors import DuplicateRun, FeaturesMissing, error_code, translate_aws_errors
from mlpipeline.run_state import RunState

logger = Logger(service="prepare-features")


# This function's variables in template.yaml (mlpipeline.function_env).
ENVIRONMENT = function_env.read("sagemaker_role_arn")


def _listing(s3: Any, run: RunState) -> dict[str, tuple[str, list[dict[str, Any]]]]:
    """{split: (its key prefix, every object under it)} of the run's dataset."""
    base = run.dataset_s3_uri.removeprefix(f"s3://{run.bucket}/")
    out = {}
    for split, folder in run.splits.items():
        prefix = f"{base}{folder}/"
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=run.bucket, Prefix=prefix)
        out[split] = (prefix, [obj for page in pages for obj in page.get("Contents", [])])
    return out


def feature_set_exists(s3: Any, bucket: str, feature_set: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=feature_sets.feature_set_manifest_key(feature_set))
    except ClientError as error:
        if error_code(error) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def _tags(sagemaker: Any, arn: str) -> list[dict[str, str]]:
    return [tag for page in sagemaker.get_paginator("list_tags").paginate(ResourceArn=arn) for tag in page["Tags"]]


def start_extraction(sagemaker: Any, run: RunState, feature_set: str, execution_arn: str) -> str:
    role_arn = ENVIRONMENT.sagemaker_role_arn
    request = training_requests.extraction_job_request(run, role_arn, feature_set, execution_arn)
    name = request["TrainingJobName"]
    try:
        sagemaker.create_training_job(**request)
    except ClientError as error:
        if error_code(error) != "ResourceInUse":
            raise
        arn = sagemaker.describe_training_job(TrainingJobName=name)["TrainingJobArn"]
        if not resource_tags.started_by(_tags(sagemaker, arn), execution_arn):
            raise DuplicateRun(
                f"extraction job {name} already exists, started by another execution: this dataset version "
                "is already being processed"
            ) from error
        logger.info("extraction job %s was created by an earlier attempt: carrying on", name)
    return name


def _answer(run: RunState, feature_set: str, ready: bool, reused: bool, job_name: str | None) -> dict[str, Any]:
    return {"ready": ready, "feature_set": feature_set, "s3_uri": feature_sets.feature_set_s3_uri(run, feature_set),
            "reused": reused, "job_name": job_name}


@translate_aws_errors
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    run, phase = RunState.from_event(event["run"]), event["phase"]
    logger.append_keys(run_id=run.run_id)
    s3 = boto3.client("s3")
    if phase == "collect":
        features = event["features"]
        if not feature_set_exists(s3, run.bucket, features["feature_set"]):
            raise FeaturesMissing(
                f"extraction job {features['job_name']} completed, but s3://{run.bucket}/"
                f"{feature_sets.feature_set_manifest_key(features['feature_set'])} is missing (see the job's log)"
            )
        return {**features, "ready": True}
    if phase != "start":
        raise ValueError(f"unknown phase {phase!r}: expected start or collect")
    feature_set = feature_sets.feature_set_id(run, feature_sets.dataset_content_digest(_listing(s3, run)))
    if feature_set_exists(s3, run.bucket, feature_set):
        logger.info("feature set %s reused: no extraction job", feature_set)
        return _answer(run, feature_set, True, True, None)
    name = start_extraction(boto3.client("sagemaker"), run, feature_set, event["execution_arn"])
    logger.info("extraction job %s started for feature set %s", name, feature_set)
    return _answer(run, feature_set, False, False, name)
