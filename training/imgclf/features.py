"""The feature cache: with a frozen backbone, compute each image's backbone features once and train the
head on them, so a tuning trial takes seconds instead of minutes.

What it gives up: random augmentation. Cached features come from the eval transform (resize + center
crop), so every epoch sees the same view of each training image; with few epochs and a frozen backbone
the difference in test accuracy is small (see benchmarks/bench_training.py), and it is the reason the
cache is opt-in for the final training job.

The cache is a directory of files, one per (backbone weights, preprocessing, numerics, split, file list)
combination: the key hashes the backbone's own tensors (so "none", a file, ImageNet or a channel are all
told apart exactly), the eval preprocessing, the autocast dtype / memory format, the code that computes
features (CACHE_FORMAT and the source of this module and imgclf.presets), and every sample's relative
path, size and SHA-256 of its bytes. Content, not mtimes: a dataset downloaded by SageMaker into a
training container has fresh mtimes, and the same bytes must give the same key there and on a laptop.
Concurrent trials may share the directory: each writes a temporary file and renames it into place
atomically; a reader sees a whole file or none.

The same directory is the feature set the AWS pipeline shares between tuning trials: an extraction job
(`train.py --extract-features-only`) writes it, and a trial reads it as its `features` channel
(SM_CHANNEL_FEATURES) without any image: each file carries its description (backbone, weights digest,
preprocessing, numerics, class folders, every sample's relative path and label), which the trial checks
against its own backbone before it trusts the features (`load_from_feature_set`).
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

from imgclf import contract
from imgclf.checkpoint import atomic_torch_save
from imgclf.data import ImageFolderDataset, SplitScan
from imgclf.precision import PrecisionPlan
from imgclf.presets import Preprocessing

logger = logging.getLogger(__name__)

CACHE_FORMAT = 2
# The code whose behaviour the features depend on (besides the backbone's tensors): part of the key.
_CODE_FILES = (Path(__file__), Path(__file__).with_name("presets.py"))
# Written last by an extraction job: the feature set is complete (the pipeline looks for it in S3).
FEATURE_SET_MANIFEST = contract.FEATURE_SET_MANIFEST


class FeatureSetError(ValueError):
    """A feature set (the `features` channel) does not hold what this run needs; the message says why."""


def code_version() -> str:
    digest = hashlib.sha256(str(CACHE_FORMAT).encode())
    for path in _CODE_FILES:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def content_fingerprint(split: SplitScan) -> list[tuple[str, int, str]]:
    """(relative path, size, SHA-256 of the bytes) per sample: the same for a copy of the same files."""
    rows = []
    for path, _ in split.samples:
        rows.append((path.relative_to(split.root).as_posix(), path.stat().st_size,
                     hashlib.sha256(path.read_bytes()).hexdigest()))
    return rows


def backbone_digest(model: nn.Module) -> str:
    """SHA-256 over the backbone's tensors (names, shapes, dtypes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in model.backbone_state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def describe(backbone: str, weights_digest: str, preprocessing: Preprocessing, plan: PrecisionPlan,
             split: SplitScan) -> dict[str, Any]:
    """Everything the split's features depend on (what the key hashes, and what a feature file carries)."""
    return {
        "format": CACHE_FORMAT, "code": code_version(), "backbone": backbone, "weights": weights_digest,
        "preprocessing": preprocessing.identity(), "numerics": plan.identity(), "split": split.name,
        "files": content_fingerprint(split), "labels": [label for _, label in split.samples],
        "classes": split.class_folders,
    }


def key_of(description: dict[str, Any]) -> str:
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
    description = describe(backbone, weights_digest, preprocessing, plan, split)
    key = key_of(description)
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
    atomic_torch_save({"key": key, "description": description, "features": features, "labels": labels}, path)
    logger.info("feature cache miss: extracted %s features in %.1f s -> %s", split.name, seconds, path)
    return features, labels, {"hit": False, "path": str(path), "seconds": round(seconds, 3)}


def write_feature_set_manifest(cache_dir: Path, files: dict[str, dict[str, Any]], backbone: str,
                               weights_digest: str, preprocessing: Preprocessing, plan: PrecisionPlan) -> Path:
    """The extraction job's last write: which file holds each split. Its presence means "complete"."""
    manifest = {"format": CACHE_FORMAT, "code": code_version(), "backbone": backbone, "weights": weights_digest,
                "preprocessing": preprocessing.identity(), "numerics": plan.identity(),
                "classes": _classes_of(cache_dir, files),
                "splits": {split: Path(info["path"]).name for split, info in files.items()}}
    path = cache_dir / FEATURE_SET_MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    tmp.replace(path)
    return path


def _classes_of(cache_dir: Path, files: dict[str, dict[str, Any]]) -> list[str]:
    blob = torch.load(cache_dir / Path(files["train"]["path"]).name, map_location="cpu", weights_only=True)
    return list(blob["description"]["classes"])


def _manifest(feature_set: Path) -> dict[str, Any]:
    path = feature_set / FEATURE_SET_MANIFEST
    if not path.is_file():
        raise FeatureSetError(f"{feature_set} holds no {FEATURE_SET_MANIFEST}: not a complete feature set")
    return json.loads(path.read_text())


def feature_set_classes(feature_set: Path) -> list[str]:
    """The class folders of the dataset the feature set was extracted from (the head's outputs)."""
    return list(_manifest(feature_set)["classes"])


def feature_set_description(feature_set: Path, split: str) -> dict[str, Any]:
    name = _manifest(feature_set).get("splits", {}).get(split)
    if not name or not (feature_set / name).is_file():
        raise FeatureSetError(f"feature set {feature_set} has no file for split {split!r}")
    return torch.load(feature_set / name, map_location="cpu", weights_only=True)["description"]


def load_from_feature_set(feature_set: Path, split: str, backbone: str, weights_digest: str,
                          preprocessing: Preprocessing) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """(features, labels, description) of a split from an extracted feature set, with no image at hand.

    The numerics of the extraction (bf16 on a GPU) need not match this process's (a CPU trial): the head
    trains on float32 features either way. Backbone, weights and preprocessing must match exactly."""
    manifest = _manifest(feature_set)
    expected = {"format": CACHE_FORMAT, "code": code_version(), "backbone": backbone, "weights": weights_digest,
                "preprocessing": preprocessing.identity()}
    wrong = {k: (manifest.get(k), v) for k, v in expected.items() if manifest.get(k) != v}
    if wrong:
        raise FeatureSetError(f"feature set {feature_set} was extracted for something else: "
                              + ", ".join(f"{k} {have!r} (this run: {want!r})" for k, (have, want) in wrong.items()))
    name = manifest.get("splits", {}).get(split)
    if not name or not (feature_set / name).is_file():
        raise FeatureSetError(f"feature set {feature_set} has no file for split {split!r}")
    blob = torch.load(feature_set / name, map_location="cpu", weights_only=True)
    description = blob["description"]
    if key_of(description) != blob["key"] or any(description.get(k) != v for k, v in expected.items()):
        raise FeatureSetError(f"{feature_set / name} does not match its own description (damaged or altered)")
    logger.info("features of %s from the feature set %s (%d x %d)", split, feature_set, *blob["features"].shape)
    return blob["features"], blob["labels"], description
