"""Facts shared by training, serving, the AWS pipeline and local mode: the one source of truth.

Pure Python, no third-party imports: the pipeline Lambdas import this module too, and a Lambda must
not pay for torch at cold start.

- The log lines the training entry point prints, and the regexes that read them back (SageMaker's
  MetricDefinitions, the tuning objective, Optuna's objective in local mode).
- The hyperparameter search space (SageMaker tuning job and Optuna).
- Content types spoken by the endpoint and the inference Lambda.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# --------------------------------------------------------------------------------------------------
# Metrics: what train.py prints after every epoch, and how the rest of the project reads it back.
# Numbers are printed in fixed-point so the SageMaker-style regex `[0-9\.]+` always matches (no "1e-05").

OBJECTIVE_METRIC_NAME = "average test loss"
OBJECTIVE_TYPE: Literal["Minimize"] = "Minimize"

# name -> regex with one capture group. Names are SageMaker metric names (used in the tuning objective,
# the training job's FinalMetricDataList and the quality gate).
METRIC_REGEXES: dict[str, str] = {
    OBJECTIVE_METRIC_NAME: r"Test set: Average loss: ([0-9\.]+)",
    "test accuracy": r"Test set: Average loss: [0-9\.]+, Accuracy: ([0-9\.]+)",
    "train loss": r"Train set: Average loss: ([0-9\.]+)",
    "train accuracy": r"Train set: Average loss: [0-9\.]+, Accuracy: ([0-9\.]+)",
    "valid loss": r"Valid set: Average loss: ([0-9\.]+)",
    "valid accuracy": r"Valid set: Average loss: [0-9\.]+, Accuracy: ([0-9\.]+)",
    "epoch seconds": r"Epoch time: ([0-9\.]+) s",
    "images per second": r"Throughput: ([0-9\.]+) images/s",
}

TEST_ACCURACY_METRIC_NAME = "test accuracy"


def metric_definitions() -> list[dict[str, str]]:
    """MetricDefinitions for CreateTrainingJob / CreateHyperParameterTuningJob."""
    return [{"Name": name, "Regex": regex} for name, regex in METRIC_REGEXES.items()]


def format_split_line(split: Literal["Train", "Valid", "Test"], loss: float, accuracy: float,
                      correct: int, total: int) -> str:
    """The per-epoch line for one split. `loss` is the per-sample mean cross-entropy; accuracy in [0, 1]."""
    return f"{split} set: Average loss: {loss:.6f}, Accuracy: {accuracy:.6f} ({correct}/{total})"


def format_epoch_timing_line(seconds: float, images_per_second: float) -> str:
    return f"Epoch time: {seconds:.3f} s, Throughput: {images_per_second:.1f} images/s"


def parse_metrics(log_text: str) -> dict[str, list[float]]:
    """Every value of every metric in a training log, in order, read with the same regexes SageMaker uses."""
    series: dict[str, list[float]] = {}
    for name, regex in METRIC_REGEXES.items():
        values = [float(m.group(1)) for m in re.finditer(regex, log_text)]
        if values:
            series[name] = values
    return series


def final_metrics(log_text: str) -> dict[str, float]:
    """The last value of each metric, as SageMaker reports FinalMetricDataList."""
    return {name: values[-1] for name, values in parse_metrics(log_text).items()}


# --------------------------------------------------------------------------------------------------
# Hyperparameter search space (SageMaker HyperParameterTuningJob and Optuna in local mode).


@dataclass(frozen=True)
class ContinuousParameter:
    name: str
    min_value: float
    max_value: float
    scaling: Literal["Auto", "Linear", "Logarithmic", "ReverseLogarithmic"] = "Auto"


@dataclass(frozen=True)
class CategoricalParameter:
    name: str
    values: tuple[str, ...]


SEARCH_SPACE: tuple[ContinuousParameter | CategoricalParameter, ...] = (
    ContinuousParameter("lr", 0.001, 0.1, "Logarithmic"),
    CategoricalParameter("batch-size", ("32", "64", "128", "256", "512")),
)

# --------------------------------------------------------------------------------------------------
# Content types and payloads (endpoint, inference Lambda, local endpoint).

JSON_CONTENT_TYPE = "application/json"
JPEG_CONTENT_TYPE = "image/jpeg"
PNG_CONTENT_TYPE = "image/png"
# What the endpoint accepts. The last two are generic: the image type is sniffed from magic bytes.
IMAGE_CONTENT_TYPES: tuple[str, ...] = (
    JPEG_CONTENT_TYPE,
    PNG_CONTENT_TYPE,
    "application/x-image",
    "application/octet-stream",
)

_MAGIC_NUMBERS: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", JPEG_CONTENT_TYPE),
    (b"\x89PNG\r\n\x1a\n", PNG_CONTENT_TYPE),
)


def sniff_image_type(data: bytes) -> str | None:
    """'image/jpeg' or 'image/png' from the leading bytes, or None for anything else."""
    for magic, content_type in _MAGIC_NUMBERS:
        if data.startswith(magic):
            return content_type
    return None


DEFAULT_TOP_K = 5
MAX_TOP_K = 20
