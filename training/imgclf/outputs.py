"""What a finished training run writes, on rank 0: the reports in the job's output data folder
(training-history.json, evaluation.json, debugger-report.json, the profiler report) and the model folder
(weights, metadata.json, the serving export, the smoke sample)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from imgclf import artifacts, data, debugger, profiling, smoke_sample
from imgclf.checkpoint import TrainingState
from imgclf.config import TrainConfig
from imgclf.loop import SplitResult
from imgclf.precision import PrecisionPlan
from imgclf.presets import Preprocessing

logger = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    """A finished run: what it trained and how, its final state, and the best epoch's final evaluation."""

    cfg: TrainConfig
    model: nn.Module  # with the best epoch's weights
    splits: data.DatasetSplits
    preprocessing: Preprocessing
    plan: PrecisionPlan
    world_size: int
    started: float  # time.perf_counter() when the run started
    summary: dict[str, Any]  # the data's (DatasetSplits.summary)
    cache_info: dict[str, Any]  # what the feature cache did per split
    stop_on: list[str]  # the rules that stop training (--stop-on-rule)
    state: TrainingState
    metrics: dict[str, float]
    test: SplitResult  # with its confusion matrix
    rule_results: list[debugger.RuleResult]
    prediction_baseline: dict[str, Any] | None
    instruments: profiling.Instruments  # what watched the epochs (the profiler report reads it)


def write_outputs(result: TrainingResult) -> None:
    _write_reports(result)
    _write_model(result)
    logger.info("artifacts written to %s, reports to %s", result.cfg.model_dir, result.cfg.output_data_dir)


def _write_reports(result: TrainingResult) -> None:
    out, state, test = result.cfg.output_data_dir, result.state, result.test
    artifacts.write_json(out / "training-history.json", {"epochs": state.history, "best_epoch": state.best.epoch,
                                                         "stopped": state.stopped, "data": result.summary})
    confusion = test.confusion
    assert confusion is not None
    per_class = [(int(confusion[i, i]) / int(confusion[i].sum())) if int(confusion[i].sum()) else None
                 for i in range(result.splits.num_classes)]
    artifacts.write_json(out / "evaluation.json", {
        "split": "test", "model": f"best epoch {state.best.epoch}", "class_names": result.splits.class_names,
        "class_folders": result.splits.class_folders, "num_samples": test.total, "accuracy": test.accuracy,
        "average_loss": test.loss, "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(), "confusion_matrix_axes": "rows: true class, columns: predicted"})
    artifacts.write_json(out / "debugger-report.json",
                         debugger.report(result.rule_results, result.stop_on, state.stopped))
    watched = result.instruments
    profiling.write_report(out, watched.timer, watched.monitor or profiling.SystemMonitor(), watched.profiler, {
        "precision": result.plan.describe(), "feature_cache": result.cache_info, "world_size": result.world_size},
        tensorboard_dir=result.cfg.tensorboard_dir)


def _write_model(result: TrainingResult) -> None:
    cfg, splits, preprocessing = result.cfg, result.splits, result.preprocessing
    metadata = artifacts.build_metadata(
        backbone=cfg.backbone, class_names=splits.class_names, class_folders=splits.class_folders,
        preprocessing=preprocessing.to_metadata(), hyperparameters=cfg.hyperparameters(), metrics=result.metrics,
        best_epoch=result.state.best.epoch, weights=result.model.weights_identity,
        extra={"training": {"world_size": result.world_size, "precision": result.plan.describe(),
                            "seconds": round(time.perf_counter() - result.started, 2),
                            "stopped": result.state.stopped},
               # What the live model is compared with: the inference Lambda's metrics and the drift alarm.
               "prediction_baseline": result.prediction_baseline})
    validation_samples = calibration_samples = None
    if cfg.export:
        eval_tf = preprocessing.eval_transform()
        batch = max(cfg.batch_size, 64)
        validation_samples = DataLoader(data.ImageFolderDataset(splits.splits["valid"].samples, eval_tf),
                                        batch_size=batch)
        calibration_samples = DataLoader(data.ImageFolderDataset(splits.splits["train"].samples, eval_tf),
                                         batch_size=batch, shuffle=True,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    artifacts.write_model_artifacts(cfg.model_dir, result.model, metadata, export=cfg.export,
                                    validation_samples=validation_samples, calibration_samples=calibration_samples,
                                    bundle_serving_wheels=cfg.bundle_serving_wheels)
    if cfg.features_dir is None and not cfg.extract_features_only:
        # A trial on a feature set has no images to record (only the deployed, image-trained model needs it).
        smoke_sample.record(cfg.model_dir, splits.splits["test"].samples, splits.splits["test"].root)
