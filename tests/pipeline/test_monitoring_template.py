"""The prediction-monitoring alarms and the dashboard in template.yaml, checked against the metrics the
inference Lambda really emits (imgclf.monitoring, the names, units and dimensions its EMF test parses)
and against the alarm the pipeline writes after each deployment (mlpipeline.drift_alarm).
cfn-lint runs over the whole template in test_template.py."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import stack
from mlpipeline import drift_alarm

from imgclf import monitoring

SPECS = {spec.name: spec for spec in monitoring.ALL_METRICS}
ALARMS = ("InferenceClientErrorRateAlarm", "InferenceServerErrorRateAlarm", "ConfidenceDriftAlarm")
ENDPOINT_REF = {"Ref": "EndpointName"}


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    return stack.template()["Resources"]


def _metric_stats(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    return [m["MetricStat"]["Metric"] for m in alarm["Properties"]["Metrics"] if "MetricStat" in m]


def test_the_lambda_emits_under_the_names_the_alarms_read(resources):
    env = resources["InferenceFunction"]["Properties"]["Environment"]["Variables"]
    assert env["POWERTOOLS_SERVICE_NAME"] == ENDPOINT_REF  # the `service` dimension the alarms select
    assert env["PREDICTED_CLASS_METRIC"] == {"Ref": "PredictedClassMetric"}
    for name in ALARMS:
        alarm = resources[name]
        assert alarm["Type"] == "AWS::CloudWatch::Alarm"
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "NotificationTopic"}], name
        for metric in _metric_stats(alarm):
            assert metric["Namespace"] == monitoring.NAMESPACE
            spec = SPECS[metric["MetricName"]]
            dimensions = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
            assert tuple(dimensions) == spec.dimensions, (name, metric)
            assert dimensions[monitoring.SERVICE_DIMENSION] == ENDPOINT_REF
            if monitoring.STATUS_CLASS_DIMENSION in dimensions:
                assert dimensions[monitoring.STATUS_CLASS_DIMENSION] in monitoring.STATUS_CLASSES


@pytest.mark.parametrize("alarm, status", [("InferenceClientErrorRateAlarm", "4xx"),
                                           ("InferenceServerErrorRateAlarm", "5xx")])
def test_each_error_rate_divides_its_class_by_every_request(resources, alarm, status):
    metrics = resources[alarm]["Properties"]["Metrics"]
    ids = {m["Id"]: m["MetricStat"]["Metric"]["Dimensions"][1]["Value"] for m in metrics if "MetricStat" in m}
    assert sorted(ids.values()) == sorted(monitoring.STATUS_CLASSES)
    total = next(m["Expression"] for m in metrics if m["Id"] == "total")
    assert set(re.findall(r"FILL\((\w+), 0\)", total)) == set(ids)
    [returned] = [m for m in metrics if m.get("ReturnData")]
    numerator = re.search(r"100 \* FILL\((\w+), 0\) / total", returned["Expression"]).group(1)
    assert ids[numerator] == status


def test_the_drift_alarm_is_the_one_the_pipeline_writes(resources):
    """Same alarm as mlpipeline.drift_alarm.put_metric_alarm_request, threshold 0 until a deployment."""
    properties = resources["ConfidenceDriftAlarm"]["Properties"]
    written = drift_alarm.put_metric_alarm_request("ENDPOINT", "TOPIC", 0.0)
    assert properties["AlarmName"] == {"Fn::Sub": "${EndpointName}" + drift_alarm.ALARM_NAME_SUFFIX}
    as_template = json.loads(json.dumps(written["Metrics"]).replace('"ENDPOINT"', json.dumps(ENDPOINT_REF)))
    assert properties["Metrics"] == as_template
    for key in ("EvaluationPeriods", "DatapointsToAlarm", "Threshold", "ComparisonOperator", "TreatMissingData"):
        assert properties[key] == written[key], key
    policy = monitoring.DRIFT_POLICY
    assert properties["Metrics"][0]["MetricStat"]["Period"] == policy.period_seconds
    # ConfigureAutoscaling may write exactly this alarm and nothing else.
    statements = resources["ConfigureAutoscalingFunction"]["Properties"]["Policies"][0]["Statement"]
    [put] = [s for s in statements if s["Action"] == "cloudwatch:PutMetricAlarm"]
    assert put["Resource"] == {"Fn::GetAtt": ["ConfidenceDriftAlarm", "Arn"]}


def _dashboard(resources) -> dict[str, Any]:
    body, variables = resources["MonitoringDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    names = set(re.findall(r"\$\{([^}]+)\}", body))
    known = set(stack.template()["Parameters"]) | set(resources) | set(variables) | {"AWS::Region"}
    assert {n.split(".")[0] for n in names} <= known, names - known
    # Numbers stand in for the substitutions, so the body must be JSON once CloudFormation has substituted.
    return json.loads(re.sub(r"\$\{[^}]+\}", "1", body))


def test_the_dashboard_shows_every_prediction_metric_with_its_dimensions(resources):
    widgets = _dashboard(resources)["widgets"]
    shown: set[str] = set()
    for widget in widgets:
        previous: list[Any] = []
        for row in widget["properties"].get("metrics", []):
            # The dashboard's shorthand: "." repeats the previous row's item, "..." all of the rest.
            items = [i for i in row if not isinstance(i, dict)]
            if items and items[0] == "...":
                items = previous[: len(previous) - len(items) + 1] + items[1:]
            items = [previous[i] if item == "." else item for i, item in enumerate(items)]
            previous = items
            if items[0] == monitoring.NAMESPACE:
                spec = SPECS[items[1]]
                assert tuple(items[2::2]) == spec.dimensions, row
                shown.add(spec.name)
    alarms = {a for w in widgets for a in w["properties"].get("annotations", {}).get("alarms", [])}
    assert "1" in alarms  # the drift alarm: the mean top-1 probability against the deployed model's threshold
    body = resources["MonitoringDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0]
    assert "${ConfidenceDriftAlarm.Arn}" in body
    assert shown >= {monitoring.PREDICTION_ENTROPY.name, monitoring.ENDPOINT_LATENCY.name,
                     monitoring.IMAGE_SIZE.name, monitoring.REQUESTS.name}
    titles = " ".join(w["properties"]["title"] for w in widgets)
    for subject in ("Pipeline executions", "Endpoint invocations", "Inference Lambda", "top-1 probability"):
        assert subject in titles
