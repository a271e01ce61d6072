"""The training run: data, model, (distributed) loop with early stopping, checkpoints, debugger rules,
profiling, metric lines, and the artifacts. `run_training(config)` is what train.py calls.

Its shape is torchvision's references/classification/train.py `main`: build the data (imgclf.loaders), the
model and the optimizer; `resume` from this job's checkpoint; then per epoch `train_one_epoch` and
`evaluate` (imgclf.loop), the metric lines, early stopping, the debugger rules and a checkpoint of the
TrainingState (imgclf.checkpoint); in the end the best epoch's evaluation and the outputs (imgclf.outputs).

Metric lines (imgclf.contract formatters) after every epoch, on rank 0:
    Train set: Average loss: ...   Valid set: ...   Test set: ...   Epoch time: ..., Throughput: ...
    Debugger rule LossNotDecreasing: 0 (NoIssuesFound) ...   (one line per rule)
and once more for Valid, Test and the rules after training with the best epoch's weights restored, so
the last value SageMaker reads (its FinalMetricDataList, the tuning objective) is the saved model's.
The same per-epoch curves go to TensorBoard (imgclf.tensorboard_log), beside the profiler trace.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from imgclf import (
    checkpoint,
    contract,
    data,
    debugger,
    distributed,
    loaders,
    monitoring,
    optim,
    profiling,
    tensorboard_log,
)
from imgclf.checkpoint import BestEpoch, TrainingState
from imgclf.config import TrainConfig
from imgclf.loop import Forward, InitStats, SplitResult, evaluate, train_one_epoch, unwrap
from imgclf.models import build_model
from imgclf.outputs import TrainingResult, write_outputs
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


def _trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().cpu() for k, v in unwrap(module).state_dict().items()}


@dataclass
class TrainingRun:
    """What one run trains, on what, and how: built once, before the first epoch."""

    cfg: TrainConfig
    ctx: distributed.DistContext
    started: float  # time.perf_counter() when the run started
    stop_on: list[str]  # the rules that stop training (--stop-on-rule)
    splits: data.DatasetSplits
    summary: dict[str, Any]
    model: nn.Module
    plan: PrecisionPlan
    preprocessing: Preprocessing
    loaders: loaders.Loaders
    cache_info: dict[str, Any]  # what the feature cache did per split
    forward: Forward
    optimizer: optim.Adam
    fingerprint: dict[str, Any]  # what a checkpoint must match to be resumed (imgclf.checkpoint)

    @property
    def trainable(self) -> nn.Module:
        return self.forward.trainable


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
    cfg, splits = loaders.discover_splits(cfg, ctx, env)
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
    num_workers = loaders.resolve_num_workers(cfg.num_workers, ctx, cfg.feature_cache)
    if ctx.is_main:
        logger.info("%s on %s, %d process(es), %d data worker(s), weights %s", plan.describe(), ctx.device,
                    ctx.world_size, num_workers, model.weights_identity)

    if cfg.extract_features_only:
        return loaders.extract_feature_set(cfg, ctx, model, splits, preprocessing, plan, started)
    datasets, cache_info = loaders.build_datasets(cfg, ctx, model, backbone, splits, preprocessing, plan)
    torch.manual_seed(cfg.seed + ctx.rank)  # distinct augmentation streams per rank
    run_loaders = loaders.Loaders(datasets, cfg, ctx, num_workers)
    forward = _forward(cfg, ctx, model, plan, backbone)
    optimizer = optim.Adam([p for p in forward.trainable.parameters() if p.requires_grad], lr=cfg.lr)
    fingerprint = {"backbone": cfg.backbone, "weights": model.weights_identity, "classes": splits.class_folders,
                   "lr": cfg.lr, "batch_size": cfg.batch_size, "seed": cfg.seed, "freeze": cfg.freeze_backbone,
                   "image_size": cfg.image_size, "precision": cfg.precision, "feature_cache": cfg.feature_cache}
    run = TrainingRun(cfg, ctx, started, stop_on, splits, summary, model, plan, preprocessing, run_loaders,
                      cache_info, forward, optimizer, fingerprint)
    state = resume(run)
    instruments = train(run, state)
    return _finish(run, state, instruments)


def _forward(cfg: TrainConfig, ctx: distributed.DistContext, model: nn.Module, plan: PrecisionPlan,
             backbone: FrozenBackbone | None) -> Forward:
    """What trains (the head on features or behind a frozen backbone, else the whole model), DDP-wrapped
    when there are several processes, and how a batch reaches it."""
    mode = "features" if cfg.feature_cache else ("frozen" if cfg.freeze_backbone else "full")
    trainable: nn.Module = model.head if mode in ("features", "frozen") else model
    if ctx.is_distributed:
        trainable = DistributedDataParallel(trainable, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                            else None)
    return Forward(model, trainable, plan, mode, backbone)


def resume(run: TrainingRun) -> TrainingState:
    """The state to start from: this job's checkpoint, its weights and optimizer state loaded into the run
    (torchvision's `--resume`, at the epoch after the checkpoint's), or a fresh state."""
    loaded = checkpoint.load_on_every_rank(run.cfg.checkpoint_dir, run.fingerprint, run.cfg.job_name, run.ctx)
    if loaded is None:
        return TrainingState(best=BestEpoch(float("inf"), 0, _trainable_state(run.trainable)))
    assert loaded.trainable_state is not None and loaded.optimizer is not None
    unwrap(run.trainable).load_state_dict(loaded.trainable_state)
    run.optimizer.load_state_dict(loaded.optimizer)
    loaded.trainable_state = loaded.optimizer = None  # loaded; the live ones are the module's and the optimizer's
    if run.ctx.is_main:
        logger.info("resumed after epoch %d of %d", loaded.epochs_done, run.cfg.epochs)
    return loaded


def train(run: TrainingRun, state: TrainingState) -> profiling.Instruments:
    """The epochs left, until the last one or until training stops early; what watched them."""
    cfg = run.cfg
    epochs_left = state.epochs_done < cfg.epochs and not state.finished
    instruments = profiling.Instruments.start(cfg.tensorboard_dir / cfg.tensorboard_run,
                                              cfg.system_monitor_interval_ms / 1000,
                                              cfg.profile_steps if epochs_left else 0, run.ctx.is_main)
    init_stats = InitStats(state.recorder, unwrap(run.trainable))
    try:
        while not state.finished and state.epochs_done < cfg.epochs:
            _run_epoch(run, state, instruments, init_stats)
    finally:
        init_stats.remove()
        instruments.stop()
    return instruments


def _run_epoch(run: TrainingRun, state: TrainingState, instruments: profiling.Instruments,
               init_stats: InitStats) -> None:
    """One epoch: train, evaluate, its metric lines and history row, early stopping, the rules, a checkpoint."""
    cfg, ctx = run.cfg, run.ctx
    epoch_start = time.perf_counter()
    run.loaders.set_epoch(state.epochs_done, cfg.seed)
    train_result, train_seconds = train_one_epoch(run.forward, run.optimizer, run.loaders.train, ctx, init_stats,
                                                  instruments.profiler, instruments.timer)
    valid = evaluate(run.forward, run.loaders.eval["valid"], run.splits.num_classes, ctx, baseline_split="valid")
    test = evaluate(run.forward, run.loaders.eval["test"], run.splits.num_classes, ctx)
    state.epochs_done += 1
    seconds = time.perf_counter() - epoch_start
    throughput = train_result.total / train_seconds if train_seconds > 0 else 0.0
    if ctx.is_main:
        logger.info("epoch %d/%d", state.epochs_done, cfg.epochs)
        for split, result in (("Train", train_result), ("Valid", valid), ("Test", test)):
            emit(result.line(split))
        emit(contract.format_epoch_timing_line(seconds, throughput))
    state.history.append({
        "epoch": state.epochs_done, "train_loss": train_result.loss, "train_accuracy": train_result.accuracy,
        "valid_loss": valid.loss, "valid_accuracy": valid.accuracy, "test_loss": test.loss,
        "test_accuracy": test.accuracy, "lr": run.optimizer.param_groups[0]["lr"],
        "epoch_seconds": round(seconds, 4), "train_images_per_second": round(throughput, 2)})
    state.recorder.record_epoch(train_result.loss, valid.loss)
    _early_stopping(run, state, valid.loss)
    rule_fired = _apply_rules(run, state, instruments.scalars) if ctx.is_main else False
    if distributed.broadcast_flag(rule_fired, ctx):
        state.finished = True
    if ctx.is_main and cfg.checkpoint_dir is not None:
        snapshot = dataclasses.replace(state, trainable_state=_trainable_state(run.trainable),
                                       optimizer=run.optimizer.state_dict())
        checkpoint.save(cfg.checkpoint_dir, snapshot, run.fingerprint, cfg.job_name)


def _early_stopping(run: TrainingRun, state: TrainingState, valid_loss: float) -> None:
    """Keep the epoch if its validation loss is the best by more than --min-delta; stop after --patience
    epochs without one."""
    cfg, epoch = run.cfg, state.epochs_done
    if valid_loss < state.best.loss - cfg.min_delta:
        state.best = BestEpoch(valid_loss, epoch, _trainable_state(run.trainable))
    else:
        state.best.bad_epochs += 1
    if cfg.patience and state.best.bad_epochs >= cfg.patience:
        state.finished = True
        state.stopped = {"reason": "early stopping", "epoch": epoch, "patience": cfg.patience}
        if run.ctx.is_main:
            logger.info("early stopping: no better validation loss for %d epoch(s); best epoch %d",
                        cfg.patience, state.best.epoch)


def _apply_rules(run: TrainingRun, state: TrainingState, scalars: tensorboard_log.ScalarWriter | None) -> bool:
    """Rank 0: the debugger rules after the epoch, as metric lines and TensorBoard scalars; True when one of
    the --stop-on-rule rules fired (SageMaker's StopTraining action)."""
    epoch = state.epochs_done
    results = state.recorder.evaluate()
    for result in results:
        emit(result.log_line())
    assert scalars is not None
    scalars.add_scalars({**tensorboard_log.epoch_scalars(state.history[-1]),
                         **tensorboard_log.rule_scalars(results)}, epoch)
    fired = [r for r in results if r.rule in run.stop_on and r.status == debugger.ISSUES]
    if not fired:
        return False
    state.stopped = {"reason": "debugger rule", "rule": fired[0].sagemaker_rule, "epoch": epoch,
                     "evidence": fired[0].evidence.get("summary")}
    logger.warning("StopTraining: rule %s fired after epoch %d: %s", fired[0].sagemaker_rule,
                   epoch, fired[0].evidence.get("summary"))
    return True


def _finish(run: TrainingRun, state: TrainingState, instruments: profiling.Instruments) -> dict[str, Any]:
    """The best epoch's weights are the ones evaluated last and saved."""
    ctx, num_classes = run.ctx, run.splits.num_classes
    unwrap(run.trainable).load_state_dict(state.best.state)
    valid = evaluate(run.forward, run.loaders.eval["valid"], num_classes, ctx, baseline_split="valid")
    test = evaluate(run.forward, run.loaders.eval["test"], num_classes, ctx, confusion=True)
    run.loaders.close()
    outcome: dict[str, Any] = {"best_epoch": state.best.epoch, "epochs_run": len(state.history),
                               "stopped": state.stopped, "history": state.history, "cache": run.cache_info}
    if ctx.is_main:
        outcome.update(_report_final(run, state, instruments, valid, test))
    distributed.barrier(ctx)
    return outcome


def _report_final(run: TrainingRun, state: TrainingState, instruments: profiling.Instruments, valid: SplitResult,
                  test: SplitResult) -> dict[str, Any]:
    """Rank 0: the final metric lines (what SageMaker keeps as the job's final metrics) and the outputs."""
    logger.info("best epoch %d (validation loss %.6f): final metrics with its weights", state.best.epoch,
                state.best.loss)
    emit(valid.line("Valid"))
    emit(test.line("Test"))
    baseline = valid.prediction_baseline
    if baseline is not None:
        top1 = baseline[monitoring.TOP1_PROBABILITY.name]
        emit(contract.format_baseline_line(baseline["count"], top1["mean"], top1["std"]))
    results = state.recorder.evaluate()
    for result in results:
        emit(result.log_line())
    metrics = {contract.OBJECTIVE_METRIC_NAME: test.loss, contract.TEST_ACCURACY_METRIC_NAME: test.accuracy,
               "valid loss": valid.loss, "valid accuracy": valid.accuracy}
    if state.history:
        metrics.update({"train loss": state.history[-1]["train_loss"],
                        "train accuracy": state.history[-1]["train_accuracy"]})
    write_outputs(TrainingResult(
        cfg=run.cfg, model=run.model, splits=run.splits, preprocessing=run.preprocessing, plan=run.plan,
        world_size=run.ctx.world_size, started=run.started, summary=run.summary, cache_info=run.cache_info,
        stop_on=run.stop_on, state=state, metrics=metrics, test=test, rule_results=results,
        prediction_baseline=baseline, instruments=instruments))
    return {"metrics": metrics, "prediction_baseline": baseline}
