"""template.yaml's prediction alarms and dashboard against what the inference Lambda emits: names, units,
namespace, dimension and the drift constants all come from imgclf.prediction_metrics (one source of truth).
cfn-lint checks the same resources in tests/pipeline/test_template.py (the whole transformed template)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from samtranslator.yaml_helper import yaml_parse

from imgclf import prediction_metrics as pm

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = yaml_parse((REPO / "template.yaml").read_text())
RESOURCES = TEMPLATE["Resources"]
SERVICE = {"Fn::Sub": "${ResourcePrefix}-inference"}


def _dashboard() -> dict[str, Any]:
    body, variables = RESOURCES["ObservabilityDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    # Resolve ${...} with placeholders of the right JSON type, as CloudFormation's Fn::Sub would fill them
    numeric = {"LatencyMicros", "AutoscalingTargetInvocations", "InferenceReservedConcurrency"}
    resolved = re.sub(r"\$\{([\w.:]+)\}", lambda m: "1" if m.group(1) in numeric else f"<{m.group(1)}>", body)
    assert set(variables) <= {m for m in re.findall(r"\$\{([\w.:]+)\}", body)}
    return json.loads(resolved)


def _prediction_metrics_of(widget: dict[str, Any]) -> list[list[Any]]:
    return [m for m in widget["properties"].get("metrics", []) if m[0] == pm.NAMESPACE]


def test_the_dashboard_shows_every_metric_the_lambda_emits_by_its_own_names():
    widgets = _dashboard()["widgets"]
    shown = set()
    for widget in widgets:
        assert widget["type"] == "metric" and {"x", "y", "width", "height"} <= set(widget)
        for metric in _prediction_metrics_of(widget):
            _namespace, name, dimension, value = metric[:4]
            assert name in pm.METRIC_NAMES, name
            assert (dimension, value) == (pm.SERVICE_DIMENSION, "<ResourcePrefix>-inference")
            shown.add(name)
    # every metric of every request; Predictions (opt-in, by class) is counted in the log's metadata
    assert shown == pm.METRIC_NAMES - {pm.PREDICTIONS.name}
    titles = " ".join(w["properties"]["title"] for w in widgets)
    for topic in ("Pipeline executions", "Endpoint", "Inference function", "Predictions"):
        assert topic in titles
    drift_widget = next(w for w in widgets if pm.TOP_PROBABILITY.name in json.dumps(w))
    assert drift_widget["properties"]["annotations"]["alarms"] == ["<ConfidenceDriftAlarm.Arn>"]


def test_the_drift_alarm_is_the_derivation_in_prediction_metrics():
    props = RESOURCES["ConfidenceDriftAlarm"]["Properties"]
    stats = {}
    for query in props["Metrics"]:
        if "MetricStat" in query:
            metric = query["MetricStat"]["Metric"]
            assert (metric["Namespace"], metric["MetricName"]) == (pm.NAMESPACE, pm.TOP_PROBABILITY.name)
            assert metric["Dimensions"] == [{"Name": pm.SERVICE_DIMENSION, "Value": SERVICE}]
            assert query["MetricStat"]["Period"] == pm.DRIFT_PERIOD_SECONDS
            stats[query["Id"]] = query["MetricStat"]["Stat"]
    assert stats == {"mean": "Average", "requests": "SampleCount"}
    [expression] = [q["Expression"] for q in props["Metrics"] if "Expression" in q]
    assert expression == f"IF(requests >= {pm.DRIFT_MIN_SAMPLES}, mean, 1)"
    assert props["EvaluationPeriods"] == props["DatapointsToAlarm"] == pm.DRIFT_EVALUATION_PERIODS
    assert props["ComparisonOperator"] == "LessThanThreshold" and props["Threshold"] == 0
    assert props["AlarmActions"] == [{"Ref": "NotificationTopic"}]
    # ReportFunction re-puts it by this name
    report_env = RESOURCES["ReportFunction"]["Properties"]["Environment"]["Variables"]
    assert report_env["DRIFT_ALARM_NAME"] == props["AlarmName"]


def test_the_error_rate_alarms_read_the_lambdas_status_metrics():
    for logical_id, spec in (("InferenceClientErrorsAlarm", pm.CLIENT_ERROR),
                             ("InferenceServerErrorsAlarm", pm.SERVER_ERROR)):
        props = RESOURCES[logical_id]["Properties"]
        assert (props["Namespace"], props["MetricName"], props["Statistic"]) == (pm.NAMESPACE, spec.name, "Average")
        assert props["Dimensions"] == [{"Name": pm.SERVICE_DIMENSION, "Value": SERVICE}]
        assert props["AlarmActions"] == [{"Ref": "NotificationTopic"}]


def test_the_inference_function_names_the_service_the_alarms_read():
    env = RESOURCES["InferenceFunction"]["Properties"]["Environment"]["Variables"]
    assert env["POWERTOOLS_SERVICE_NAME"] == SERVICE
    assert env["PREDICTED_CLASS_METRIC"] == {"Ref": "PredictedClassMetric"}


def test_the_report_function_packages_matplotlib_and_not_the_layer():
    requirements = (REPO / "functions" / "report" / "requirements.txt").read_text()
    assert re.search(r"^matplotlib==", requirements, re.M)
    layer_makefile = (REPO / "functions" / "pipeline_layer" / "Makefile").read_text()
    assert "matplotlib" not in layer_makefile and "pip install" not in layer_makefile
