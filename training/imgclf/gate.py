"""The quality gate: may a freshly trained model replace the live one?

A model passes when its test accuracy (a fraction in [0, 1], contract.TEST_ACCURACY_METRIC_NAME) is at
least the threshold AND not worse than the live model's. The live model's accuracy is recorded as a tag
(LIVE_ACCURACY_TAG) on the endpoint config it serves from: a blue/green rollback restores the old
config, and with it the old accuracy, so the gate never compares with a model that is not serving.

Pure Python: used by the pipeline's QualityGate Lambda and by local mode.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from imgclf.contract import TEST_ACCURACY_METRIC_NAME

LIVE_ACCURACY_TAG = "imgclf:test-accuracy"


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    test_accuracy: float | None
    threshold: float
    live_accuracy: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fraction(value: float, what: str) -> float:
    value = float(value)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be a fraction in [0, 1], got {value!r}")
    return value


def decide(test_accuracy: float | None, threshold: float, live_accuracy: float | None = None) -> GateDecision:
    """Pass iff test_accuracy >= threshold and (no live model or test_accuracy >= live_accuracy).

    A missing test accuracy rejects (the training job did not report it). Equal to the live model passes:
    a retrain on a new dataset version with the same score is still the fresher model.
    """
    threshold = _fraction(threshold, "threshold")
    live = None if live_accuracy is None else _fraction(live_accuracy, "live accuracy")
    if test_accuracy is None:
        reason = f"no '{TEST_ACCURACY_METRIC_NAME}' metric was reported"
        return GateDecision(False, reason, None, threshold, live)
    accuracy = _fraction(test_accuracy, TEST_ACCURACY_METRIC_NAME)
    if accuracy < threshold:
        return GateDecision(
            False,
            f"test accuracy {accuracy:.4f} is below the threshold {threshold:.4f}",
            accuracy,
            threshold,
            live,
        )
    if live is not None and accuracy < live:
        return GateDecision(
            False,
            f"test accuracy {accuracy:.4f} is worse than the live model's {live:.4f}",
            accuracy,
            threshold,
            live,
        )
    against = "no live model" if live is None else f"live model {live:.4f}"
    return GateDecision(
        True,
        f"test accuracy {accuracy:.4f} >= threshold {threshold:.4f}, {against}",
        accuracy,
        threshold,
        live,
    )


def accuracy_from_final_metrics(final_metric_data: Iterable[Mapping[str, Any]]) -> float | None:
    """Test accuracy from a training job's FinalMetricDataList ([{"MetricName", "Value", ...}])."""
    for metric in final_metric_data:
        if metric.get("MetricName") == TEST_ACCURACY_METRIC_NAME:
            return float(metric["Value"])
    return None


def accuracy_from_tags(tags: Iterable[Mapping[str, str]]) -> float | None:
    """The accuracy recorded on the live endpoint config ([{"Key", "Value"}]), or None when not recorded."""
    for tag in tags:
        if tag.get("Key") == LIVE_ACCURACY_TAG:
            try:
                return _fraction(float(tag["Value"]), f"tag {LIVE_ACCURACY_TAG}")
            except ValueError:
                return None  # a hand-edited, unreadable tag must not block every future deployment
    return None


def accuracy_tag(test_accuracy: float) -> dict[str, str]:
    """The tag recording a model's accuracy on the endpoint config that serves it."""
    return {"Key": LIVE_ACCURACY_TAG, "Value": f"{_fraction(test_accuracy, TEST_ACCURACY_METRIC_NAME):.6f}"}
