"""The dataset manifest: the trigger object of a pipeline run, and the run's deterministic identity.

A dataset is uploaded as `datasets/<name>/{train,valid,test}/<class folder>/<image>` followed, LAST, by
`datasets/<name>/manifest.json`. Only the manifest starts a run (on AWS: the EventBridge rule matches
that key; in local mode: the watch mode looks for it), so the thousands of image uploads before it
start nothing. The same dataset version never runs twice: the run id is derived from the dataset name
and the manifest's `version` (or, without one, the manifest object's ETag: a re-upload of identical
bytes has the same ETag), and SageMaker refuses a second job with the same name.

Manifest format (JSON object; every key optional, so `{}` is a valid manifest):

    {
      "schema_version": 1,
      "version": "2026-11-23",                 # identifies this dataset version; default: the ETag
      "description": "dog breeds, 133 classes",
      "splits": {"train": "train", "valid": "valid", "test": "test"},   # folders under datasets/<name>/
      "overrides": {"epochs": 10, "max_jobs": 4}                        # per-run settings
    }

Pure Python (no AWS, no torch): shared by the pipeline Lambdas and local mode's watch mode.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

MANIFEST_FILENAME = "manifest.json"
DATASETS_PREFIX = "datasets/"
SCHEMA_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "valid", "test")

# SageMaker names: [a-zA-Z0-9](-*[a-zA-Z0-9])*; a tuning job name is at most 32 characters, a training
# job name 63. The run id is also the tuning job name, so it is kept within 32.
TUNING_JOB_NAME_MAX = 32
TRAINING_JOB_NAME_MAX = 63
_HASH_CHARS = 10
_MANIFEST_KEY = re.compile(r"^datasets/([^/]+)/manifest\.json$")
_ALLOWED_KEYS = {"schema_version", "version", "description", "splits", "overrides"}
_SPLIT_FOLDER = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


class ManifestError(ValueError):
    """The manifest (or its S3 key) is unusable; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Manifest:
    """A validated manifest. `splits` maps train/valid/test to folders relative to the dataset prefix."""

    dataset: str
    version: str | None = None
    description: str = ""
    splits: dict[str, str] = field(default_factory=lambda: {s: s for s in SPLITS})
    overrides: dict[str, Any] = field(default_factory=dict)


def dataset_from_key(key: str) -> str:
    """'datasets/dogImages/manifest.json' -> 'dogImages'; ManifestError for any other key."""
    match = _MANIFEST_KEY.match(key)
    if not match:
        raise ManifestError(
            f"{key!r} is not a dataset manifest: upload it as {DATASETS_PREFIX}<name>/{MANIFEST_FILENAME}"
        )
    return match.group(1)


def dataset_prefix(dataset: str) -> str:
    """The key prefix under which a dataset's splits live: 'datasets/<name>/'."""
    return f"{DATASETS_PREFIX}{dataset}/"


def parse_manifest(raw: bytes | str, dataset: str) -> Manifest:
    """Parse and validate a manifest's bytes.

    Raises ManifestError listing every problem found, not only the first.
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        document = json.loads(text) if text.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"manifest of dataset {dataset!r} is not valid UTF-8 JSON: {error}") from error
    if not isinstance(document, dict):
        kind = type(document).__name__
        raise ManifestError(f"manifest of dataset {dataset!r} must be a JSON object, not {kind}")

    problems: list[str] = []
    unknown = sorted(set(document) - _ALLOWED_KEYS)
    if unknown:
        problems.append(f"unknown keys {unknown} (allowed: {sorted(_ALLOWED_KEYS)})")
    schema = document.get("schema_version", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        problems.append(f"schema_version must be {SCHEMA_VERSION}, got {schema!r}")

    version = document.get("version")
    if version is not None and (
        not isinstance(version, str | int) or isinstance(version, bool) or not str(version).strip()
    ):
        problems.append(f"version must be a non-empty string, got {version!r}")
    description = document.get("description", "")
    if not isinstance(description, str):
        problems.append("description must be a string")

    splits = {s: s for s in SPLITS}
    given_splits = document.get("splits", {})
    if not isinstance(given_splits, dict):
        problems.append('splits must be an object like {"train": "train", "valid": "valid", "test": "test"}')
    else:
        for name, folder in given_splits.items():
            if name not in SPLITS:
                problems.append(f"splits: unknown split {name!r} (splits are {list(SPLITS)})")
            elif not isinstance(folder, str) or not _SPLIT_FOLDER.match(folder.strip("/")) or ".." in folder:
                problems.append(f"splits.{name} must be a relative folder name, got {folder!r}")
            else:
                splits[name] = folder.strip("/")

    overrides = document.get("overrides", {})
    if not isinstance(overrides, dict):
        problems.append("overrides must be an object of setting name -> value")
        overrides = {}
    for name, value in overrides.items():
        if not isinstance(value, str | int | float | bool | list) or isinstance(value, dict):
            problems.append(f"overrides.{name} must be a string, number, boolean or list, got {value!r}")

    if problems:
        raise ManifestError(f"invalid manifest for dataset {dataset!r}: " + "; ".join(problems))
    return Manifest(
        dataset=dataset,
        version=None if version is None else str(version).strip(),
        description=description,
        splits=splits,
        overrides=dict(overrides),
    )


def version_token(manifest: Manifest, etag: str | None) -> str:
    """What identifies this dataset version: the manifest's `version`, else the manifest object's ETag."""
    if manifest.version:
        return f"version:{manifest.version}"
    if etag and etag.strip('"'):
        return f"etag:{etag.strip(chr(34))}"
    raise ManifestError(
        f"dataset {manifest.dataset!r}: the manifest has no 'version' and no ETag is known; "
        'add "version" to it'
    )


def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", text.lower())).strip("-") or "dataset"


def run_id(prefix: str, dataset: str, token: str) -> str:
    """Deterministic, SageMaker-safe run id (also the tuning job name, <= 32 characters).

    `<prefix>-<dataset slug>-<10 hex of sha256(dataset, token)>`: readable, and the same dataset version
    always maps to the same id, so a duplicate trigger collides with the first run's job names.
    """
    if not re.fullmatch(r"[a-z][a-z0-9]{0,7}", prefix):
        raise ManifestError(
            f"resource prefix must be 1-8 lower-case letters/digits, starting with a letter: {prefix!r}"
        )
    digest = hashlib.sha256(f"{dataset}\0{token}".encode()).hexdigest()[:_HASH_CHARS]
    room = TUNING_JOB_NAME_MAX - len(prefix) - len(digest) - 2
    slug = _slug(dataset)[:room].strip("-") or "d"
    return f"{prefix}-{slug}-{digest}"


def training_job_name(run: str) -> str:
    """The final training job of a run (the tuning job's own trials are named by SageMaker)."""
    name = f"{run}-final"
    assert len(name) <= TRAINING_JOB_NAME_MAX  # run ids are <= 32 characters
    return name
