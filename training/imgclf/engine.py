"""The training run: data, model, (distributed) loop with early stopping, checkpoints, debugger rules,
profiling, metric lines, and the artifacts. `run_training(config)` is what train.py calls.

Metric lines (imgclf.contract formatters) after every epoch, on rank 0:
    Train set: Average loss: ...   Valid set: ...   Test set: ...   Epoch time: ..., Throughput: ...
    Debugger rule LossNotDecreasing: 0 (NoIssuesFound) ...   (one line per rule)
and once more for Valid, Test and the rules after training with the best epoch's weights restored, so
the last value SageMaker reads (its FinalMetricDataList, the tuning objective) is the saved model's.
The same per-epoch curves go to TensorBoard (imgclf.tensorboard_log), beside the profiler trace. Losses are
per-sample means of the cross-entropy (summed over samples, divided by the number of samples, all-reduced
across processes), not the course starter code's sum / number-of-batches.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, TensorDataset

from imgclf import (
    artifacts,
    checkpoint,
    contract,
    data,
    debugger,
    distributed,
    features,
    monitoring,
    optim,
    profiling,
    smoke_sample,
    tensorboard_log,
)
from imgclf.config import TrainConfig
from imgclf.models import build_model
from imgclf.precision import FrozenBackbone, PrecisionPlan, resolve_precision
from imgclf.presets import Preprocessing

logger = logging.getLogger(__name__)


def emit(line: str) -> None:
    """A metric line on stdout, where SageMaker's MetricDefinitions read it."""
    print(line, flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_num_workers(value: str, ctx: distributed.DistContext, cached: bool) -> int:
    if value != "auto":
        return int(value)
    if cached:
        return 0  # tensors already in memory
    cores = (os.cpu_count() or 1) // max(1, ctx.local_world_size)
    # Leave one core to the training step; decoding JPEGs in the main process would serialise them.
    return min(4, max(1, cores - 1))


@dataclass
class SplitResult:
    loss: float
    accuracy: float
    correct: int
    total: int
    confusion: torch.Tensor | None = None
    prediction_baseline: dict[str, Any] | None = None

    def line(self, split: str) -> str:
        return contract.format_split_line(split, self.loss, self.accuracy, self.correct, self.total)  # type: ignore[arg-type]


class Forward:
    """How a batch becomes logits, for the three ways of training: cached features (head only), images
    through a frozen backbone (no autograd through it), or the whole model."""

    def __init__(self, model: nn.Module, trainable: nn.Module, plan: PrecisionPlan, mode: str,
                 backbone: FrozenBackbone | None):
        self.model = model
        self.backbone = backbone
        self.trainable = trainable  # possibly DDP-wrapped
        self.plan = plan
        self.mode = mode  # "features" | "frozen" | "full"

    def __call__(self, inputs: torch.Tensor, train: bool) -> torch.Tensor:
        module = self.trainable if train else _unwrap(self.trainable)
        if self.mode == "features":
            return module(inputs)
        if self.mode == "frozen":
            assert self.backbone is not None
            return module(self.backbone(inputs))
        with self.plan.autocast():
            return module(self.plan.prepare_input(inputs)).float()


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


@torch.no_grad()
def evaluate(forward: Forward, loader: Iterable, num_classes: int, ctx: distributed.DistContext,
             confusion: bool = False, baseline_split: str | None = None) -> SplitResult:
    """Loss and accuracy of a split; its confusion matrix and its prediction-monitoring baseline
    (imgclf.monitoring: the statistics the inference Lambda emits) when asked."""
    forward.model.eval()
    sums = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
    moments = torch.zeros(6, dtype=torch.float64)  # top-1: n, sum, squares; entropy: n, sum, squares
    matrix = torch.zeros(num_classes * num_classes, dtype=torch.int64)
    for inputs, targets in loader:
        inputs, targets = inputs.to(ctx.device, non_blocking=True), targets.to(ctx.device)
        logits = forward(inputs, train=False).float()
        predictions = logits.argmax(1)
        sums += torch.tensor([F.cross_entropy(logits, targets, reduction="sum").item(),
                              (predictions == targets).sum().item(), targets.numel()], dtype=torch.float64)
        if confusion:
            matrix += torch.bincount((targets * num_classes + predictions).cpu(), minlength=num_classes ** 2)
        if baseline_split is not None:
            moments += prediction_moments(logits)
    sums = distributed.all_reduce_sum(sums, ctx)
    if confusion:
        matrix = distributed.all_reduce_sum(matrix, ctx)
    loss_sum, correct, total = sums.tolist()
    total = int(total)
    prediction_baseline = None
    if baseline_split is not None and total:
        n1, s1, q1, ne, se, qe = distributed.all_reduce_sum(moments, ctx).tolist()
        prediction_baseline = monitoring.baseline(monitoring.StatSums(int(n1), s1, q1),
                                                  monitoring.StatSums(int(ne), se, qe), baseline_split)
    return SplitResult(loss_sum / total if total else float("nan"), correct / total if total else 0.0,
                       int(correct), total, matrix.view(num_classes, num_classes) if confusion else None,
                       prediction_baseline)


def prediction_moments(logits: torch.Tensor) -> torch.Tensor:
    """[n, sum, sum of squares] of the top-1 probability and of the top-k entropy of a batch: the same
    statistics as monitoring.prediction_stats on the endpoint's answer (vectorized; a test checks they agree)."""
    probabilities = logits.float().softmax(1).double()
    head = probabilities.topk(min(monitoring.ENTROPY_TOP_K, probabilities.shape[1]), dim=1).values
    rest = (1.0 - head.sum(1, keepdim=True)).clamp_min(0.0)
    buckets = torch.cat([head, rest], 1)
    entropy = -torch.where(buckets > 0, buckets * buckets.clamp_min(1e-300).log(), torch.zeros_like(buckets)).sum(1)
    top1 = head[:, 0]
    n = float(top1.numel())
    return torch.tensor([n, top1.sum().item(), (top1 * top1).sum().item(),
                         n, entropy.sum().item(), (entropy * entropy).sum().item()], dtype=torch.float64)


def _rule_scalars(results: list[debugger.RuleResult]) -> dict[str, float]:
    """Each rule as a TensorBoard scalar, with the value of its training metric (Error: none)."""
    return {f"rules/{r.sagemaker_rule}": contract.RULE_METRIC_VALUES[r.status] for r in results
            if r.status in contract.RULE_METRIC_VALUES}


def _trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().cpu() for k, v in _unwrap(module).state_dict().items()}


