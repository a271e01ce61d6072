"""What each phase of a run looks like in `imgclf aws watch`: pure functions, a SageMaker description in
and one line out (imgclf_cli.watch reads AWS and prints them)."""

from __future__ import annotations

import json
from typing import Any

from imgclf import contract

_SHOWN_METRICS = ("valid loss", "valid accuracy", contract.OBJECTIVE_METRIC_NAME, contract.TEST_ACCURACY_METRIC_NAME)


def describe_tuning(description: dict[str, Any]) -> str:
    counters = description.get("TrainingJobStatusCounters") or {}
    budget = ((description.get("HyperParameterTuningJobConfig") or {}).get("ResourceLimits") or {}).get(
        "MaxNumberOfTrainingJobs")
    failed = int(counters.get("NonRetryableError", 0)) + int(counters.get("RetryableError", 0))
    text = (f"tuning {description.get('HyperParameterTuningJobName')}: "
            f"{description.get('HyperParameterTuningJobStatus')}, {counters.get('Completed', 0)}"
            f"{'/' + str(budget) if budget else ''} trials done, {counters.get('InProgress', 0)} running")
    if failed:
        text += f", {failed} failed"
    best = (description.get("BestTrainingJob") or {}).get("FinalHyperParameterTuningJobObjectiveMetric")
    if best and best.get("Value") is not None:
        text += f", best {best.get('MetricName', 'objective')} {float(best['Value']):.4f} so far"
    return text


def _hyperparameter(description: dict[str, Any], name: str) -> str | None:
    value = (description.get("HyperParameters") or {}).get(name)
    if value is None:
        return None
    try:  # the pipeline JSON-encodes hyperparameter values, as the SageMaker SDK does
        return str(json.loads(value))
    except ValueError:
        return str(value)


def describe_training(description: dict[str, Any], log_text: str = "") -> str:
    """Status, the epoch (one "Epoch time" line per epoch in the log) and the latest metrics."""
    text = f"training {description.get('TrainingJobName')}: {description.get('TrainingJobStatus')}"
    secondary = description.get("SecondaryStatus")
    if secondary and secondary != description.get("TrainingJobStatus"):
        text += f" ({secondary})"
    series = contract.parse_metrics(log_text)
    epochs_done = len(series.get("epoch seconds", []))
    if epochs_done:
        total = _hyperparameter(description, "epochs")
        text += f", epoch {epochs_done}{'/' + total if total else ''}"
    final = {m["MetricName"]: m["Value"] for m in description.get("FinalMetricDataList") or []}
    latest = {**{name: values[-1] for name, values in series.items()}, **final}
    shown = [f"{name} {float(latest[name]):.4f}" for name in _SHOWN_METRICS if name in latest]
    return text + (", " + ", ".join(shown) if shown else "")


def describe_extraction(description: dict[str, Any]) -> str:
    """The feature-extraction job (a training job): status and secondary status."""
    text = f"extraction {description.get('TrainingJobName')}: {description.get('TrainingJobStatus')}"
    secondary = description.get("SecondaryStatus")
    return text + (f" ({secondary})" if secondary and secondary != description.get("TrainingJobStatus") else "")


def describe_endpoint(description: dict[str, Any]) -> str:
    """Status, and for each variant being rolled out (or live) its phase: Creating, Updating,
    ActivatingTraffic, Baking (DescribeEndpoint ProductionVariants[].VariantStatus)."""
    text = f"endpoint {description.get('EndpointName')}: {description.get('EndpointStatus')}"
    pending = (description.get("PendingDeploymentSummary") or {}).get("ProductionVariants")
    variants = pending or description.get("ProductionVariants") or []
    phases = [s.get("Status") for v in variants for s in v.get("VariantStatus") or [] if s.get("Status")]
    if phases:
        text += f", rollout {'/'.join(dict.fromkeys(phases))}"
    counts = [(v.get("CurrentInstanceCount"), v.get("DesiredInstanceCount")) for v in variants]
    if counts and all(current is not None for current, _ in counts):
        text += ", instances " + ", ".join(f"{c}/{d}" if d is not None else str(c) for c, d in counts)
    if description.get("FailureReason"):
        text += f" ({description['FailureReason']})"
    return text
