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

What it holds is a TrainingState: the run's progress (epochs done, the best epoch and its weights, the
history, the debugger's recorded series, why training stopped) plus, in the file, the weights and the
optimizer state after the last epoch. torchvision's references/classification/train.py checkpoints the same
way (model, optimizer, lr_scheduler, epoch) and resumes at the next epoch; this run has no learning-rate
scheduler (Adam at a constant --lr), so there is none to save.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from imgclf import distributed
from imgclf.contract import check_job_name
from imgclf.debugger import DebuggerRecorder

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
JOBS_FOLDER = "jobs"
FORMAT_VERSION = 1


class CheckpointMismatchError(RuntimeError):
    """The checkpoint directory holds a checkpoint of a different run."""


@dataclass
class BestEpoch:
    """The epoch with the lowest validation loss so far and its weights: what the run evaluates and saves
    in the end. `bad_epochs` counts the epochs since it without a better one (early stopping reads it)."""

    loss: float
    epoch: int
    state: dict[str, torch.Tensor]
    bad_epochs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"loss": self.loss, "epoch": self.epoch, "state": self.state, "bad_epochs": self.bad_epochs}


@dataclass
class TrainingState:
    """Where a run stands after `epochs_done` epochs; what a checkpoint saves and a resumed run continues
    from. `trainable_state` and `optimizer` are snapshots of the trainable module's weights and of the
    optimizer's state, set in a state about to be saved and in one just loaded (the live ones are the
    module's and the optimizer's own)."""

    best: BestEpoch
    epochs_done: int = 0
    finished: bool = False
    stopped: dict[str, Any] | None = None  # why training ended early: early stopping or a debugger rule
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch (training-history.json)
    recorder: DebuggerRecorder = field(default_factory=DebuggerRecorder)
    trainable_state: dict[str, torch.Tensor] | None = None
    optimizer: dict[str, Any] | None = None

    def to_checkpoint(self, fingerprint: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint file's keys (kept as they were, so a job resumes from a checkpoint written before)."""
        return {"fingerprint": fingerprint, "epochs_done": self.epochs_done, "finished": self.finished,
                "stopped": self.stopped, "trainable_state": self.trainable_state, "optimizer": self.optimizer,
                "debugger": self.recorder.state_dict(), "history": self.history, "best": self.best.to_dict()}

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> TrainingState:
        return cls(best=BestEpoch(**saved["best"]), epochs_done=saved["epochs_done"], finished=saved["finished"],
                   stopped=saved.get("stopped"), history=saved["history"],
                   recorder=DebuggerRecorder.from_state_dict(saved["debugger"]),
                   trainable_state=saved["trainable_state"], optimizer=saved["optimizer"])


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


def save(checkpoint_dir: Path, state: TrainingState, fingerprint: dict[str, Any],
         job_name: str | None = None) -> Path:
    path = checkpoint_path(checkpoint_dir, job_name)
    atomic_torch_save({"format_version": FORMAT_VERSION, **state.to_checkpoint(fingerprint), "job": job_name}, path)
    return path


def load(checkpoint_dir: Path | None, fingerprint: dict[str, Any],
         job_name: str | None = None) -> TrainingState | None:
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
    return TrainingState.from_checkpoint(state)


def load_on_every_rank(checkpoint_dir: Path | None, fingerprint: dict[str, Any], job_name: str | None,
                       ctx: distributed.DistContext) -> TrainingState | None:
    """`load` on rank 0, its answer broadcast to every rank; a checkpoint of another run fails every rank
    (not only rank 0, which the others would wait for forever)."""
    loaded: TrainingState | str | None = None
    if ctx.is_main:
        try:
            loaded = load(checkpoint_dir, fingerprint, job_name)
        except CheckpointMismatchError as exc:
            if not ctx.is_distributed:
                raise
            loaded = str(exc)
    if ctx.is_distributed:
        box = [loaded]
        torch.distributed.broadcast_object_list(box, src=0)
        loaded = box[0]
    if isinstance(loaded, str):
        raise CheckpointMismatchError(loaded)
    return loaded
