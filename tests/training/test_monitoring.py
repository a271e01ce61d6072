"""imgclf.monitoring: per-prediction statistics, the validation baseline and the confidence-drift
threshold, on synthetic confidence streams (one shifted, one not)."""

from __future__ import annotations

import math
import random

import pytest

from imgclf import monitoring


def test_stats_of_a_whole_distribution_and_of_a_top_k():
    # Two classes: the whole distribution, so the entropy is exact: -(0.8 ln 0.8 + 0.2 ln 0.2).
    two = monitoring.prediction_stats([0.2, 0.8])
    assert two.top1_probability == 0.8
    assert two.entropy == pytest.approx(-(0.8 * math.log(0.8) + 0.2 * math.log(0.2)))
    # Top 5 of many classes: the remaining 0.1 is one bucket.
    top5 = monitoring.prediction_stats([0.5, 0.2, 0.1, 0.05, 0.05])
    assert top5.entropy == pytest.approx(-sum(p * math.log(p) for p in (0.5, 0.2, 0.1, 0.05, 0.05, 0.1)))
    # Top 2 of many classes: not the statistic the baseline holds, so none.
    assert monitoring.prediction_stats([0.5, 0.2]).entropy is None
    with pytest.raises(ValueError):
        monitoring.prediction_stats([])
    with pytest.raises(ValueError):
        monitoring.prediction_stats([1.5])


def test_status_classes():
    assert [monitoring.status_class(s) for s in (200, 413, 429, 502, 504)] == ["2xx", "4xx", "4xx", "5xx", "5xx"]
    with pytest.raises(ValueError):
        monitoring.status_class(302)


def _confidences(rng: random.Random, count: int, a: float, b: float) -> list[float]:
    return [rng.betavariate(a, b) for _ in range(count)]


def _baseline(rng: random.Random) -> dict:
    # A validation split of 400 images whose top-1 probability follows Beta(8, 2) (mean 0.8, sd 0.12).
    return monitoring.baseline_of(monitoring.PredictionStats(p, None) for p in _confidences(rng, 400, 8, 2))


def test_threshold_follows_the_derivation():
    base = {"count": 400, monitoring.TOP1_PROBABILITY.name: {"mean": 0.8, "std": 0.12}}
    policy = monitoring.DriftPolicy(min_samples=100, alpha=0.005)
    # z = 2.5758 (one-sided 0.5 %), spread = 0.12 * sqrt(1/100 + 1/400) = 0.013416: 0.8 - 0.034558, by hand.
    assert policy.z == pytest.approx(2.5758, abs=1e-4)
    assert monitoring.drift_threshold(base, policy) == pytest.approx(0.765442, abs=1e-5)
    # More samples per window, or a bigger validation split: a tighter threshold.
    assert monitoring.drift_threshold(base, monitoring.DriftPolicy(min_samples=1000)) > 0.765442


def test_an_unshifted_stream_does_not_alarm_and_a_shifted_one_does():
    rng = random.Random(7)
    base = _baseline(rng)
    policy = monitoring.DRIFT_POLICY
    hour = policy.period_seconds

    def stream(hours: int, per_hour: int, a: float, b: float) -> list[tuple[float, float]]:
        return [(h * hour + i, p) for h in range(hours) for i, p in enumerate(_confidences(rng, per_hour, a, b))]

    unshifted = monitoring.drifted_windows(stream(48, 150, 8, 2), base, policy)
    assert len(unshifted) == 48 and not monitoring.alarm_fires(unshifted, policy)
    # The model grows less sure (mean 0.727): most windows breach and the alarm fires.
    shifted = monitoring.drifted_windows(stream(6, 150, 8, 3), base, policy)
    assert sum(shifted) >= 5 and monitoring.alarm_fires(shifted, policy)
    # Windows under N requests are not evaluated at all.
    assert monitoring.drifted_windows(stream(6, 50, 2, 8), base, policy) == []


def test_baseline_records_the_spread():
    base = monitoring.baseline_of([monitoring.PredictionStats(p, 0.1) for p in (0.6, 0.8, 1.0)])
    top1 = base[monitoring.TOP1_PROBABILITY.name]
    assert (base["count"], top1["mean"]) == (3, pytest.approx(0.8))
    assert top1["std"] == pytest.approx(math.sqrt(0.08 / 3), abs=1e-6)  # population sd of 0.6, 0.8, 1.0
    assert base[monitoring.PREDICTION_ENTROPY.name] == {"mean": 0.1, "std": 0.0}


@pytest.mark.parametrize("num_classes", [3, 5, 12])
def test_training_computes_the_statistics_the_lambda_emits(num_classes):
    # The baseline (loop.prediction_moments, vectorized on the full softmax) and the Lambda
    # (monitoring.prediction_stats on the endpoint's top-5 answer) must measure the same thing.
    import torch

    from imgclf.loop import prediction_moments

    logits = torch.randn(64, num_classes, generator=torch.Generator().manual_seed(num_classes)) * 3
    answers = [torch.softmax(row, 0).topk(min(5, num_classes)).values.tolist() for row in logits]
    stats = [monitoring.prediction_stats(answer) for answer in answers]
    n, s1, q1, ne, se, qe = prediction_moments(logits).tolist()
    assert (n, ne) == (64, 64)
    assert s1 == pytest.approx(sum(s.top1_probability for s in stats), rel=1e-6)
    assert q1 == pytest.approx(sum(s.top1_probability ** 2 for s in stats), rel=1e-6)
    assert se == pytest.approx(sum(s.entropy for s in stats), rel=1e-5)
    assert qe == pytest.approx(sum(s.entropy ** 2 for s in stats), rel=1e-5)


def test_the_baseline_line_is_read_back_as_training_metrics():
    from imgclf import contract

    line = contract.format_baseline_line(400, 0.8125, 0.12)
    metrics = contract.final_metrics(line)
    assert metrics == {contract.BASELINE_COUNT_METRIC_NAME: 400, contract.BASELINE_TOP1_MEAN_METRIC_NAME: 0.8125,
                       contract.BASELINE_TOP1_STD_METRIC_NAME: 0.12}
