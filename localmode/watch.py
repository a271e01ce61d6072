"""Event-driven local mode: a run starts when a dataset's manifest lands in a local "bucket" folder.

The same contract as the stack's S3 trigger (imgclf.manifest): images go to
`<bucket>/datasets/<name>/{train,valid,test}/...`, then `<bucket>/datasets/<name>/manifest.json` LAST;
only the manifest starts a run. The run id comes from the dataset name and the manifest's `version` or,
without one, its ETag (the MD5 of its bytes, as S3 computes it for a single-part upload), so the same
dataset version never runs twice: a claim file per run id is created with O_EXCL before the run starts.
A claim whose run was interrupted (its process is gone) is resumed by the next watch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlpipeline import approval
from mlpipeline.settings import Settings

from imgclf import manifest as manifests
from localmode.pipeline import RunOptions, RunSummary, run

log = logging.getLogger("localmode.watch")

RUN_ID_PREFIX = "local"
CLAIMS_FOLDER = ".runs"

# Manifest overrides carry the stack's setting names (mlpipeline.settings.Settings); RunOptions uses the
# same names, so an override means something here exactly when RunOptions has a field of its name.
STACK_SETTINGS = frozenset(f.name for f in dataclasses.fields(Settings))
LOCAL_OVERRIDES = STACK_SETTINGS & {f.name for f in dataclasses.fields(RunOptions)}


def s3_etag(data: bytes) -> str:
    """S3's ETag of a single-part upload: the MD5 of the bytes (an identifier here, not security)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def apply_overrides(options: RunOptions, overrides: dict[str, Any]) -> RunOptions:
    changes: dict[str, Any] = {}
    unknown = sorted(set(overrides) - STACK_SETTINGS)
    if unknown:
        # The stack refuses these too (mlpipeline.settings.build_settings): a typo must not pass silently.
        raise manifests.ManifestError(f"unknown overrides {unknown}; known settings: {sorted(STACK_SETTINGS)}")
    for name, value in overrides.items():
        if name == "approval_mode":
            # No model registry here: ApprovalMode=manual stops the run after the gate, and a person serves
            # the model they approve (README "Manual approval"); never served unasked.
            if value not in approval.MODES:
                raise manifests.ManifestError(
                    f"overrides.{name}: expected one of {list(approval.MODES)}, got {value!r}")
            changes["serve"] = options.serve and value != approval.MANUAL
            continue
        if name not in LOCAL_OVERRIDES:
            log.info("override %s=%r applies to the AWS stack only: ignored here", name, value)
            continue
        current = getattr(options, name)
        try:
            changes[name] = type(current)(value)
        except (TypeError, ValueError) as error:
            raise manifests.ManifestError(f"overrides.{name}: {error}") from error
    return dataclasses.replace(options, **changes)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def claim(claims_dir: Path, run_id: str) -> bool:
    """Take the run id for this process. False when it ran, or runs, already (never twice)."""
    claims_dir.mkdir(parents=True, exist_ok=True)
    path = claims_dir / f"{run_id}.json"
    record = json.dumps({"status": "running", "pid": os.getpid(), "started": time.time()})
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        previous = json.loads(path.read_text() or "{}")
        if previous.get("status") == "running" and not _pid_alive(int(previous.get("pid", 0))):
            log.info("run %s was interrupted: resuming it", run_id)
            path.write_text(record)
            return True
        return False
    with os.fdopen(fd, "w") as f:
        f.write(record)
    return True


def finish_claim(claims_dir: Path, run_id: str, status: str, detail: str) -> None:
    path = claims_dir / f"{run_id}.json"
    record = json.loads(path.read_text())
    record.update(status=status, detail=detail, finished=time.time())
    path.write_text(json.dumps(record, indent=2))


def handle_manifest(bucket: Path, manifest_path: Path, options: RunOptions) -> tuple[str, RunSummary | None]:
    """Start (or skip) the run one manifest asks for. Returns (run id or key, summary or None if skipped)."""
    key = manifest_path.relative_to(bucket).as_posix()
    raw = manifest_path.read_bytes()
    dataset = manifests.dataset_from_key(key)
    claims_dir = bucket / CLAIMS_FOLDER
    try:
        manifest = manifests.parse_manifest(raw, dataset)
        run_id = manifests.run_id(RUN_ID_PREFIX, dataset, manifests.version_token(manifest, s3_etag(raw)))
    except manifests.ManifestError as error:
        # A bad manifest fails once, loudly, and is not retried until its bytes change.
        bad_id = f"invalid-{s3_etag(raw)}"
        if claim(claims_dir, bad_id):
            finish_claim(claims_dir, bad_id, "failed", str(error))
            log.error("%s: %s", key, error)
        return bad_id, None
    if not claim(claims_dir, run_id):
        return run_id, None
    prefix = bucket / manifests.dataset_prefix(dataset)
    try:
        data_dir = _split_view(prefix, manifest, bucket / CLAIMS_FOLDER / f"{run_id}.data")
        summary = run(dataclasses.replace(apply_overrides(options, manifest.overrides),
                                          data_dir=data_dir, run_id=run_id))
    except KeyboardInterrupt:
        raise  # the claim stays "running" with a dead pid: the next watch resumes the run
    except Exception as error:
        finish_claim(claims_dir, run_id, "failed", f"{type(error).__name__}: {error}")
        log.error("run %s failed: %s", run_id, error)
        return run_id, None
    finish_claim(claims_dir, run_id, "succeeded" if summary.gate["passed"] else "rejected", summary.gate["reason"])
    return run_id, summary


def _split_view(prefix: Path, manifest: manifests.Manifest, view: Path) -> Path:
    """The dataset as train/ valid/ test/: the prefix itself when the manifest keeps the default folders,
    else a folder of symbolic links to the folders it names."""
    if all(folder == split for split, folder in manifest.splits.items()):
        return prefix
    view.mkdir(parents=True, exist_ok=True)
    for split, folder in manifest.splits.items():
        link = view / split
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to((prefix / folder).resolve(), target_is_directory=True)
    return view


def watch(bucket: Path, options: RunOptions, *, interval: float = 2.0, once: bool = False,
          on_summary: Callable[[RunSummary], None] | None = None) -> int:
    """Look for manifests every `interval` seconds (or once) and run each new dataset version."""
    (bucket / manifests.DATASETS_PREFIX).mkdir(parents=True, exist_ok=True)
    log.info("watching %s for %s<name>/%s", bucket, manifests.DATASETS_PREFIX, manifests.MANIFEST_FILENAME)
    while True:
        for manifest_path in sorted((bucket / manifests.DATASETS_PREFIX).glob(f"*/{manifests.MANIFEST_FILENAME}")):
            _, summary = handle_manifest(bucket, manifest_path, options)
            if summary is not None and on_summary is not None:
                on_summary(summary)
        if once:
            return 0
        time.sleep(interval)
