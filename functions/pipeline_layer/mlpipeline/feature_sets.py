"""Cached backbone features (imgclf.features): what identifies a feature set and where it lives. One
extraction job per feature set (training_requests.extraction_job_request), head-only tuning trials
(the state machine's PrepareFeatures / DescribeExtraction / CollectFeatures states)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from imgclf import contract
from mlpipeline import images
from mlpipeline.run_state import RunState

FEATURE_SETS_PREFIX = "features/"


def dataset_content_digest(listing: Mapping[str, tuple[str, list[Mapping[str, Any]]]]) -> str:
    """The dataset's content as S3 lists it: {split: (its prefix, ListObjectsV2 Contents)} -> sha256 over
    every object's split, key below the split's prefix, size and ETag. The same files uploaded again (a new
    manifest version, other overrides) give the same digest; a file added, removed or changed gives another.
    (A multipart upload's ETag depends on its part size, so the same bytes uploaded another way may miss: an
    extraction, never a wrong reuse. The container checks every file's SHA-256 before it reuses a file.)"""
    rows = sorted((split, o["Key"].removeprefix(prefix), int(o["Size"]), str(o["ETag"]).strip('"'))
                  for split, (prefix, contents) in listing.items() for o in contents)
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def feature_set_id(run: RunState, content_digest: str) -> str:
    """What the features depend on, as far as the pipeline knows without torch: the dataset's content
    (dataset_content_digest), the backbone and its weights source, the numerics (precision on the training
    instance type's device) and the code version (the source tarball's content-addressed key). The container
    checks the rest (the weights' own digest, the preprocessing, each file's bytes) before it reuses or
    trusts a file."""
    s = run.settings
    description = {"content": content_digest, "backbone": s.backbone,
                   "pretrained": s.pretrained, "precision": s.precision,
                   "device": images.processor_for(s.training_instance_type), "code": run.source_s3_uri}
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:32]


def feature_set_s3_uri(run: RunState, feature_set: str) -> str:
    """The extraction job's CheckpointConfig.S3Uri: SageMaker syncs /opt/ml/checkpoints there (and downloads
    it into the container at start, so a rerun finds its files and extracts nothing)
    https://docs.aws.amazon.com/sagemaker/latest/dg/model-checkpoints-enable.html"""
    return f"s3://{run.bucket}/{FEATURE_SETS_PREFIX}{feature_set}/"


def feature_set_manifest_key(feature_set: str) -> str:
    """The S3 key whose presence means the feature set is complete (written last by the extraction job)."""
    return f"{FEATURE_SETS_PREFIX}{feature_set}/{contract.FEATURE_CACHE_FOLDER}/{contract.FEATURE_SET_MANIFEST}"


def extraction_job_name(run: RunState) -> str:
    return f"{run.run_id}-features"  # run ids are <= 32 characters; SageMaker allows 63




def cached_features_tuning(run: RunState, feature_set: str) -> dict[str, str]:
    """tuning_job_request's `features` for this run: its feature set, the trials' instance type and image."""
    return {"feature_set": feature_set, "instance_type": run.settings.cached_features_tuning_instance_type,
            "image_uri": run.cached_tuning_image_uri}
