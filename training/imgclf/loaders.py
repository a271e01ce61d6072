"""The run's inputs: its splits (the scanned image folders, or a feature set's description of them), the
datasets it trains on (images, the feature cache, or a feature set), the loaders over them, and the
feature-extraction job (`--extract-features-only`), which writes a feature set instead of training.
torchvision's references/classification/train.py keeps the same job in `load_data`."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, TensorDataset

from imgclf import data, distributed, features
from imgclf.config import TrainConfig
from imgclf.precision import FrozenBackbone, PrecisionPlan
from imgclf.presets import Preprocessing

logger = logging.getLogger(__name__)


def resolve_num_workers(value: str, ctx: distributed.DistContext, cached: bool) -> int:
    if value != "auto":
        return int(value)
    if cached:
        return 0  # tensors already in memory
    cores = (os.cpu_count() or 1) // max(1, ctx.local_world_size)
    # Leave one core to the training step; decoding JPEGs in the main process would serialise them.
    return min(4, max(1, cores - 1))


def discover_splits(cfg: TrainConfig, ctx: distributed.DistContext,
                    env: Mapping[str, str]) -> tuple[TrainConfig, data.DatasetSplits]:
    """The splits of the run's images, or of its feature set (features channel); a run on a feature set
    exports no serving model (the export validates on images, and a tuning trial is never served)."""
    if cfg.features_dir is None:
        return cfg, data.discover(cfg.data_dir, env)
    if cfg.export and ctx.is_main:
        logger.info("features channel: no serving export (it validates on images; a trial is never served)")
    return dataclasses.replace(cfg, export=False), splits_of_feature_set(cfg.features_dir)


def splits_of_feature_set(feature_set: Path) -> data.DatasetSplits:
    """The splits as the feature set describes them (class folders, each sample's path and label): what
    the run reports and saves in metadata.json, without the images."""
    classes = features.feature_set_classes(feature_set)
    scans = {}
    for split in data.SPLITS:
        description = features.feature_set_description(feature_set, split)
        samples = [(feature_set / row[0], label) for row, label in zip(description["files"],
                                                                       description["labels"], strict=True)]
        scans[split] = data.SplitScan(split, feature_set, list(classes), samples)
    return data.DatasetSplits(scans, list(classes))


def extract_feature_set(cfg: TrainConfig, ctx: distributed.DistContext, model: nn.Module,
                        splits: data.DatasetSplits, preprocessing: Preprocessing, plan: PrecisionPlan,
                        started: float) -> dict[str, Any]:
    """The extraction job: eval-transform features of every split into cfg.feature_cache_dir (on SageMaker
    /opt/ml/checkpoints/feature-cache, which the job's CheckpointConfig uploads to S3), then the manifest.
    Images decode in DataLoader worker processes (num-workers auto: one per core but one) while the
    backbone runs in the main process."""
    info: dict[str, Any] = {}
    if ctx.is_main:
        digest = features.backbone_digest(model)
        workers = resolve_num_workers(cfg.num_workers, ctx, cached=False)
        backbone = plan.frozen_backbone(model)
        for split in data.SPLITS:
            _, _, info[split] = features.load_or_extract(
                cfg.feature_cache_dir, backbone, cfg.backbone, digest, splits.splits[split], preprocessing, plan,
                max(cfg.batch_size, 64), workers, ctx.device)
        manifest = features.write_feature_set_manifest(cfg.feature_cache_dir, info, cfg.backbone, digest,
                                                       preprocessing, plan)
        logger.info("feature set complete in %.1f s: %s", time.perf_counter() - started, manifest)
    distributed.barrier(ctx)
    return {"extracted": info}


class LazyBackbone:
    """Builds the frozen backbone's inference copy on first use."""

    def __init__(self, make: Callable[[], FrozenBackbone]):
        self._make = make
        self._backbone: FrozenBackbone | None = None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self._backbone is None:
            self._backbone = self._make()
        return self._backbone(images)


def build_datasets(cfg: TrainConfig, ctx: distributed.DistContext, model: nn.Module,
                   backbone: FrozenBackbone | None, splits: data.DatasetSplits, preprocessing: Preprocessing,
                   plan: PrecisionPlan) -> tuple[dict[str, Dataset], dict[str, Any]]:
    """The train / valid / test datasets, and what the feature cache did for each split (empty without it)."""
    if cfg.features_dir is not None:
        digest = features.backbone_digest(model)
        loaded = {split: features.load_from_feature_set(cfg.features_dir, split, cfg.backbone, digest, preprocessing)
                  for split in data.SPLITS}
        return ({split: TensorDataset(f, lbl) for split, (f, lbl, _) in loaded.items()},
                {split: {"hit": True, "path": str(cfg.features_dir), "seconds": 0.0} for split in data.SPLITS})
    if not cfg.feature_cache:
        eval_tf = preprocessing.eval_transform()
        return ({"train": data.ImageFolderDataset(splits.splits["train"].samples, preprocessing.train_transform()),
                 "valid": data.ImageFolderDataset(splits.splits["valid"].samples, eval_tf),
                 "test": data.ImageFolderDataset(splits.splits["test"].samples, eval_tf)}, {})
    return _cached_feature_datasets(cfg, ctx, model, backbone, splits, preprocessing, plan)


def _cached_feature_datasets(cfg: TrainConfig, ctx: distributed.DistContext, model: nn.Module,
                             backbone: FrozenBackbone | None, splits: data.DatasetSplits,
                             preprocessing: Preprocessing,
                             plan: PrecisionPlan) -> tuple[dict[str, Dataset], dict[str, Any]]:
    """The feature cache's datasets: rank 0 loads or extracts each split, the other ranks then load it."""
    digest = features.backbone_digest(model)
    extract_workers = resolve_num_workers("auto", ctx, cached=False) if cfg.num_workers == "auto" \
        else int(cfg.num_workers)
    out: dict[str, Dataset] = {}
    info: dict[str, Any] = {}
    lazy_backbone = LazyBackbone(lambda: backbone or plan.frozen_backbone(model))
    for split in data.SPLITS:
        args = (cfg.feature_cache_dir, lazy_backbone, cfg.backbone, digest, splits.splits[split], preprocessing, plan,
                max(cfg.batch_size, 64), extract_workers, ctx.device)
        if ctx.is_main:
            feats, labels, meta = features.load_or_extract(*args, compute=True)
        distributed.barrier(ctx)
        if not ctx.is_main:
            feats, labels, meta = features.load_or_extract(*args, compute=False)
        out[split] = TensorDataset(feats, labels)
        info[split] = meta
    return out, info


class Loaders:
    """Train / valid / test loaders: the train split sharded by DistributedSampler, eval splits sharded
    without padding (every sample counted exactly once across ranks)."""

    def __init__(self, datasets: dict[str, Dataset], cfg: TrainConfig, ctx: distributed.DistContext,
                 num_workers: int):
        per_rank_batch = max(1, cfg.batch_size // ctx.world_size)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        common: dict[str, Any] = {"num_workers": num_workers, "pin_memory": ctx.device.type == "cuda"}
        if num_workers > 0:
            common["persistent_workers"] = True
        self.sampler = (DistributedSampler(datasets["train"], ctx.world_size, ctx.rank, shuffle=True,
                                           seed=cfg.seed) if ctx.is_distributed else None)
        self.train = DataLoader(datasets["train"], batch_size=per_rank_batch, shuffle=self.sampler is None,
                                sampler=self.sampler, generator=self.generator, **common)
        self.eval = {}
        for split in ("valid", "test"):
            ds = datasets[split]
            shard = Subset(ds, range(ctx.rank, len(ds), ctx.world_size)) if ctx.is_distributed else ds
            self.eval[split] = DataLoader(shard, batch_size=max(per_rank_batch, 64), shuffle=False, **common)

    def close(self) -> None:
        """Stop persistent worker processes now. Left to interpreter shutdown, their teardown races the
        native runtimes the serving export loads (OpenVINO) and the process segfaults on exit."""
        for loader in (self.train, *self.eval.values()):
            iterator = getattr(loader, "_iterator", None)
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
            loader._iterator = None

    def set_epoch(self, epoch: int, seed: int) -> None:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        else:
            self.generator.manual_seed(seed + epoch)
