"""Facts shared by training, serving, the AWS pipeline and local mode: the one source of truth.

Pure Python, no third-party imports: the pipeline Lambdas import this module too, and a Lambda must
not pay for torch at cold start.

- The log lines the training entry point prints, and the regexes that read them back (SageMaker's
  MetricDefinitions, the tuning objective, Optuna's objective in local mode), the debugging rules' too.
- Where train.py writes TensorBoard output (and the training job's TensorBoardOutputConfig uploads it).
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

# Four SageMaker Debugger rules, evaluated inside train.py (imgclf.debugger): our name ->
# SageMaker's rule name (the name in the log line, the metric and, where Debugger is opted in, the
# training job's DebugRuleConfigurations).
DEBUGGER_RULES: dict[str, str] = {
    "loss_not_decreasing": "LossNotDecreasing",
    "overfit": "Overfit",
    "overtraining": "Overtraining",
    "poor_weight_initialization": "PoorWeightInitialization",
}
# A rule's status (SageMaker's RuleEvaluationStatus words) and the metric value that stands for it.
# Error (the rule could not evaluate) has no value: its line carries no number, so no datapoint.
RULE_NO_ISSUES = "NoIssuesFound"
RULE_ISSUES_FOUND = "IssuesFound"
RULE_ERROR = "Error"
RULE_METRIC_VALUES: dict[str, int] = {RULE_NO_ISSUES: 0, RULE_ISSUES_FOUND: 1}


def rule_metric_name(sagemaker_rule: str) -> str:
    """The training metric of a rule: 1 = IssuesFound, 0 = NoIssuesFound (e.g. "rule Overfit")."""
    return f"rule {sagemaker_rule}"


def _rule_regex(sagemaker_rule: str) -> str:
    return rf"Debugger rule {sagemaker_rule}: ([01]) \("


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
    **{rule_metric_name(rule): _rule_regex(rule) for rule in DEBUGGER_RULES.values()},
}

# The validation split's top-1 probability (imgclf.monitoring's prediction baseline), also as training
# metrics: FinalMetricDataList then carries it to the pipeline, which sets the confidence-drift alarm's
# threshold from it without opening model.tar.gz.
BASELINE_COUNT_METRIC_NAME = "baseline count"
BASELINE_TOP1_MEAN_METRIC_NAME = "baseline top1 mean"
BASELINE_TOP1_STD_METRIC_NAME = "baseline top1 std"
METRIC_REGEXES.update({
    BASELINE_COUNT_METRIC_NAME: r"Prediction baseline: ([0-9]+) validation images",
    BASELINE_TOP1_MEAN_METRIC_NAME: r"Prediction baseline: [0-9]+ validation images, top-1 mean ([0-9\.]+)",
    BASELINE_TOP1_STD_METRIC_NAME: (r"Prediction baseline: [0-9]+ validation images, top-1 mean [0-9\.]+,"
                                    r" std ([0-9\.]+)"),
})


def format_baseline_line(count: int, top1_mean: float, top1_std: float) -> str:
    return f"Prediction baseline: {int(count)} validation images, top-1 mean {top1_mean:.6f}, std {top1_std:.6f}"

TEST_ACCURACY_METRIC_NAME = "test accuracy"

# What SageMaker accepts in AlgorithmSpecification.MetricDefinitions (CreateTrainingJob and a tuning job's
# TrainingJobDefinition alike): at most 40 definitions, names of 1-255 and regexes of 1-500 characters.
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_AlgorithmSpecification.html
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_MetricDefinition.html
# botocore checks none of these maxima client-side; the service refuses the request.
MAX_METRIC_DEFINITIONS = 40
MAX_METRIC_NAME_LENGTH = 255
MAX_METRIC_REGEX_LENGTH = 500


def metric_definitions() -> list[dict[str, str]]:
    """MetricDefinitions for CreateTrainingJob / CreateHyperParameterTuningJob (within SageMaker's limits)."""
    definitions = [{"Name": name, "Regex": regex} for name, regex in METRIC_REGEXES.items()]
    if len(definitions) > MAX_METRIC_DEFINITIONS:
        raise ValueError(f"{len(definitions)} metric definitions; SageMaker accepts {MAX_METRIC_DEFINITIONS}")
    for definition in definitions:
        if not (0 < len(definition["Name"]) <= MAX_METRIC_NAME_LENGTH
                and 0 < len(definition["Regex"]) <= MAX_METRIC_REGEX_LENGTH):
            raise ValueError(f"metric {definition['Name']!r}: name or regex too long for SageMaker")
    return definitions


def format_rule_line(sagemaker_rule: str, status: str, summary: str = "") -> str:
    """A rule's result as train.py prints it after every evaluation, read back by the rule's metric regex:
    `Debugger rule Overfit: 1 (IssuesFound) <evidence>`; Error lines carry no number."""
    value = RULE_METRIC_VALUES.get(status)
    shown = f"{value} ({status})" if value is not None else status
    return f"Debugger rule {sagemaker_rule}: {shown} {summary}".rstrip()


# TensorBoard: train.py writes the learning curves (event files) and the torch.profiler trace under
# <SM_OUTPUT_DIR>/tensorboard/<run>/, the folder the final training job's TensorBoardOutputConfig uploads
# to S3 while the job runs. /opt/ml/output/tensorboard is also SageMaker's default LocalPath:
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_TensorBoardOutputConfig.html
TENSORBOARD_FOLDER = "tensorboard"
SAGEMAKER_OUTPUT_DIR = "/opt/ml/output"  # SM_OUTPUT_DIR in every SageMaker training container
TENSORBOARD_LOCAL_PATH = f"{SAGEMAKER_OUTPUT_DIR}/{TENSORBOARD_FOLDER}"


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
# Serving dependencies in model.tar.gz: the final training job (its model is the one deployed) bundles them
# as wheels (imgclf.wheelhouse); tuning trials do not (their models are never served). train.py's flag and
# the pipeline's final CreateTrainingJob hyperparameter.

BUNDLE_SERVING_WHEELS_HYPERPARAMETER = "bundle-serving-wheels"

# --------------------------------------------------------------------------------------------------
# Cached backbone features (imgclf.features): with a frozen backbone the pipeline runs train.py once with
# EXTRACT_FEATURES_HYPERPARAMETER (on the training instance type), then every tuning trial reads the feature
# set as the FEATURES_CHANNEL channel (SM_CHANNEL_FEATURES) and trains only the head, on a CPU instance.

FEATURES_CHANNEL = "features"
EXTRACT_FEATURES_HYPERPARAMETER = "extract-features-only"
# The feature cache's folder under the checkpoint dir (/opt/ml/checkpoints/feature-cache, which the
# extraction job's CheckpointConfig syncs to S3), and the file an extraction job writes last.
FEATURE_CACHE_FOLDER = "feature-cache"
FEATURE_SET_MANIFEST = "feature-set.json"

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

# --------------------------------------------------------------------------------------------------
# Inference request limits and the top-k option (inference Lambda, endpoint container, local server).

# SageMaker real-time InvokeEndpoint refuses request bodies above its payload quota (6 MB); 5 MiB keeps a
# margin under it. Every entry point refuses a bigger image with 413 before it spends anything. Lambda's
# own 6 MB invocation limit counts the base64-encoded event, so behind a Function URL an image tops out
# near 4.4 MB and Lambda answers 413 itself above that.
MAX_IMAGE_BYTES = 5 * 1024 * 1024

# top_k travels to the endpoint in SageMaker's CustomAttributes (header X-Amzn-SageMaker-Custom-Attributes),
# as "top_k=<n>"; other comma-separated key=value pairs may ride along and are ignored here.
TOP_K_ATTRIBUTE = "top_k"


def parse_top_k(value: object) -> int:
    """A top_k from JSON or text ("5" or 5), checked against 1..MAX_TOP_K. ValueError says what is wrong."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"top_k must be an integer from 1 to {MAX_TOP_K}")
    if isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit()):
            raise ValueError(f"top_k must be an integer from 1 to {MAX_TOP_K}, got {value!r:.40}")
        value = int(text)
    if not 1 <= value <= MAX_TOP_K:
        raise ValueError(f"top_k must be an integer from 1 to {MAX_TOP_K}, got {value}")
    return value


def top_k_custom_attributes(top_k: int) -> str:
    """CustomAttributes for InvokeEndpoint that ask for `top_k` predictions."""
    return f"{TOP_K_ATTRIBUTE}={parse_top_k(top_k)}"


def top_k_from_custom_attributes(attributes: str | None) -> int | None:
    """The top_k inside CustomAttributes ("top_k=3,trace=1"), None when absent; ValueError when invalid."""
    for pair in (attributes or "").split(","):
        key, _, value = pair.partition("=")
        if key.strip() == TOP_K_ATTRIBUTE:
            return parse_top_k(value)
    return None


# CreateTrainingJob's TrainingJobName pattern (a tuning job's trials are named within it too): safe as a
# folder name. https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateTrainingJob.html
TRAINING_JOB_NAME_PATTERN = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")


def check_job_name(job_name: str) -> str:
    """TRAINING_JOB_NAME as SageMaker names jobs; ValueError for anything else (it becomes a folder name)."""
    if not TRAINING_JOB_NAME_PATTERN.fullmatch(job_name):
        raise ValueError(f"TRAINING_JOB_NAME {job_name!r:.80} is not a SageMaker training job name "
                         f"({TRAINING_JOB_NAME_PATTERN.pattern})")
    return job_name


# The backbones train.py builds, each with a builder in imgclf.models.BACKBONES (tests/training/test_models.py
# keeps the two equal); the template's Backbone AllowedValues and the pipeline's settings check read this.
BACKBONE_NAMES: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "efficientnet_lite0")
DEFAULT_BACKBONE = "resnet18"
