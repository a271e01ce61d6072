"""`imgclf aws upload DIR --stack NAME`: a dataset into the stack's bucket, checked first, manifest last.

Over ~300 lines on purpose: one command's ordered steps (check, upload, manifest last), read top to bottom.

1. Check locally, before a byte is sent, what the pipeline would check an hour later:
   - ValidateFunction's checks, with its own code: the manifest key and body (imgclf.manifest), the run's
     settings (mlpipeline.settings.build_settings over the stack's defaults, read from the deployed state
     machine's ApplyDefaults state, and the manifest's overrides), and every split folder non-empty;
   - the training job's own layout check (imgclf.data.discover, fed the split folders as the SageMaker
     channels SM_CHANNEL_TRAIN/VALID/TEST it will read them from): class folders agree between splits,
     no class is empty, unreadable files are counted.
2. Upload every split folder's files with boto3's managed transfers (s3transfer: parallel, multipart above
   MULTIPART_BYTES), with one progress bar. S3 computes a SHA-256 of what it stored (ChecksumAlgorithm);
   a file whose object already has the same size and SHA-256 is skipped, so an interrupted upload
   resumes where it stopped and a second upload sends nothing.
3. Only when every image is there: the manifest, last (the EventBridge rule matches only that key). An
   unchanged manifest is not sent again: the dataset version already ran or is running.
4. Find the execution that the manifest started: the rule's target starts the state machine with the
   S3 event as input, so the execution whose input names this manifest key and version is ours.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from botocore.exceptions import ClientError

from imgclf import manifest as manifests
from imgclf_cli.errors import CliError, ExitCode

log = logging.getLogger("imgclf.upload")

# The transfer settings and the checksum comparison must agree: an object uploaded in parts carries a
# composite checksum over parts of exactly this size.
MULTIPART_BYTES = 16 * 1024 * 1024
CHECKSUM_ALGORITHM = "SHA256"
DEFAULT_JOBS = 16
DEFAULT_WAIT_S = 120.0
# The state machine state that hands the stack's settings to Validate (statemachine/pipeline.asl.json).
APPLY_DEFAULTS_STATE = "ApplyDefaults"


@dataclass(frozen=True)
class LocalFile:
    path: Path
    key: str
    size: int


@dataclass(frozen=True)
class CheckedDataset:
    """A dataset that passed the local checks: what to upload, and the manifest to send last."""

    dataset: str
    manifest_key: str
    manifest_body: bytes
    manifest: manifests.Manifest
    files: list[LocalFile]
    class_count: int
    image_count: int
    skipped_count: int


# --------------------------------------------------------------------------------------------------
# 1. The local checks.


def manifest_body(directory: Path, version: str | None) -> bytes:
    """DIR/manifest.json if there is one (with `version` replaced when given), else a minimal manifest."""
    path = directory / manifests.MANIFEST_FILENAME
    if path.is_file():
        raw = path.read_bytes()
        if version is None:
            return raw
        try:
            document = json.loads(raw)
        except ValueError:
            return raw  # parse_manifest reports it, with the pipeline's own words
        if isinstance(document, dict):
            document["version"] = version
            return (json.dumps(document, indent=2) + "\n").encode()
        return raw
    document: dict[str, Any] = {"schema_version": manifests.SCHEMA_VERSION}
    if version is not None:
        document["version"] = version
    return (json.dumps(document, indent=2) + "\n").encode()


def stack_defaults(sfn: Any, state_machine_arn: str) -> dict[str, Any] | None:
    """The settings the state machine passes to Validate (its ApplyDefaults state, with the stack's
    parameters substituted by CloudFormation), or None when the definition has no such state."""
    definition = json.loads(sfn.describe_state_machine(stateMachineArn=state_machine_arn)["definition"])
    state = definition.get("States", {}).get(APPLY_DEFAULTS_STATE, {})
    for field_name in ("Parameters", "Arguments", "Output"):
        defaults = (state.get(field_name) or {}).get("defaults")
        if isinstance(defaults, dict):
            return defaults
    return None


def _visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def check_dataset(directory: Path, dataset: str, version: str | None,
                  defaults: dict[str, Any] | None) -> CheckedDataset:
    """Run the pipeline's checks on a local dataset; CliError(BAD_INPUT) naming every problem found."""
    from mlpipeline.settings import SettingsError, build_settings

    from imgclf.data import SPLIT_CHANNELS, DatasetError, discover  # imports torch: only when uploading

    if not directory.is_dir():
        raise CliError(f"{directory} is not a folder", ExitCode.BAD_INPUT)
    key = f"{manifests.dataset_prefix(dataset)}{manifests.MANIFEST_FILENAME}"
    body = manifest_body(directory, version)
    try:
        manifests.dataset_from_key(key)
        manifest = manifests.parse_manifest(body, dataset)
        if defaults is not None:
            build_settings(defaults, manifest.overrides)
    except (manifests.ManifestError, SettingsError) as error:
        raise CliError(f"refused before uploading: {error}", ExitCode.BAD_INPUT) from error

    folders = {split: directory / folder for split, folder in manifest.splits.items()}
    empty = [f"{split} ({path} has no files)" for split, path in folders.items()
             if not path.is_dir() or not _visible_files(path)]
    if empty:
        raise CliError(f"refused before uploading: dataset {dataset!r} is missing splits: {', '.join(empty)}",
                       ExitCode.BAD_INPUT)
    try:
        splits = discover(env={SPLIT_CHANNELS[split]: str(path) for split, path in folders.items()})
    except DatasetError as error:
        raise CliError(f"refused before uploading: {error}", ExitCode.BAD_INPUT) from error

    prefix = manifests.dataset_prefix(dataset)
    files = [LocalFile(path, f"{prefix}{manifest.splits[split]}/{path.relative_to(folder).as_posix()}",
                       path.stat().st_size)
             for split, folder in folders.items() for path in _visible_files(folder)]
    return CheckedDataset(
        dataset=dataset, manifest_key=key, manifest_body=body, manifest=manifest, files=files,
        class_count=splits.num_classes, image_count=sum(len(s.samples) for s in splits.splits.values()),
        skipped_count=sum(s.num_skipped for s in splits.splits.values()))


