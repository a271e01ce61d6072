"""The local endpoint's prediction statistics at GET /metrics, in Prometheus text format: the same
statistics the inference Lambda sends CloudWatch (imgclf.prediction_metrics: its names, snake-cased,
prefixed imgclf_), so a local run is watched the way the live model is.

prometheus_client (the Prometheus project's own client) does the bookkeeping and the text format. The
server runs several uvicorn worker processes; each keeps its own numbers, so `serve` points
PROMETHEUS_MULTIPROC_DIR at a fresh folder before the workers start and /metrics adds up every worker's
(the library's multiprocess mode). A single-process app (tests, an embedded create_app) keeps its own
registry.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess

from imgclf import prediction_metrics as pm

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus text exposition format 0.0.4
PREFIX = "imgclf_"
_PROBABILITY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
_ENTROPY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
_LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
_SIZE_BUCKETS = (16e3, 64e3, 256e3, 1e6, 2e6, 4e6, 8e6)


def prometheus_name(spec: pm.MetricSpec) -> str:
    """TopProbability -> imgclf_top_probability (plus the unit suffix Prometheus' conventions ask for)."""
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", spec.name).lower()
    suffix = {"Milliseconds": "_milliseconds", "Bytes": "_bytes"}.get(spec.unit, "")
    return f"{PREFIX}{snake}{suffix}"


class PredictionStats:
    """Histograms of the answers' top-1 probability and entropy, the latency and the image size, and
    responses counted by status class."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.top_probability = Histogram(prometheus_name(pm.TOP_PROBABILITY), pm.TOP_PROBABILITY.meaning,
                                         buckets=_PROBABILITY_BUCKETS, registry=reg)
        self.entropy = Histogram(prometheus_name(pm.ENTROPY), pm.ENTROPY.meaning, buckets=_ENTROPY_BUCKETS,
                                 registry=reg)
        self.latency = Histogram(prometheus_name(pm.ENDPOINT_LATENCY), "inference time of a request, ms",
                                 buckets=_LATENCY_BUCKETS_MS, registry=reg)
        self.image_size = Histogram(prometheus_name(pm.IMAGE_SIZE), pm.IMAGE_SIZE.meaning,
                                    buckets=_SIZE_BUCKETS, registry=reg)
        self.responses = Counter(f"{PREFIX}responses", "answers by status class (2xx, 4xx, 5xx)",
                                 ["status_class"], registry=reg)

    def observe(self, status: int, image_bytes: int, milliseconds: float, answer_text: str | None) -> None:
        self.responses.labels(status_class=pm.status_class(status)).inc()
        if image_bytes:
            self.image_size.observe(image_bytes)
        if status != 200 or not answer_text:
            return
        self.latency.observe(milliseconds)
        probabilities = _probabilities(answer_text)
        if probabilities:
            top1, entropy = pm.answer_statistics(probabilities)
            self.top_probability.observe(top1)
            self.entropy.observe(entropy)

    def exposition(self) -> bytes:
        """The text /metrics answers: every worker's numbers in multiprocess mode, else this registry's."""
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def _probabilities(answer_text: str) -> list[float]:
    try:
        document: Any = json.loads(answer_text)
        return [float(p["probability"]) for p in document["predictions"]]
    except (ValueError, KeyError, TypeError):
        return []