class _Loaders:
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


class _LazyBackbone:
    """Builds the frozen backbone's inference copy on first use."""

    def __init__(self, make: Callable[[], FrozenBackbone]):
        self._make = make
        self._backbone: FrozenBackbone | None = None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self._backbone is None:
            self._backbone = self._make()
        return self._backbone(images)


def _splits_of_feature_set(feature_set: Path) -> data.DatasetSplits:
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


def _extract_feature_set(cfg: TrainConfig, ctx: distributed.DistContext, model: nn.Module,
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


def _build_datasets(cfg: TrainConfig, ctx: distributed.DistContext, model: nn.Module,
                    backbone: FrozenBackbone | None, splits: data.DatasetSplits, preprocessing: Preprocessing,
                    plan: PrecisionPlan, num_workers: int) -> tuple[dict[str, Dataset], dict[str, Any]]:
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
    digest = features.backbone_digest(model)
    extract_workers = resolve_num_workers("auto", ctx, cached=False) if cfg.num_workers == "auto" \
        else int(cfg.num_workers)
    out: dict[str, Dataset] = {}
    info: dict[str, Any] = {}
    lazy_backbone = _LazyBackbone(lambda: backbone or plan.frozen_backbone(model))
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


def run_training(cfg: TrainConfig, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Train per `cfg` under the environment's launcher (single process, torchrun or SageMaker hosts)."""
    env = dict(os.environ) if env is None else env
    ctx = distributed.setup(env)
    try:
        return _run(cfg, ctx, env)
    finally:
        distributed.cleanup(ctx)


def _run(cfg: TrainConfig, ctx: distributed.DistContext, env: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    if "OMP_NUM_THREADS" not in env:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, ctx.local_world_size)))
    seed_everything(cfg.seed)
    stop_on = debugger.parse_stop_on_rule(cfg.stop_on_rule)

    if cfg.features_dir is not None:
        if cfg.export and ctx.is_main:
            logger.info("features channel: no serving export (it validates on images; a trial is never served)")
        cfg = dataclasses.replace(cfg, export=False)
        splits = _splits_of_feature_set(cfg.features_dir)
    else:
        splits = data.discover(cfg.data_dir, env)
    summary = splits.summary()
    if ctx.is_main:
        counts = [f"{k} {v['images']} images ({v['skipped']} skipped)" for k, v in summary["splits"].items()]
        logger.info("data: %d classes; %s", splits.num_classes, ", ".join(counts))

    model = build_model(cfg.backbone, splits.num_classes, cfg.pretrained, cfg.image_size, cfg.freeze_backbone,
                        env=env)
    plan = resolve_precision(cfg.precision, ctx.device)
    model.to(ctx.device)
    # A frozen backbone runs through its fast inference copy; a trained one under autocast + channels_last.
    # With the feature cache the copy is built only if features must be extracted (a warm trial skips it).
    backbone = plan.frozen_backbone(model) if cfg.freeze_backbone and not cfg.feature_cache else None
    if not cfg.freeze_backbone:
        plan.prepare_model(model)
    preprocessing = Preprocessing.for_backbone(cfg.backbone, cfg.image_size)
    num_workers = resolve_num_workers(cfg.num_workers, ctx, cfg.feature_cache)
    if ctx.is_main:
        logger.info("%s on %s, %d process(es), %d data worker(s), weights %s", plan.describe(), ctx.device,
                    ctx.world_size, num_workers, model.weights_identity)

    if cfg.extract_features_only:
        return _extract_feature_set(cfg, ctx, model, splits, preprocessing, plan, started)
    datasets, cache_info = _build_datasets(cfg, ctx, model, backbone, splits, preprocessing, plan, num_workers)
    torch.manual_seed(cfg.seed + ctx.rank)  # distinct augmentation streams per rank
    loaders = _Loaders(datasets, cfg, ctx, num_workers)

    mode = "features" if cfg.feature_cache else ("frozen" if cfg.freeze_backbone else "full")
    trainable: nn.Module = model.head if mode in ("features", "frozen") else model
    if ctx.is_distributed:
        trainable = DistributedDataParallel(trainable, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                            else None)
    forward = Forward(model, trainable, plan, mode, backbone)
    optimizer = optim.Adam([p for p in trainable.parameters() if p.requires_grad], lr=cfg.lr)

    fingerprint = {"backbone": cfg.backbone, "weights": model.weights_identity, "classes": splits.class_folders,
                   "lr": cfg.lr, "batch_size": cfg.batch_size, "seed": cfg.seed, "freeze": cfg.freeze_backbone,
                   "image_size": cfg.image_size, "precision": cfg.precision, "feature_cache": cfg.feature_cache}
    recorder = debugger.DebuggerRecorder()
    history: list[dict[str, Any]] = []
    best = {"loss": float("inf"), "epoch": 0, "state": _trainable_state(trainable), "bad_epochs": 0}
    epochs_done, finished, stopped = 0, False, None

    state: dict[str, Any] | None = None
    if ctx.is_main:
        try:
            state = checkpoint.load(cfg.checkpoint_dir, fingerprint, cfg.job_name)
        except checkpoint.CheckpointMismatchError as exc:
            if not ctx.is_distributed:
                raise
            state = {"error": str(exc)}  # every rank must fail, not wait for rank 0 forever
    if ctx.is_distributed:
        box = [state]
        torch.distributed.broadcast_object_list(box, src=0)
        state = box[0]
        if state is not None and "error" in state:
            raise checkpoint.CheckpointMismatchError(state["error"])
    if state is not None:
        _unwrap(trainable).load_state_dict(state["trainable_state"])
        optimizer.load_state_dict(state["optimizer"])
        recorder = debugger.DebuggerRecorder.from_state_dict(state["debugger"])
        history, best, epochs_done = state["history"], state["best"], state["epochs_done"]
        finished, stopped = state["finished"], state.get("stopped")
        if ctx.is_main:
            logger.info("resumed after epoch %d of %d", epochs_done, cfg.epochs)

    timer = profiling.StepTimer()
    monitor = profiling.SystemMonitor(cfg.system_monitor_interval_ms / 1000).start() if ctx.is_main else None
    tensorboard_run = cfg.tensorboard_dir / cfg.tensorboard_run
    profiler = profiling.StepProfiler(tensorboard_run,
                                      cfg.profile_steps if ctx.is_main and epochs_done < cfg.epochs and not finished
                                      else 0)
    scalars = tensorboard_log.ScalarWriter(tensorboard_run) if ctx.is_main else None
    probe: debugger.InitStatsProbe | None = None
    results: list[debugger.RuleResult] = []
    try:
        epoch = epochs_done
        while not finished and epoch < cfg.epochs:
            epoch_start = time.perf_counter()
            loaders.set_epoch(epoch, cfg.seed)
            model.train()
            sums = torch.zeros(3, dtype=torch.float64)
            train_seconds_start = time.perf_counter()
            t_last = time.perf_counter()
            for inputs, targets in loaders.train:
                t_data = time.perf_counter() - t_last
                inputs, targets = inputs.to(ctx.device, non_blocking=True), targets.to(ctx.device)
                if probe is None and recorder.wants_init_stats():
                    probe = debugger.InitStatsProbe(_unwrap(trainable))
                logits = forward(inputs, train=True)
                loss = F.cross_entropy(logits.float(), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if probe is not None:
                    recorder.init_steps.append(probe.collect(len(recorder.step_losses)))
                    if not recorder.wants_init_stats():
                        probe.remove()
                        probe = None
                optimizer.step()
                loss_value = loss.item()
                recorder.record_step(loss_value)
                sums += torch.tensor([loss_value * targets.numel(),
                                      (logits.argmax(1) == targets).sum().item(), targets.numel()],
                                     dtype=torch.float64)
                profiler.step()
                now = time.perf_counter()
                timer.record(t_data, now - t_last - t_data)
                t_last = now
            train_seconds = time.perf_counter() - train_seconds_start
            sums = distributed.all_reduce_sum(sums, ctx)
            train = SplitResult(sums[0].item() / sums[2].item(), sums[1].item() / sums[2].item(),
                                int(sums[1].item()), int(sums[2].item()))
            valid = evaluate(forward, loaders.eval["valid"], splits.num_classes, ctx, baseline_split="valid")
            test = evaluate(forward, loaders.eval["test"], splits.num_classes, ctx)
            epoch += 1
            seconds = time.perf_counter() - epoch_start
            throughput = train.total / train_seconds if train_seconds > 0 else 0.0
            if ctx.is_main:
                logger.info("epoch %d/%d", epoch, cfg.epochs)
                for split, result in (("Train", train), ("Valid", valid), ("Test", test)):
                    emit(result.line(split))
                emit(contract.format_epoch_timing_line(seconds, throughput))
            history.append({"epoch": epoch, "train_loss": train.loss, "train_accuracy": train.accuracy,
                            "valid_loss": valid.loss, "valid_accuracy": valid.accuracy, "test_loss": test.loss,
                            "test_accuracy": test.accuracy, "lr": optimizer.param_groups[0]["lr"],
                            "epoch_seconds": round(seconds, 4), "train_images_per_second": round(throughput, 2)})
            recorder.record_epoch(train.loss, valid.loss)
            if valid.loss < best["loss"] - cfg.min_delta:
                best = {"loss": valid.loss, "epoch": epoch, "state": _trainable_state(trainable), "bad_epochs": 0}
            else:
                best["bad_epochs"] += 1
            if cfg.patience and best["bad_epochs"] >= cfg.patience:
                finished = True
                stopped = {"reason": "early stopping", "epoch": epoch, "patience": cfg.patience}
                if ctx.is_main:
                    logger.info("early stopping: no better validation loss for %d epoch(s); best epoch %d",
                                cfg.patience, best["epoch"])
            stop_now = False
            if ctx.is_main:
                results = recorder.evaluate()
                for result in results:
                    emit(result.log_line())
                assert scalars is not None
                scalars.add_scalars({**tensorboard_log.epoch_scalars(history[-1]), **_rule_scalars(results)}, epoch)
                fired = [r for r in results if r.rule in stop_on and r.status == debugger.ISSUES]
                if fired:
                    stop_now = True
                    stopped = {"reason": "debugger rule", "rule": fired[0].sagemaker_rule, "epoch": epoch,
                               "evidence": fired[0].evidence.get("summary")}
                    logger.warning("StopTraining: rule %s fired after epoch %d: %s", fired[0].sagemaker_rule,
                                   epoch, fired[0].evidence.get("summary"))
            if distributed.broadcast_flag(stop_now, ctx):
                finished = True
            if ctx.is_main and cfg.checkpoint_dir is not None:
                checkpoint.save(cfg.checkpoint_dir, {
                    "fingerprint": fingerprint, "epochs_done": epoch, "finished": finished,
                    "stopped": stopped, "trainable_state": _trainable_state(trainable),
                    "optimizer": optimizer.state_dict(), "debugger": recorder.state_dict(), "history": history,
                    "best": best}, cfg.job_name)
    finally:
        profiler.stop()
        if scalars is not None:
            scalars.close()
        if probe is not None:
            probe.remove()
        if monitor is not None:
            monitor.stop()

    # The best epoch's weights are the ones evaluated last and saved.
    _unwrap(trainable).load_state_dict(best["state"])
    valid = evaluate(forward, loaders.eval["valid"], splits.num_classes, ctx, baseline_split="valid")
    test = evaluate(forward, loaders.eval["test"], splits.num_classes, ctx, confusion=True)
    loaders.close()
    outcome: dict[str, Any] = {"best_epoch": best["epoch"], "epochs_run": len(history), "stopped": stopped,
                               "history": history, "cache": cache_info}
    if ctx.is_main:
        logger.info("best epoch %d (validation loss %.6f): final metrics with its weights", best["epoch"],
                    best["loss"])
        emit(valid.line("Valid"))
        emit(test.line("Test"))
        if valid.prediction_baseline is not None:
            top1 = valid.prediction_baseline[monitoring.TOP1_PROBABILITY.name]
            emit(contract.format_baseline_line(valid.prediction_baseline["count"], top1["mean"], top1["std"]))
        results = recorder.evaluate()
        for result in results:
            emit(result.log_line())
        metrics = {contract.OBJECTIVE_METRIC_NAME: test.loss, contract.TEST_ACCURACY_METRIC_NAME: test.accuracy,
                   "valid loss": valid.loss, "valid accuracy": valid.accuracy}
        if history:
            metrics.update({"train loss": history[-1]["train_loss"],
                            "train accuracy": history[-1]["train_accuracy"]})
        outcome["metrics"] = metrics
        outcome["prediction_baseline"] = valid.prediction_baseline
        _write_outputs(cfg, model, splits, preprocessing, plan, metrics, best["epoch"], history, test, results,
                       stop_on, stopped, timer, monitor, profiler, summary, cache_info, ctx, started,
                       valid.prediction_baseline)
    distributed.barrier(ctx)
    return outcome


def _write_outputs(cfg: TrainConfig, model: nn.Module, splits: data.DatasetSplits, preprocessing: Preprocessing,
                   plan: PrecisionPlan, metrics: dict[str, float], best_epoch: int, history: list[dict[str, Any]],
                   test: SplitResult, results: list[debugger.RuleResult], stop_on: list[str],
                   stopped: dict[str, Any] | None, timer: profiling.StepTimer,
                   monitor: profiling.SystemMonitor | None, profiler: profiling.StepProfiler,
                   summary: dict[str, Any], cache_info: dict[str, Any], ctx: distributed.DistContext,
                   started: float, prediction_baseline: dict[str, Any] | None = None) -> None:
    out = cfg.output_data_dir
    artifacts.write_json(out / "training-history.json", {"epochs": history, "best_epoch": best_epoch,
                                                         "stopped": stopped, "data": summary})
    confusion = test.confusion
    assert confusion is not None
    per_class = [(int(confusion[i, i]) / int(confusion[i].sum())) if int(confusion[i].sum()) else None
                 for i in range(splits.num_classes)]
    artifacts.write_json(out / "evaluation.json", {
        "split": "test", "model": f"best epoch {best_epoch}", "class_names": splits.class_names,
        "class_folders": splits.class_folders, "num_samples": test.total, "accuracy": test.accuracy,
        "average_loss": test.loss, "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(), "confusion_matrix_axes": "rows: true class, columns: predicted"})
    artifacts.write_json(out / "debugger-report.json", debugger.report(results, stop_on, stopped))
    profiling.write_report(out, timer, monitor or profiling.SystemMonitor(), profiler, {
        "precision": plan.describe(), "feature_cache": cache_info, "world_size": ctx.world_size},
        tensorboard_dir=cfg.tensorboard_dir)

    metadata = artifacts.build_metadata(
        backbone=cfg.backbone, class_names=splits.class_names, class_folders=splits.class_folders,
        preprocessing=preprocessing.to_metadata(), hyperparameters=cfg.hyperparameters(), metrics=metrics,
        best_epoch=best_epoch, weights=model.weights_identity,
        extra={"training": {"world_size": ctx.world_size, "precision": plan.describe(),
                            "seconds": round(time.perf_counter() - started, 2), "stopped": stopped},
               # What the live model is compared with: the inference Lambda's metrics and the drift alarm.
               "prediction_baseline": prediction_baseline})
    validation_samples = calibration_samples = None
    if cfg.export:
        eval_tf = preprocessing.eval_transform()
        batch = max(cfg.batch_size, 64)
        validation_samples = DataLoader(data.ImageFolderDataset(splits.splits["valid"].samples, eval_tf),
                                        batch_size=batch)
        calibration_samples = DataLoader(data.ImageFolderDataset(splits.splits["train"].samples, eval_tf),
                                         batch_size=batch, shuffle=True,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    artifacts.write_model_artifacts(cfg.model_dir, model, metadata, export=cfg.export,
                                    validation_samples=validation_samples, calibration_samples=calibration_samples,
                                    bundle_serving_wheels=cfg.bundle_serving_wheels)
    if cfg.features_dir is None and not cfg.extract_features_only:
        # A trial on a feature set has no images to record (only the deployed, image-trained model needs it).
        smoke_sample.record(cfg.model_dir, splits.splits["test"].samples, splits.splits["test"].root)
    logger.info("artifacts written to %s, reports to %s", cfg.model_dir, out)