# --------------------------------------------------------------------------------------------------
# 2. Which files are already there: same size, and the same SHA-256 as S3 computed when it stored them.


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def s3_sha256(data_or_path: bytes | Path, size: int | None = None) -> str:
    """The ChecksumSHA256 S3 reports for an object we uploaded: the SHA-256 of the whole object for a
    single PutObject, or for a multipart upload the SHA-256 of the parts' SHA-256 digests with "-<parts>"
    (a composite checksum, https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html)."""
    if isinstance(data_or_path, bytes):
        return _b64(hashlib.sha256(data_or_path).digest())
    size = data_or_path.stat().st_size if size is None else size
    with data_or_path.open("rb") as handle:
        if size < MULTIPART_BYTES:  # s3transfer uploads in one PutObject below its threshold
            return _b64(hashlib.file_digest(handle, "sha256").digest())
        parts = []
        while chunk := handle.read(MULTIPART_BYTES):
            parts.append(hashlib.sha256(chunk).digest())
    return f"{_b64(hashlib.sha256(b''.join(parts)).digest())}-{len(parts)}"


def same_checksum(remote: str | None, local: str) -> bool:
    """Whether S3's ChecksumSHA256 is `local` (from s3_sha256). A composite value ends in "-<parts>" on S3;
    moto leaves the suffix out, so the digests are compared, and the part counts when both have one
    (base64 has no "-", so the split is unambiguous)."""
    if not remote:
        return False
    remote_digest, _, remote_parts = remote.partition("-")
    local_digest, _, local_parts = local.partition("-")
    return remote_digest == local_digest and (not remote_parts or remote_parts == local_parts)


