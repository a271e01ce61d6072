"""The inference Lambda's CloudWatch metrics: the EMF records it prints, parsed and checked against the
Embedded Metric Format specification and against imgclf.monitoring (the names the template uses).

EMF spec: https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
(an `_aws` member with Timestamp and CloudWatchMetrics[{Namespace, Dimensions: [[keys]], Metrics:
[{Name, Unit}]}]; every dimension key and metric name is a top-level member holding its value)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import requests
from moto import mock_aws

from imgclf import monitoring

MOTO_RESULTS_API = "http://motoapi.amazonaws.com/moto-api/static/sagemaker/endpoint-results"
SERVICE = "imgclf-classifier"
STANDARD_UNITS = {"Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
                  "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
                  "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second",
                  "Bits/Second", "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second",
                  "Count/Second", "None"}  # API_MetricDatum.html, StandardUnit


def _queue(*answers: dict[str, Any] | tuple[str, str]) -> None:
    results = []
    for answer in answers:
        body, content_type = (json.dumps(answer), "application/json") if isinstance(answer, dict) else answer
        results.append({"Body": body, "ContentType": content_type, "InvokedProductionVariant": "AllTraffic"})
    requests.post(MOTO_RESULTS_API, json={"results": results}, timeout=5).raise_for_status()


def emf_records(text: str) -> list[dict[str, Any]]:
    """Every EMF record in captured stdout, each checked against the specification's structure."""
    records = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        document = json.loads(line)
        if "_aws" not in document:
            continue
        meta = document["_aws"]
        assert isinstance(meta["Timestamp"], int)
        for directive in meta["CloudWatchMetrics"]:
            assert directive["Namespace"] == monitoring.NAMESPACE
            for dimension_set in directive["Dimensions"]:
                for key in dimension_set:
                    assert isinstance(document[key], str) and 0 < len(document[key]) <= 1024
            for metric in directive["Metrics"]:
                assert metric["Unit"] in STANDARD_UNITS
                assert metric["Name"] in document
        records.append(document)
    return records


def metrics_of(records: list[dict[str, Any]]) -> dict[str, tuple[str, tuple[str, ...], Any, dict[str, Any]]]:
    """metric name -> (unit, dimension keys, value, record)."""
    found = {}
    for record in records:
        for directive in record["_aws"]["CloudWatchMetrics"]:
            (dimensions,) = directive["Dimensions"]
            for metric in directive["Metrics"]:
                value = record[metric["Name"]]
                # EMF allows a number or an array of numbers; one request is one datapoint.
                (value,) = value if isinstance(value, list) else [value]
                found[metric["Name"]] = (metric["Unit"], tuple(dimensions), value, record)
    return found


@pytest.fixture
def metric_app(load_app, raw_image_bodies_kept):
    def load(**env: str):
        return load_app(POWERTOOLS_SERVICE_NAME=SERVICE, **env)

    with mock_aws():
        yield load


@pytest.fixture
def raw_image_bodies_kept(monkeypatch):
    # As test_inference_moto: moto decodes bodies as UTF-8, which image bytes are not.
    import base64

    from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

    setup_class = SageMakerRuntimeResponse.setup_class

    def keep_bytes(self, request, full_url=None, headers=None, use_raw_body=None):
        setup_class(self, request, full_url, headers, use_raw_body=True)
        self.body = base64.b64encode(self.raw_body).decode("ascii")

    monkeypatch.setattr(SageMakerRuntimeResponse, "setup_class", keep_bytes)


def _spec_check(found, spec: monitoring.MetricSpec) -> Any:
    unit, dimensions, value, record = found[spec.name]
    assert unit == spec.unit
    assert dimensions == spec.dimensions
    assert record[monitoring.SERVICE_DIMENSION] == SERVICE
    return value


