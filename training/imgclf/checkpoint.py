"""Per-epoch checkpoints for spot interruptions and restarts, one per training job.

SageMaker syncs the job's local checkpoint folder (CheckpointConfig.LocalPath, /opt/ml/checkpoints) with
its CheckpointConfig.S3Uri: what is already under that S3 prefix is copied into the container when the
job starts, and what the job writes there is uploaded while it runs
(https://docs.aws.amazon.com/sagemaker/latest/dg/model-checkpoints.html). A tuning job gives every trial
the same TrainingJobDefinition, so every trial has the same S3 prefix and starts with the checkpoints of
the trials before it. A checkpoint is therefore keyed by the job's identity: SageMaker sets
TRAINING_JOB_NAME in the training container (the training toolkit reads it as the job's name,
sagemaker_training.environment.Environment.job_name), unique per trial and kept across a managed-spot
restart of the same job. With a job name the checkpoint is `<dir>/jobs/<TRAINING_JOB_NAME>/checkpoint.pt`;
without one (local runs, `--checkpoint-dir` of their own) it is `<dir>/checkpoint.pt`. What is shared on
purpose stays shared (the feature cache, `<dir>/feature-cache`).

One file, written by rank 0 at the end of every epoch (temp file + atomic rename, so an interruption
mid-write leaves the previous one intact). It records the job it belongs to and the run's fingerprint
(backbone, weights, classes, the hyperparameters that shape the run). Resuming from another job's or
another run's checkpoint would silently mix two experiments, so that is an error naming the differences;
extending `--epochs` or `--patience` is allowed.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from imgclf.contract import check_job_name

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
JOBS_FOLDER = "jobs"
FORMAT_VERSION = 1


class CheckpointMismatchError(RuntimeError):
    """The checkpoint directory holds a checkpoint of a different run."""


def checkpoint_path(checkpoint_dir: Path, job_name: str | None) -> Path:
    """This job's checkpoint file: per job under jobs/ when the job has a name, else the folder's own."""
    if job_name is None:
        return checkpoint_dir / CHECKPOINT_FILE
    return checkpoint_dir / JOBS_FOLDER / check_job_name(job_name) / CHECKPOINT_FILE


def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(checkpoint_dir: Path, state: dict[str, Any], job_name: str | None = None) -> Path:
    path = checkpoint_path(checkpoint_dir, job_name)
    atomic_torch_save({"format_version": FORMAT_VERSION, **state, "job": job_name}, path)
    return path


def load(checkpoint_dir: Path | None, fingerprint: dict[str, Any],
         job_name: str | None = None) -> dict[str, Any] | None:
    """This job's checkpoint to resume from, or None. Raises CheckpointMismatchError for another run's."""
    if checkpoint_dir is None:
        return None
    path = checkpoint_path(checkpoint_dir, job_name)
    if job_name is not None and (checkpoint_dir / CHECKPOINT_FILE).is_file():
        logger.info("not resuming from %s: it was written without a job name (this job's checkpoint is %s)",
                    checkpoint_dir / CHECKPOINT_FILE, path)
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointMismatchError(f"{path}: unknown checkpoint format {state.get('format_version')}")
    if state.get("job") != job_name:
        raise CheckpointMismatchError(
            f"{path} belongs to training job {state.get('job')!r}, not {job_name!r}; remove it")
    saved = state.get("fingerprint", {})
    differences = {k: (saved.get(k), v) for k, v in fingerprint.items() if saved.get(k) != v}
    if differences:
        shown = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in list(differences.items())[:6])
        raise CheckpointMismatchError(
            f"{path} belongs to a different run ({shown}); use another --checkpoint-dir or remove it")
    logger.info("resuming from %s (after epoch %d)", path, state["epochs_done"])
    return state