def remote_sizes(s3: Any, bucket: str, prefix: str) -> dict[str, int]:
    """Key -> size of every object under `prefix` (s3:ListBucket, 1,000 keys a call)."""
    sizes: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            sizes[item["Key"]] = int(item["Size"])
    return sizes


def remote_sha256(s3: Any, bucket: str, key: str) -> str | None:
    """The object's ChecksumSHA256 (HeadObject with ChecksumMode ENABLED), None when it has none."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return head.get("ChecksumSHA256")


def already_uploaded(s3: Any, bucket: str, files: Iterable[LocalFile], sizes: dict[str, int],
                     jobs: int) -> set[str]:
    """Keys of the files whose object has the same size and SHA-256 (HEADs in parallel, sizes first)."""
    candidates = [f for f in files if sizes.get(f.key) == f.size]

    def same(local: LocalFile) -> bool:
        return same_checksum(remote_sha256(s3, bucket, local.key), s3_sha256(local.path, local.size))

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return {f.key for f, equal in zip(candidates, pool.map(same, candidates), strict=True) if equal}


# --------------------------------------------------------------------------------------------------
# Upload.


class _Progress:
    """One progress bar (tqdm, on a terminal only) fed by every transfer's byte counts."""

    def __init__(self, total: int, out: IO[str]):
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="B", unit_scale=True, desc="uploading", file=out, disable=None)
        self._lock = threading.Lock()

    def add(self, amount: int) -> None:
        with self._lock:
            self._bar.update(amount)

    def close(self) -> None:
        self._bar.close()


def upload_files(s3: Any, bucket: str, files: list[LocalFile], jobs: int, out: IO[str]) -> list[tuple[str, str]]:
    """Upload in parallel with s3transfer; returns (key, error) for every file that failed."""
    from boto3.s3.transfer import TransferConfig, create_transfer_manager
    from s3transfer.subscribers import BaseSubscriber

    progress = _Progress(sum(f.size for f in files), out)

    class Subscriber(BaseSubscriber):
        def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
            progress.add(bytes_transferred)

    config = TransferConfig(multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES,
                            max_concurrency=jobs)
    failures: list[tuple[str, str]] = []
    try:
        with create_transfer_manager(s3, config) as manager:
            futures = [(f, manager.upload(str(f.path), bucket, f.key,
                                          extra_args={"ChecksumAlgorithm": CHECKSUM_ALGORITHM},
                                          subscribers=[Subscriber()]))
                       for f in files]
            for local, future in futures:
                try:
                    future.result()
                except Exception as error:  # every failure is reported; the others still complete
                    failures.append((local.key, str(error)))
    finally:
        progress.close()
    return failures


# --------------------------------------------------------------------------------------------------
# 4. The execution the manifest started.


def _input_names(document: Any, bucket: str, key: str, version_id: str | None) -> bool:
    """Whether an execution's input is the S3 "Object Created" event of this manifest upload."""
    if not isinstance(document, dict):
        return False
    detail = document.get("detail") or {}
    obj = detail.get("object") or {}
    if (detail.get("bucket") or {}).get("name") != bucket:
        return False
    if urllib.parse.unquote_plus(str(obj.get("key", ""))) != key:
        return False
    return version_id is None or obj.get("version-id") in (None, version_id)


