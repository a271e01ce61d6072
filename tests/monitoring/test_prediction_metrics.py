"""imgclf.prediction_metrics: answer statistics, the baseline and the confidence-drift threshold."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from imgclf import prediction_metrics as pm


def _stream(rng: random.Random, alpha: float, beta: float, n: int) -> list[float]:
    """Top-1 probabilities of a classifier, Beta-distributed (bounded in [0, 1], skewed to 1 when it
    is sure, as top-1 probabilities are)."""
    return [rng.betavariate(alpha, beta) for _ in range(n)]


def test_answer_statistics_by_hand():
    # 0.7, 0.2 and the rest 0.1: entropy -(0.7 ln 0.7 + 0.2 ln 0.2 + 0.1 ln 0.1) = 0.8018
    top1, entropy = pm.answer_statistics([0.2, 0.7])
    assert top1 == 0.7
    assert entropy == pytest.approx(0.80182, abs=1e-5)
    # only the top STATISTICS_TOP_K count: a full 10-class uniform distribution is 5 x 0.1 + 0.5
    _, uniform = pm.answer_statistics([0.1] * 10)
    assert uniform == pytest.approx(-(5 * 0.1 * math.log(0.1) + 0.5 * math.log(0.5)))
    with pytest.raises(ValueError):
        pm.answer_statistics([])


def test_margin_by_hand():
    # z(0.999) = 3.0902; sigma 0.2 over 100 requests: 3.0902 * 0.02 = 0.0618
    assert pm.drift_margin(0.2, 100) == pytest.approx(0.061805, abs=1e-5)
    assert pm.drift_threshold(0.8, 0.2, 100) == pytest.approx(0.738195, abs=1e-5)


def test_the_threshold_holds_on_an_unshifted_stream_and_catches_a_shifted_one():
    rng = random.Random(11)
    validation = _stream(rng, 6.0, 1.5, 2000)  # mean 0.8, sd 0.135
    base = pm.baseline([[p] for p in validation])  # top-1 only: the rest is one bucket
    threshold = base["drift_threshold"]
    assert threshold == pm.drift_threshold(statistics.fmean(validation), statistics.pstdev(validation))
    windows = 2000
    unshifted = [pm.drifted(_stream(rng, 6.0, 1.5, pm.DRIFT_MIN_SAMPLES), threshold) for _ in range(windows)]
    # expected false alarms: 0.1 % of 2000 = 2; more than 8 would be p < 0.001 under the derivation
    assert sum(unshifted) <= 8
    # new inputs the model is less sure of: mean 0.72 (a drop of 0.08, 6 standard errors)
    shifted = [pm.drifted(_stream(rng, 4.5, 1.75, pm.DRIFT_MIN_SAMPLES), threshold) for _ in range(windows)]
    assert sum(shifted) / windows > 0.95
    # a drop the margin is built to ignore: 0.01 (less than one standard error) rarely fires
    slightly = [pm.drifted(_stream(rng, 5.94, 1.56, pm.DRIFT_MIN_SAMPLES), threshold) for _ in range(500)]
    assert sum(slightly) / 500 < 0.05


def test_a_window_with_too_few_requests_is_not_judged():
    assert pm.drifted([0.1] * (pm.DRIFT_MIN_SAMPLES - 1), 0.9) is None
    assert pm.drifted([0.1] * pm.DRIFT_MIN_SAMPLES, 0.9) is True


def test_baseline_shape():
    base = pm.baseline([[0.9, 0.1], [0.6, 0.3], [0.5, 0.5]])
    assert base["samples"] == 3
    assert base[pm.TOP_PROBABILITY.name]["mean"] == pytest.approx(2.0 / 3)
    assert base[pm.TOP_PROBABILITY.name]["min"] == 0.5
    assert set(base[pm.ENTROPY.name]) == {"mean", "std", "p05", "p50", "p95", "min", "max"}
    with pytest.raises(ValueError):
        pm.baseline([])


def test_status_class():
    assert [pm.status_class(s) for s in (200, 404, 413, 502)] == ["2xx", "4xx", "4xx", "5xx"]
