"""The feature cache: with a frozen backbone, compute each image's backbone features once and train the
head on them, so a tuning trial takes seconds instead of minutes.

What it gives up: random augmentation. Cached features come from the eval transform (resize + center
crop), so every epoch sees the same view of each training image; with few epochs and a frozen backbone
the difference in test accuracy is small (see benchmarks/bench_training.py), and it is the reason the
cache is opt-in for the final training job.

The cache is a directory of files, one per (backbone weights, preprocessing, numerics, split, file list)
combination: the key hashes the backbone's own tensors (so "none", a file, ImageNet or a channel are all
told apart exactly), the eval preprocessing, the autocast dtype / memory format, and every sample's
relative path, size and mtime. Concurrent trials may share the directory: each writes a temporary file
and renames it into place atomically; a reader sees a whole file or none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from imgclf.checkpoint import atomic_torch_save
from imgclf.data import ImageFolderDataset, SplitScan
from imgclf.precision import PrecisionPlan
from imgclf.presets import Preprocessing

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1


def backbone_digest(model: nn.Module) -> str:
    """SHA-256 over the backbone's tensors (names, shapes, dtypes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in model.backbone_state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(backbone: str, weights_digest: str, preprocessing: Preprocessing, plan: PrecisionPlan,
              split: SplitScan) -> str:
    description = {
        "format": CACHE_FORMAT, "backbone": backbone, "weights": weights_digest,
        "preprocessing": preprocessing.identity(), "numerics": plan.identity(), "split": split.name,
        "files": split.fingerprint(), "labels": [label for _, label in split.samples],
        "classes": split.class_folders,
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


@torch.no_grad()
def extract_features(backbone: Callable[[torch.Tensor], torch.Tensor], split: SplitScan,
                     preprocessing: Preprocessing, batch_size: int, num_workers: int, device: torch.device
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(features float32 [N, D], labels int64 [N]) for every sample of the split, in order."""
    loader = DataLoader(ImageFolderDataset(split.samples, preprocessing.eval_transform()), batch_size=batch_size,
                        shuffle=False, num_workers=num_workers)
    chunks, labels = [], []
    for images, targets in loader:
        chunks.append(backbone(images.to(device, non_blocking=True)).float().cpu())
        labels.append(targets)
    return torch.cat(chunks), torch.cat(labels).to(torch.int64)


def load_or_extract(cache_dir: Path, backbone_fn: Callable[[torch.Tensor], torch.Tensor], backbone: str,
                    weights_digest: str, split: SplitScan, preprocessing: Preprocessing, plan: PrecisionPlan,
                    batch_size: int, num_workers: int, device: torch.device, compute: bool = True
                    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Cached features of a split, computing and storing them on a miss (when `compute`; a rank that must
    not compute waits for rank 0 and then only reads)."""
    key = cache_key(backbone, weights_digest, preprocessing, plan, split)
    path = cache_dir / f"{backbone}-{split.name}-{key[:32]}.pt"
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("key") == key:
                logger.info("feature cache hit: %s (%d x %d)", path, *blob["features"].shape)
                return blob["features"], blob["labels"], {"hit": True, "path": str(path), "seconds": 0.0}
        except Exception as exc:  # a damaged file is recomputed, not trusted
            logger.warning("ignoring unreadable feature cache file %s: %s", path, exc)
    if not compute:
        raise FileNotFoundError(f"feature cache file {path} missing after rank 0 wrote it")
    start = time.perf_counter()
    features, labels = extract_features(backbone_fn, split, preprocessing, batch_size, num_workers, device)
    seconds = time.perf_counter() - start
    atomic_torch_save({"key": key, "features": features, "labels": labels}, path)
    logger.info("feature cache miss: extracted %s features in %.1f s -> %s", split.name, seconds, path)
    return features, labels, {"hit": False, "path": str(path), "seconds": round(seconds, 3)}
