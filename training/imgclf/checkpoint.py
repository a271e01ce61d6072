"""Per-epoch checkpoints for spot interruptions and restarts.

SageMaker syncs /opt/ml/checkpoints with the job's CheckpointConfig S3 URI and restores it when a spot
job restarts; elsewhere `--checkpoint-dir`. One file, `checkpoint.pt`, written by rank 0 at the end of
every epoch (temp file + atomic rename, so an interruption mid-write leaves the previous one intact).

A checkpoint records the run's fingerprint (backbone, weights, classes, the hyperparameters that shape
the run). Resuming from a checkpoint of a different run would silently mix two experiments, so that is
an error naming the differences; extending `--epochs` or `--patience` is allowed.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT_VERSION = 1


class CheckpointMismatchError(RuntimeError):
    """The checkpoint directory holds a checkpoint of a different run."""


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


def save(checkpoint_dir: Path, state: dict[str, Any]) -> Path:
    path = checkpoint_dir / CHECKPOINT_FILE
    atomic_torch_save({"format_version": FORMAT_VERSION, **state}, path)
    return path


def load(checkpoint_dir: Path | None, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None. Raises CheckpointMismatchError for another run's."""
    if checkpoint_dir is None:
        return None
    path = checkpoint_dir / CHECKPOINT_FILE
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointMismatchError(f"{path}: unknown checkpoint format {state.get('format_version')}")
    saved = state.get("fingerprint", {})
    differences = {k: (saved.get(k), v) for k, v in fingerprint.items() if saved.get(k) != v}
    if differences:
        shown = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in list(differences.items())[:6])
        raise CheckpointMismatchError(
            f"{path} belongs to a different run ({shown}); use another --checkpoint-dir or remove it")
    logger.info("resuming from %s (after epoch %d)", path, state["epochs_done"])
    return state
