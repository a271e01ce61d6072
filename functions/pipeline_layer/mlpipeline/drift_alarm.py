"""The confidence-drift alarm as the pipeline writes it after each deployment: PutMetricAlarm with the
threshold derived from the deployed model's validation baseline (imgclf.monitoring.drift_threshold).

template.yaml's ConfidenceDriftAlarm is the same alarm (same name, metrics and evaluation) with threshold
0, so it exists, cannot fire, and goes with the stack; tests/inference_lambda/test_monitoring_template.py
checks the two definitions agree. The baseline reaches the pipeline as training metrics
(contract.BASELINE_*_METRIC_NAME in the training job's FinalMetricDataList), read by the quality gate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from imgclf import contract, monitoring

ALARM_NAME_SUFFIX = "-confidence-drift"


def alarm_name(endpoint_name: str) -> str:
    return f"{endpoint_name}{ALARM_NAME_SUFFIX}"


def baseline_from_final_metrics(final_metrics: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The top-1 baseline in monitoring.baseline's shape from a training job's FinalMetricDataList, or
    None when the job did not report one (a model trained before the baseline existed)."""
    values = {m.get("MetricName"): m.get("Value") for m in final_metrics}
    names = (contract.BASELINE_COUNT_METRIC_NAME, contract.BASELINE_TOP1_MEAN_METRIC_NAME,
             contract.BASELINE_TOP1_STD_METRIC_NAME)
    if any(not isinstance(values.get(name), int | float) for name in names):
        return None
    return {"count": int(values[names[0]]),
            monitoring.TOP1_PROBABILITY.name: {"mean": float(values[names[1]]), "std": float(values[names[2]])}}


def _metric(metric_id: str, stat: str, endpoint_name: str, period: int) -> dict[str, Any]:
    return {
        "Id": metric_id,
        "ReturnData": False,
        "MetricStat": {
            "Metric": {
                "Namespace": monitoring.NAMESPACE,
                "MetricName": monitoring.TOP1_PROBABILITY.name,
                "Dimensions": [{"Name": monitoring.SERVICE_DIMENSION, "Value": endpoint_name}],
            },
            "Period": period,
            "Stat": stat,
        },
    }


def put_metric_alarm_request(endpoint_name: str, topic_arn: str, threshold: float,
                             policy: monitoring.DriftPolicy = monitoring.DRIFT_POLICY,
                             description: str = "") -> dict[str, Any]:
    """PutMetricAlarm arguments (API_PutMetricAlarm.html): a metric-math alarm on the hourly mean top-1
    probability, evaluated only in hours with at least policy.min_samples answers."""
    return {
        "AlarmName": alarm_name(endpoint_name),
        "AlarmDescription": description,
        "Metrics": [
            _metric("confidence", "Average", endpoint_name, policy.period_seconds),
            _metric("answers", "SampleCount", endpoint_name, policy.period_seconds),
            {"Id": "drift", "Label": f"mean top-1 probability (hours with >= {policy.min_samples} answers)",
             "ReturnData": True, "Expression": f"IF(answers >= {policy.min_samples}, confidence)"},
        ],
        "EvaluationPeriods": policy.evaluation_periods,
        "DatapointsToAlarm": policy.datapoints_to_alarm,
        "Threshold": round(threshold, 6),
        "ComparisonOperator": "LessThanThreshold",
        "TreatMissingData": "notBreaching",
        "AlarmActions": [topic_arn],
        "OKActions": [topic_arn],
    }


def describe(baseline: Mapping[str, Any], threshold: float) -> str:
    top1 = baseline[monitoring.TOP1_PROBABILITY.name]
    return (f"The live model's mean top-1 probability fell below {threshold:.4f}: its validation baseline is "
            f"{float(top1['mean']):.4f} (sd {float(top1['std']):.4f}, {int(baseline['count'])} images); below "
            f"the threshold by more than chance explains (README, Monitoring). Set by the last deployment.")
