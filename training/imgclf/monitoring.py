"""Prediction monitoring: the one source of truth for the inference Lambda's CloudWatch metrics (names,
units, namespace, dimensions), the per-prediction statistics, the validation baseline training records
in metadata.json, and the confidence-drift threshold derived from it.

Pure Python, no third-party imports: the inference Lambda (through the pipeline layer), training, local
mode's server and the template tests all import this module. SageMaker Model Monitor is closed to new
customers and built for tabular data; these statistics need only the answer the endpoint already sends.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist, fmean
from typing import Any

from imgclf import contract

# --------------------------------------------------------------------------------------------------
# CloudWatch metrics (Embedded Metric Format, written by Powertools Metrics: no PutMetricData call).
# Units are CloudWatch's StandardUnit names:
# https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_MetricDatum.html

NAMESPACE = "imgclf/Inference"
# Powertools adds `service` (POWERTOOLS_SERVICE_NAME) as a dimension to every metric; the template sets
# it to the endpoint name, so two stacks in one account keep their metrics apart.
SERVICE_DIMENSION = "service"
STATUS_CLASS_DIMENSION = "StatusClass"
PREDICTED_CLASS_DIMENSION = "PredictedClass"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    unit: str
    description: str
    dimensions: tuple[str, ...] = (SERVICE_DIMENSION,)


TOP1_PROBABILITY = MetricSpec("Top1Probability", "None", "probability of the top class, 0..1")
PREDICTION_ENTROPY = MetricSpec(
    "PredictionEntropy", "None", "entropy (nats) of the top-ENTROPY_TOP_K probabilities plus the rest as one bucket")
ENDPOINT_LATENCY = MetricSpec("EndpointLatency", "Milliseconds", "InvokeEndpoint round trip seen by the Lambda")
IMAGE_SIZE = MetricSpec("ImageSize", "Bytes", "size of the image the client sent")
REQUESTS = MetricSpec("Requests", "Count", "prediction requests by status class (2xx/4xx/5xx)",
                      (SERVICE_DIMENSION, STATUS_CLASS_DIMENSION))
# One custom metric per class: emitted only where the stack opts in (PredictedClassMetric=Enabled), which
# its description limits to models with few classes. Otherwise the class goes into the EMF record as a
# property (searchable in Logs Insights, no metric cost).
PREDICTIONS_BY_CLASS = MetricSpec("PredictionsByClass", "Count", "answers whose top class is this class",
                                  (SERVICE_DIMENSION, PREDICTED_CLASS_DIMENSION))
PREDICTION_METRICS: tuple[MetricSpec, ...] = (TOP1_PROBABILITY, PREDICTION_ENTROPY, ENDPOINT_LATENCY, IMAGE_SIZE)
ALL_METRICS: tuple[MetricSpec, ...] = (*PREDICTION_METRICS, REQUESTS, PREDICTIONS_BY_CLASS)
STATUS_CLASSES: tuple[str, ...] = ("2xx", "4xx", "5xx")
# CloudWatch dimension values are 1-1024 characters (API_Dimension.html); class names are folder names.
MAX_DIMENSION_VALUE_LENGTH = 1024


def status_class(status: int) -> str:
    """'2xx', '4xx' or '5xx' for an HTTP status the Lambda answers."""
    if not 200 <= status < 600 or 300 <= status < 400:
        raise ValueError(f"status {status} is not one the inference Lambda answers")
    return f"{status // 100}xx"


# --------------------------------------------------------------------------------------------------
# Per-prediction statistics: the same function on the endpoint's answer (Lambda, local server) and on the
# full softmax of the validation split (training), so baseline and production measure the same thing.

# The endpoint answers the top-k a client asks for (default 5), not the whole distribution. Entropy is
# therefore taken over the top ENTROPY_TOP_K probabilities plus the remaining mass as one bucket: exact
# for models with at most ENTROPY_TOP_K classes, a consistent lower bound otherwise, and computed the same
# way on the baseline. An answer with fewer than ENTROPY_TOP_K entries that is not the whole distribution
# yields no entropy (no datapoint) rather than a different statistic.
ENTROPY_TOP_K = contract.DEFAULT_TOP_K
_WHOLE_DISTRIBUTION_TOLERANCE = 1e-3


@dataclass(frozen=True)
class PredictionStats:
    top1_probability: float
    entropy: float | None


def prediction_stats(probabilities: Sequence[float]) -> PredictionStats:
    """Top-1 probability and top-ENTROPY_TOP_K entropy from probabilities (any order, any length >= 1)."""
    ranked = sorted((float(p) for p in probabilities), reverse=True)
    if not ranked or any(not 0.0 <= p <= 1.0 + _WHOLE_DISTRIBUTION_TOLERANCE for p in ranked):
        raise ValueError("probabilities must be a non-empty list of numbers in [0, 1]")
    head = ranked[:ENTROPY_TOP_K]
    rest = max(0.0, 1.0 - sum(head))
    entropy: float | None
    if len(head) < ENTROPY_TOP_K and rest > _WHOLE_DISTRIBUTION_TOLERANCE:
        entropy = None
    else:
        entropy = -sum(p * math.log(p) for p in (*head, rest) if p > 0.0)
    return PredictionStats(min(ranked[0], 1.0), entropy)


@dataclass(frozen=True)
class StatSums:
    """Count, sum and sum of squares of one statistic: what training all-reduces over its processes."""

    count: int = 0
    total: float = 0.0
    squares: float = 0.0

    @classmethod
    def of(cls, values: Iterable[float]) -> StatSums:
        items = [float(v) for v in values]
        return cls(len(items), math.fsum(items), math.fsum(v * v for v in items))

    def summary(self) -> dict[str, float] | None:
        if self.count == 0:
            return None
        mean = self.total / self.count
        variance = max(0.0, self.squares / self.count - mean * mean)
        return {"mean": round(mean, 6), "std": round(math.sqrt(variance), 6)}


def baseline(top1: StatSums, entropy: StatSums, split: str = "valid") -> dict[str, Any]:
    """The statistics of a split's predictions, as metadata.json["prediction_baseline"] records them."""
    if top1.count == 0:
        raise ValueError("no predictions to build a baseline from")
    return {
        "split": split,
        "count": top1.count,
        "entropy_top_k": ENTROPY_TOP_K,
        TOP1_PROBABILITY.name: top1.summary(),
        PREDICTION_ENTROPY.name: entropy.summary(),
    }


