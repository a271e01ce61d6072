"""Local mode's prediction monitoring: the inference Lambda's statistics (imgclf.monitoring: top-1
probability, entropy, status class, latency, image size) kept by the local endpoint and served at
`GET /metrics` in Prometheus' text format, with the model's validation baseline beside them.

prometheus_client writes the format. With several uvicorn workers each is its own process, so serve()
points PROMETHEUS_MULTIPROC_DIR at a folder and /metrics aggregates every worker's samples
(prometheus_client's multiprocess mode); without it (one process, tests) the app's own registry answers.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from imgclf import monitoring

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
PREFIX = "imgclf_"
_PROBABILITY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
_ENTROPY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
_LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
_SIZE_BUCKETS = (10_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_242_880)
# Prometheus base units (https://prometheus.io/docs/practices/naming/#base-units); "None" has no suffix.
_UNIT_SUFFIX = {"None": "", "Milliseconds": "_milliseconds", "Bytes": "_bytes", "Count": "_total"}


def prometheus_name(spec: monitoring.MetricSpec) -> str:
    """`Top1Probability` -> `imgclf_top1_probability`; units as suffixes (counters end in _total)."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", spec.name).lower()
    return f"{PREFIX}{snake}{_UNIT_SUFFIX[spec.unit]}"


class PredictionMetrics:
    """The live statistics of one app (one worker), and the model's baseline as gauges."""

    def __init__(self, metadata: Mapping[str, Any] | None = None):
        self.registry = CollectorRegistry()
        # The Counter's name is given without _total: prometheus_client appends it.
        self.requests = Counter(prometheus_name(monitoring.REQUESTS).removesuffix("_total"),
                                monitoring.REQUESTS.description, ["status_class"], registry=self.registry)
        self.top1 = Histogram(prometheus_name(monitoring.TOP1_PROBABILITY), monitoring.TOP1_PROBABILITY.description,
                              buckets=_PROBABILITY_BUCKETS, registry=self.registry)
        self.entropy = Histogram(prometheus_name(monitoring.PREDICTION_ENTROPY),
                                 monitoring.PREDICTION_ENTROPY.description, buckets=_ENTROPY_BUCKETS,
                                 registry=self.registry)
        self.latency = Histogram(prometheus_name(monitoring.ENDPOINT_LATENCY),
                                 "inference time of the local endpoint", buckets=_LATENCY_BUCKETS_MS,
                                 registry=self.registry)
        self.image_size = Histogram(prometheus_name(monitoring.IMAGE_SIZE), monitoring.IMAGE_SIZE.description,
                                    buckets=_SIZE_BUCKETS, registry=self.registry)
        baseline = (metadata or {}).get("prediction_baseline") or {}
        # Every worker holds the same baseline: "max" reports it once across workers.
        gauge = Gauge(f"{PREFIX}baseline", "the model's validation-split statistic (metadata.json)",
                      ["statistic", "moment"], registry=self.registry, multiprocess_mode="max")
        for spec in (monitoring.TOP1_PROBABILITY, monitoring.PREDICTION_ENTROPY):
            for moment, value in (baseline.get(spec.name) or {}).items():
                gauge.labels(prometheus_name(spec).removeprefix(PREFIX), moment).set(float(value))
        if baseline:
            gauge.labels("count", "n").set(float(baseline["count"]))
            threshold = monitoring.drift_threshold(baseline)
            gauge.labels(prometheus_name(monitoring.TOP1_PROBABILITY).removeprefix(PREFIX),
                         "drift_threshold").set(threshold)

    def record(self, status: int, image_bytes: int, milliseconds: float, answer_text: str | None) -> None:
        self.requests.labels(monitoring.status_class(status)).inc()
        if image_bytes:
            self.image_size.observe(image_bytes)
        if status != 200 or answer_text is None:
            return
        self.latency.observe(milliseconds)
        predictions = json.loads(answer_text).get("predictions") or []
        if predictions:
            stats = monitoring.prediction_stats([float(p["probability"]) for p in predictions])
            self.top1.observe(stats.top1_probability)
            if stats.entropy is not None:
                self.entropy.observe(stats.entropy)

    def exposition(self) -> bytes:
        """The text format of every worker's samples (multiprocess mode) or of this app's."""
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
