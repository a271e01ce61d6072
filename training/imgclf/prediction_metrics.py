"""Prediction monitoring: the statistics of an answer, their CloudWatch names, the model's baseline, the
confidence-drift threshold. The one source of truth for every metric name the inference Lambda emits,
that template.yaml's alarms and dashboard read (tests/inference_lambda/test_prediction_metrics.py checks
the template against this module), that training records as the baseline and local mode's /metrics shows.

Pure Python, no third-party imports: the inference Lambda imports it from the pipeline layer.

Why not SageMaker Model Monitor: closed to new customers, and its drift checks are built for tabular
features, not image bytes. A classifier's own confidence is the signal that works for images: when the
live inputs move away from the training distribution, the top-1 probability drops and the entropy rises.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# --------------------------------------------------------------------------------------------------
# What the inference Lambda emits (CloudWatch embedded metric format, through Powertools Metrics).

NAMESPACE = "ImageClassifier"
# Powertools adds this dimension to every metric, valued POWERTOOLS_SERVICE_NAME (template.yaml: the
# stack's ResourcePrefix + "-inference", so two stacks in one account never mix their numbers).
SERVICE_DIMENSION = "service"
PREDICTED_CLASS_DIMENSION = "predicted_class"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    unit: str  # a CloudWatch unit, as Powertools' MetricUnit values spell them
    meaning: str


TOP_PROBABILITY = MetricSpec("TopProbability", "None", "top-1 probability of a 2xx answer, 0..1")
ENTROPY = MetricSpec("PredictionEntropy", "None",
                     "entropy (nats) of the top-k probabilities plus the rest of the mass as one bucket")
ENDPOINT_LATENCY = MetricSpec("EndpointLatency", "Milliseconds", "InvokeEndpoint round trip seen by the Lambda")
IMAGE_SIZE = MetricSpec("ImageSize", "Bytes", "bytes of the image in a parsed request")
# 0 or 1 per request: Average is the error rate, Sum the count, SampleCount the requests. One metric per
# status class, not a StatusClass dimension, so each rate alarm reads a single metric (no metric math).
CLIENT_ERROR = MetricSpec("ClientError", "Count", "1 when the answer is 4xx, else 0")
SERVER_ERROR = MetricSpec("ServerError", "Count", "1 when the answer is 5xx, else 0")
PREDICTIONS = MetricSpec("Predictions", "Count", "one per 2xx answer, by predicted class (opt-in dimension)")

METRICS: tuple[MetricSpec, ...] = (TOP_PROBABILITY, ENTROPY, ENDPOINT_LATENCY, IMAGE_SIZE, CLIENT_ERROR,
                                   SERVER_ERROR, PREDICTIONS)
METRIC_NAMES: frozenset[str] = frozenset(m.name for m in METRICS)

# A dimension value is a separate custom metric (CloudWatch bills each, $0.30 a month at the first tier:
# https://aws.amazon.com/cloudwatch/pricing/), so the predicted class becomes a dimension only when the
# operator opts in (template parameter PredictedClassMetric) and the model has at most this many classes;
# otherwise the class travels as EMF metadata: searchable in Logs Insights, no metric, no cost.
MAX_CLASS_DIMENSION_VALUES = 20

# The statistics are computed on this many top probabilities (the rest of the mass is one bucket). The
# Lambda always asks the endpoint for at least this many, whatever top_k the client wants, so the live
# statistic and the training baseline are the same quantity.
STATISTICS_TOP_K = 5


def status_class(status: int) -> str:
    """"2xx", "4xx" or "5xx" (any other status is reported by its hundreds)."""
    return f"{status // 100}xx"


def answer_statistics(probabilities: Sequence[float]) -> tuple[float, float]:
    """(top-1 probability, entropy in nats) of an answer's probabilities, highest first, at most
    STATISTICS_TOP_K of them used; the mass they leave is one more outcome (a lower bound of the full
    distribution's entropy, the same bound in training and in production)."""
    top = sorted((max(0.0, float(p)) for p in probabilities), reverse=True)[:STATISTICS_TOP_K]
    if not top:
        raise ValueError("an answer without probabilities")
    rest = max(0.0, 1.0 - sum(top))
    entropy = -sum(p * math.log(p) for p in [*top, rest] if p > 0)
    return top[0], entropy


# --------------------------------------------------------------------------------------------------
# The baseline: the same statistics on the validation split, recorded in metadata.json at training.

BASELINE_KEY = "prediction_baseline"


def _summary(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    quantiles = statistics.quantiles(ordered, n=20, method="inclusive") if len(ordered) > 1 else ordered * 19
    return {"mean": statistics.fmean(ordered), "std": statistics.pstdev(ordered) if len(ordered) > 1 else 0.0,
            "p05": quantiles[0], "p50": statistics.median(ordered), "p95": quantiles[-1],
            "min": ordered[0], "max": ordered[-1]}


def baseline(answers: Iterable[Sequence[float]], split: str = "valid") -> dict[str, Any]:
    """metadata.json's prediction_baseline from the probabilities of every image of a split (each sorted
    or not, full distribution or top-k)."""
    stats = [answer_statistics(p) for p in answers]
    if not stats:
        raise ValueError(f"no {split} predictions to build a baseline from")
    top1 = [s[0] for s in stats]
    return {"split": split, "samples": len(stats), "top_k": STATISTICS_TOP_K,
            TOP_PROBABILITY.name: _summary(top1), ENTROPY.name: _summary([s[1] for s in stats]),
            "drift_threshold": drift_threshold(statistics.fmean(top1), statistics.pstdev(top1))}


# --------------------------------------------------------------------------------------------------
# The confidence-drift alarm (template.yaml ConfidenceDriftAlarm; the pipeline sets its threshold from
# the deployed model's baseline).
#
# Derivation. Under the baseline, a request's top-1 probability X has mean mu and standard deviation
# sigma (measured on the validation split). The alarm looks at the mean of the n >= DRIFT_MIN_SAMPLES
# requests of one DRIFT_PERIOD_SECONDS window. For independent requests the window mean has standard
# deviation sigma / sqrt(n) and, by the central limit theorem (X is bounded in [0, 1], so n = 100 is
# plenty), is close to normal. Alarming when
#     window mean < mu - z * sigma / sqrt(n),    z = Phi^-1(1 - DRIFT_FALSE_ALARM_RATE)
# fires on an unshifted stream with probability DRIFT_FALSE_ALARM_RATE per window: 0.1 % with z = 3.09,
# about one false alarm in 6 weeks of hourly windows (and fewer: larger windows are less noisy, and the
# alarm needs DRIFT_EVALUATION_PERIODS breaching windows in a row). A shift of the mean by delta is
# caught in a window with probability Phi(delta * sqrt(n) / sigma - z): with sigma = 0.2 and n = 100, a
# drop of 0.1 is caught almost surely (Phi(1.9) = 97 %). Windows with fewer than n requests are not
# judged (the alarm's metric math maps them to 1.0), because the margin would not hold for them.

DRIFT_PERIOD_SECONDS = 3600
DRIFT_MIN_SAMPLES = 100
DRIFT_EVALUATION_PERIODS = 2
DRIFT_FALSE_ALARM_RATE = 0.001


def drift_margin(std: float, window_samples: int = DRIFT_MIN_SAMPLES,
                 false_alarm_rate: float = DRIFT_FALSE_ALARM_RATE) -> float:
    """How far below the baseline mean a window mean of `window_samples` requests may fall by chance
    with probability `false_alarm_rate` (see the derivation above)."""
    if window_samples < 1 or not 0 < false_alarm_rate < 0.5:
        raise ValueError("window_samples >= 1 and 0 < false_alarm_rate < 0.5")
    z = statistics.NormalDist().inv_cdf(1 - false_alarm_rate)
    return z * std / math.sqrt(window_samples)


def drift_threshold(mean: float, std: float, window_samples: int = DRIFT_MIN_SAMPLES,
                    false_alarm_rate: float = DRIFT_FALSE_ALARM_RATE) -> float:
    """The alarm's threshold on the window's mean top-1 probability."""
    return round(max(0.0, mean - drift_margin(std, window_samples, false_alarm_rate)), 6)


def drifted(window: Sequence[float], threshold: float, min_samples: int = DRIFT_MIN_SAMPLES) -> bool | None:
    """What the alarm decides for one window of top-1 probabilities: None (too few to judge), True, False."""
    if len(window) < min_samples:
        return None
    return statistics.fmean(window) < threshold