def baseline_of(stats: Iterable[PredictionStats], split: str = "valid") -> dict[str, Any]:
    items = list(stats)
    return baseline(StatSums.of(s.top1_probability for s in items),
                    StatSums.of(s.entropy for s in items if s.entropy is not None), split)


# --------------------------------------------------------------------------------------------------
# Confidence drift.
#
# Derivation. With no drift, production top-1 probabilities p_i are draws from the distribution the
# validation split estimates: mean mu, standard deviation sigma (baseline, n_v validation images). The
# mean of one alarm window with n >= N requests is approximately Normal(mu, sigma^2 / n) (central limit
# theorem; p is bounded in [0, 1], so N >= 30 suffices). mu itself is estimated from n_v images with
# standard error sigma / sqrt(n_v). So window_mean - mu_hat has standard deviation at most
#     s = sigma * sqrt(1/N + 1/n_v)
# and the alarm fires when a window's mean falls below
#     threshold = mu_hat - z * s,
# one-sided, so a window without drift breaches with probability <= Phi(-z) = alpha. Windows with fewer
# than N requests are not evaluated (the alarm's metric math yields no datapoint; missing = not
# breaching): with few requests the mean says little. The alarm needs DRIFT_DATAPOINTS_TO_ALARM breaching
# windows out of DRIFT_EVALUATION_PERIODS, so a false alarm per evaluation has probability about
# C(M, D) * alpha^D (3 * 0.005^2 = 7.5e-5 for the defaults: under one a year with hourly windows).


@dataclass(frozen=True)
class DriftPolicy:
    period_seconds: int = 3600
    min_samples: int = 100  # N
    alpha: float = 0.005  # per-window false-alarm probability
    evaluation_periods: int = 3
    datapoints_to_alarm: int = 2

    @property
    def z(self) -> float:
        return -NormalDist().inv_cdf(self.alpha)


DRIFT_POLICY = DriftPolicy()


def drift_threshold(prediction_baseline: Mapping[str, Any], policy: DriftPolicy = DRIFT_POLICY) -> float:
    """The window-mean top-1 probability below which a window counts as drifted (derivation above)."""
    top1 = prediction_baseline[TOP1_PROBABILITY.name]
    mean, std, count = float(top1["mean"]), float(top1["std"]), int(prediction_baseline["count"])
    if count < 2 or policy.min_samples < 1:
        raise ValueError("the baseline needs at least 2 validation predictions and the window at least 1")
    spread = std * math.sqrt(1.0 / policy.min_samples + 1.0 / count)
    return max(0.0, mean - policy.z * spread)


def drifted_windows(top1_stream: Sequence[tuple[float, float]], prediction_baseline: Mapping[str, Any],
                    policy: DriftPolicy = DRIFT_POLICY) -> list[bool]:
    """For a stream of (timestamp s, top-1 probability): per evaluated window (>= N samples), whether its
    mean is below the threshold. What the alarm's metric math computes per period (tests, README)."""
    threshold = drift_threshold(prediction_baseline, policy)
    windows: dict[int, list[float]] = {}
    for timestamp, value in top1_stream:
        windows.setdefault(int(timestamp // policy.period_seconds), []).append(value)
    return [fmean(values) < threshold for _, values in sorted(windows.items()) if len(values) >= policy.min_samples]


def alarm_fires(breaches: Sequence[bool], policy: DriftPolicy = DRIFT_POLICY) -> bool:
    """CloudWatch's M-out-of-N rule over consecutive evaluated windows."""
    span = policy.evaluation_periods
    return any(sum(breaches[i:i + span]) >= policy.datapoints_to_alarm for i in range(max(1, len(breaches) - span + 1)))
