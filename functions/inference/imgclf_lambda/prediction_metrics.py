"""The inference Lambda's CloudWatch metrics, written as Embedded Metric Format by Powertools Metrics:
the log line is the metric, so no PutMetricData call, no extra permission and no added latency.

Names, units, namespace and dimensions come from imgclf.monitoring (the template's alarms and dashboard
are checked against the same module). One EMF record per prediction carries the prediction statistics
(service dimension only); the status class and, where the stack opts in, the predicted class are their
own single-metric records, since every metric of one EMF record shares its dimensions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from imgclf import monitoring

PREDICTED_CLASS_METRIC_ENV = "PREDICTED_CLASS_METRIC"  # "Enabled" emits PredictionsByClass


@dataclass(frozen=True)
class Outcome:
    """What one request came to, as the handler saw it."""

    status: int
    image_bytes: int | None = None
    endpoint_ms: float | None = None
    predictions: Sequence[Mapping[str, Any]] = ()


def make_metrics(service: str) -> Metrics:
    return Metrics(namespace=monitoring.NAMESPACE, service=service)


def class_metric_enabled(environ: Mapping[str, str]) -> bool:
    return environ.get(PREDICTED_CLASS_METRIC_ENV, "").strip().lower() == "enabled"


def record(metrics: Metrics, outcome: Outcome, *, service: str, class_metric: bool) -> None:
    """Add the request's metrics: to `metrics` (flushed by its log_metrics decorator) and as single
    records for the dimensioned counts (flushed at once)."""
    service_dimension = {monitoring.SERVICE_DIMENSION: service}
    _single(monitoring.REQUESTS, 1, {**service_dimension,
                                     monitoring.STATUS_CLASS_DIMENSION: monitoring.status_class(outcome.status)})
    if outcome.image_bytes is not None:
        _add(metrics, monitoring.IMAGE_SIZE, outcome.image_bytes)
    if outcome.endpoint_ms is not None:
        _add(metrics, monitoring.ENDPOINT_LATENCY, outcome.endpoint_ms)
    if not outcome.predictions:
        return
    stats = monitoring.prediction_stats([float(p["probability"]) for p in outcome.predictions])
    _add(metrics, monitoring.TOP1_PROBABILITY, stats.top1_probability)
    if stats.entropy is not None:
        _add(metrics, monitoring.PREDICTION_ENTROPY, stats.entropy)
    label = str(outcome.predictions[0]["label"])[: monitoring.MAX_DIMENSION_VALUE_LENGTH]
    # Always a property (Logs Insights can group by it at no metric cost); a dimension only on opt-in.
    metrics.add_metadata("predicted_class", label)
    if class_metric and label:
        _single(monitoring.PREDICTIONS_BY_CLASS, 1, {**service_dimension, monitoring.PREDICTED_CLASS_DIMENSION: label})


def _add(metrics: Metrics, spec: monitoring.MetricSpec, value: float) -> None:
    metrics.add_metric(name=spec.name, unit=MetricUnit(spec.unit), value=value)


def _single(spec: monitoring.MetricSpec, value: float, dimensions: dict[str, str]) -> None:
    # single_metric flushes one EMF record when the block ends; default_dimensions are its only dimensions.
    with single_metric(name=spec.name, unit=MetricUnit(spec.unit), value=value, namespace=monitoring.NAMESPACE,
                       default_dimensions=dimensions):
        pass