def test_a_prediction_emits_every_prediction_metric(metric_app, context, make_event, jpeg_bytes, answer, capsys):
    app = metric_app()
    _queue(answer(5))
    capsys.readouterr()
    assert app.handler(make_event(jpeg_bytes, "image/jpeg"), context)["statusCode"] == 200
    found = metrics_of(emf_records(capsys.readouterr().out))
    assert set(found) == {spec.name for spec in monitoring.PREDICTION_METRICS} | {monitoring.REQUESTS.name}
    # answer(5): probabilities 0.5, 0.25, 0.125, 0.0625, 0.03125 and 0.03125 left over, by hand:
    # H = 0.5 ln 2 + 0.25 ln 4 + 0.125 ln 8 + 0.0625 ln 16 + 2 * 0.03125 ln 32 = ln 2 * (0.5+0.5+0.375+0.25+0.3125)
    assert _spec_check(found, monitoring.TOP1_PROBABILITY) == 0.5
    assert _spec_check(found, monitoring.PREDICTION_ENTROPY) == pytest.approx(math.log(2) * 1.9375)
    assert _spec_check(found, monitoring.IMAGE_SIZE) == len(jpeg_bytes)
    assert 0 <= _spec_check(found, monitoring.ENDPOINT_LATENCY) < 10_000
    assert _spec_check(found, monitoring.REQUESTS) == 1
    assert found[monitoring.REQUESTS.name][3][monitoring.STATUS_CLASS_DIMENSION] == "2xx"
    # The class rides along as a property, not as a dimension, unless the stack opts in.
    assert found[monitoring.TOP1_PROBABILITY.name][3]["predicted_class"] == "class-000"


def test_the_class_metric_only_on_opt_in(metric_app, context, make_event, jpeg_bytes, answer, capsys):
    app = metric_app(PREDICTED_CLASS_METRIC="Enabled")
    _queue(answer(5))
    capsys.readouterr()
    app.handler(make_event(jpeg_bytes, "image/jpeg"), context)
    found = metrics_of(emf_records(capsys.readouterr().out))
    assert _spec_check(found, monitoring.PREDICTIONS_BY_CLASS) == 1
    assert found[monitoring.PREDICTIONS_BY_CLASS.name][3][monitoring.PREDICTED_CLASS_DIMENSION] == "class-000"


def test_a_short_answer_emits_no_entropy(metric_app, context, make_event, jpeg_bytes, answer, capsys):
    # top_k=2 of a larger distribution: the top-5 entropy cannot be computed, so no datapoint (not a wrong one).
    app = metric_app()
    _queue(answer(2))
    capsys.readouterr()
    app.handler(make_event(jpeg_bytes, "image/jpeg", query={"top_k": "2"}), context)
    found = metrics_of(emf_records(capsys.readouterr().out))
    assert monitoring.PREDICTION_ENTROPY.name not in found
    assert found[monitoring.TOP1_PROBABILITY.name][2] == 0.5


def test_client_and_server_errors_are_counted_by_status_class(metric_app, context, make_event, jpeg_bytes, capsys):
    app = metric_app()
    capsys.readouterr()
    assert app.handler(make_event(b"not an image", "image/jpeg"), context)["statusCode"] == 415
    client = metrics_of(emf_records(capsys.readouterr().out))
    assert set(client) == {monitoring.REQUESTS.name}
    assert client[monitoring.REQUESTS.name][3][monitoring.STATUS_CLASS_DIMENSION] == "4xx"

    _queue(("<html>oops</html>", "text/html"))  # the endpoint answers something other than JSON: 502
    assert app.handler(make_event(jpeg_bytes, "image/jpeg"), context)["statusCode"] == 502
    server = metrics_of(emf_records(capsys.readouterr().out))
    assert server[monitoring.REQUESTS.name][3][monitoring.STATUS_CLASS_DIMENSION] == "5xx"
    assert _spec_check(server, monitoring.IMAGE_SIZE) == len(jpeg_bytes)
    assert monitoring.TOP1_PROBABILITY.name not in server


def test_the_page_emits_nothing(metric_app, context, make_event, capsys):
    app = metric_app()
    capsys.readouterr()
    app.handler(make_event(None, method="GET"), context)
    assert emf_records(capsys.readouterr().out) == []