def find_execution(sfn: Any, state_machine_arn: str, bucket: str, key: str, version_id: str | None,
                   not_before: datetime, wait_s: float, poll_s: float = 2.0) -> str | None:
    """The ARN of the execution started for this upload, waiting up to `wait_s`; None if none appeared.
    ListExecutions answers newest first ("sorted by time, with the most recent execution first",
    https://docs.aws.amazon.com/step-functions/latest/apireference/API_ListExecutions.html): only
    executions started after `not_before` are read."""
    deadline = time.monotonic() + wait_s
    looked_at: set[str] = set()
    while True:
        for execution in sfn.list_executions(stateMachineArn=state_machine_arn, maxResults=50)["executions"]:
            if execution["startDate"] < not_before:
                break
            arn = execution["executionArn"]
            if arn in looked_at:
                continue
            looked_at.add(arn)
            document = json.loads(sfn.describe_execution(executionArn=arn).get("input") or "null")
            if _input_names(document, bucket, key, version_id):
                return arn
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll_s)


# --------------------------------------------------------------------------------------------------
# The command.


def run(session: Any, stack: Any, directory: Path, *, dataset: str | None, version: str | None,
        jobs: int = DEFAULT_JOBS, wait_s: float = DEFAULT_WAIT_S, dry_run: bool = False,
        out: IO[str] | None = None) -> ExitCode:
    out = out or sys.stdout
    s3 = session.client("s3")
    sfn = session.client("stepfunctions")
    dataset = dataset or directory.resolve().name
    defaults = stack_defaults(sfn, stack.state_machine_arn)
    if defaults is None:
        log.warning("the state machine has no %s state: manifest overrides are checked by the pipeline only",
                    APPLY_DEFAULTS_STATE)
    checked = check_dataset(directory, dataset, version, defaults)
    out.write(f"dataset {dataset!r}: {checked.class_count} classes, {checked.image_count} images"
              + (f" ({checked.skipped_count} unreadable files will be skipped by training)"
                 if checked.skipped_count else "") + "; layout and manifest check out\n")

    bucket = stack.data_bucket
    sizes = remote_sizes(s3, bucket, manifests.dataset_prefix(dataset))
    present = already_uploaded(s3, bucket, checked.files, sizes, jobs)
    to_send = [f for f in checked.files if f.key not in present]
    out.write(f"s3://{bucket}/{manifests.dataset_prefix(dataset)}: {len(to_send)} file(s) to upload "
              f"({sum(f.size for f in to_send)} bytes), {len(present)} already there\n")
    if dry_run:
        return ExitCode.OK
    failures = upload_files(s3, bucket, to_send, jobs, out) if to_send else []
    if failures:
        for key, error in failures[:10]:
            out.write(f"  failed: {key}: {error}\n")
        raise CliError(f"{len(failures)} file(s) failed to upload; the manifest was not sent. Run the same "
                       "command again: what is already there is skipped.", ExitCode.SERVICE_ERROR)

    manifest_key = checked.manifest_key
    if sizes.get(manifest_key) == len(checked.manifest_body) and \
            same_checksum(remote_sha256(s3, bucket, manifest_key), s3_sha256(checked.manifest_body)):
        out.write(f"s3://{bucket}/{manifest_key} is unchanged: this dataset version was already submitted, "
                  "so no new run starts (give --version to run it again)\n")
        return ExitCode.OK
    not_before = datetime.now(UTC) - timedelta(minutes=5)  # tolerates a skewed local clock
    put = s3.put_object(Bucket=bucket, Key=manifest_key, Body=checked.manifest_body,
                        ContentType="application/json", ChecksumAlgorithm=CHECKSUM_ALGORITHM)
    out.write(f"uploaded the manifest last: s3://{bucket}/{manifest_key}\n")
    arn = find_execution(sfn, stack.state_machine_arn, bucket, manifest_key, put.get("VersionId"),
                         not_before, wait_s)
    if arn is None:
        raise CliError(f"no execution of {stack.state_machine_arn} started for the manifest within {wait_s:g} s "
                       "(is EventBridge enabled on the bucket? see `aws stepfunctions list-executions`)",
                       ExitCode.TIMED_OUT)
    out.write(f"execution: {arn}\n")
    out.write(f"follow it: imgclf aws watch --stack {stack.name} {arn}\n")
    return ExitCode.OK
