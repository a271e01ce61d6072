"""The inference Lambda's CloudWatch metrics: the EMF lines it prints, parsed as CloudWatch would
(https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html):
an `_aws` object whose CloudWatchMetrics[].Metrics name each metric and its unit, whose Dimensions are
lists of top-level keys, and whose values are top-level keys of the same JSON line."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from imgclf import prediction_metrics as pm


def _emf_lines(output: str) -> list[dict[str, Any]]:
    return [doc for doc in (json.loads(line) for line in output.splitlines() if line.startswith("{"))
            if "_aws" in doc]


def _metrics(doc: dict[str, Any]) -> dict[str, tuple[str, Any, list[list[str]]]]:
    """name -> (unit, value, dimension sets), after checking the document against the EMF spec."""
    directives = doc["_aws"]["CloudWatchMetrics"]
    assert isinstance(doc["_aws"]["Timestamp"], int)
    found = {}
    for directive in directives:
        assert directive["Namespace"] == pm.NAMESPACE
        for dimension_set in directive["Dimensions"]:
            for key in dimension_set:
                assert isinstance(doc[key], str), f"dimension {key} is not a top-level string"
        for metric in directive["Metrics"]:
            value = doc[metric["Name"]]
            if isinstance(value, list):  # the spec allows an array of values; Powertools writes one
                [value] = value
            found[metric["Name"]] = (metric["Unit"], value, directive["Dimensions"])
    return found


@pytest.fixture
def app(load_app, fake_runtime):
    return load_app(SAGEMAKER_RUNTIME_ENDPOINT_URL=fake_runtime.url, FUNCTION_TIMEOUT_SECONDS="4",
                    POWERTOOLS_SERVICE_NAME="imgclf-inference", POWERTOOLS_LOG_LEVEL="ERROR")


def test_a_2xx_answer_emits_every_prediction_metric(app, context, make_event, jpeg_bytes, fake_runtime, answer,
                                                     response_body, capsys):
    fake_runtime.answer_ok(answer(5))
    response = app.handler(make_event(jpeg_bytes, "image/jpeg", query={"top_k": "2"}), context)
    assert response["statusCode"] == 200
    assert len(response_body(response)["predictions"]) == 2  # the client's top_k
    # ... while the endpoint was asked for the statistics' top-k
    assert fake_runtime.requests[0].headers["x-amzn-sagemaker-custom-attributes"] == f"top_k={pm.STATISTICS_TOP_K}"
    [doc] = _emf_lines(capsys.readouterr().out)
    found = _metrics(doc)
    expected_names = {pm.TOP_PROBABILITY.name, pm.ENTROPY.name, pm.ENDPOINT_LATENCY.name, pm.IMAGE_SIZE.name,
                      pm.CLIENT_ERROR.name, pm.SERVER_ERROR.name}
    assert set(found) == expected_names
    for spec in pm.METRICS:
        if spec.name in found:
            unit, _value, dimensions = found[spec.name]
            assert unit == spec.unit
            assert dimensions == [[pm.SERVICE_DIMENSION]]
    assert doc[pm.SERVICE_DIMENSION] == "imgclf-inference"
    # by hand: probabilities 0.5, 0.25, 0.125, 0.0625, 0.03125 and the rest 0.03125
    probabilities = [0.5, 0.25, 0.125, 0.0625, 0.03125, 0.03125]
    assert found[pm.TOP_PROBABILITY.name][1] == 0.5
    assert found[pm.ENTROPY.name][1] == pytest.approx(-sum(p * math.log(p) for p in probabilities))
    assert found[pm.IMAGE_SIZE.name][1] == len(jpeg_bytes)
    assert found[pm.ENDPOINT_LATENCY.name][1] > 0
    assert (found[pm.CLIENT_ERROR.name][1], found[pm.SERVER_ERROR.name][1]) == (0, 0)
    assert doc["status_class"] == "2xx"
    assert doc["predicted_class"] == "class-000"  # metadata, not a dimension
    assert pm.PREDICTED_CLASS_DIMENSION not in json.dumps(doc["_aws"])


@pytest.mark.parametrize(("script", "status", "client", "server"), [
    (lambda rt: rt.answer_error(424, "ModelError", "boom", OriginalStatusCode=500), 502, 0, 1),
    (lambda rt: rt.answer_error(424, "ModelError", "bad image", OriginalStatusCode=400), 400, 1, 0),
])
def test_an_error_counts_in_its_status_class(app, context, make_event, jpeg_bytes, fake_runtime, capsys,
                                            script, status, client, server):
    script(fake_runtime)
    assert app.handler(make_event(jpeg_bytes, "image/jpeg"), context)["statusCode"] == status
    [doc] = _emf_lines(capsys.readouterr().out)
    found = _metrics(doc)
    assert (found[pm.CLIENT_ERROR.name][1], found[pm.SERVER_ERROR.name][1]) == (client, server)
    assert pm.TOP_PROBABILITY.name not in found  # no answer, no confidence
    assert doc["status_class"] == pm.status_class(status)


def test_a_request_refused_before_the_endpoint_is_a_client_error(app, context, make_event, capsys):
    assert app.handler(make_event(b"not an image", "image/jpeg"), context)["statusCode"] == 415
    found = _metrics(_emf_lines(capsys.readouterr().out)[0])
    assert set(found) == {pm.CLIENT_ERROR.name, pm.SERVER_ERROR.name}
    assert found[pm.CLIENT_ERROR.name][1] == 1


def test_the_page_records_nothing(app, context, make_event, capsys):
    assert app.handler(make_event(None, method="GET"), context)["statusCode"] == 200
    assert _emf_lines(capsys.readouterr().out) == []


def test_predicted_class_dimension_is_opt_in_and_bounded(load_app, fake_runtime, context, make_event, jpeg_bytes,
                                                         answer, capsys):
    app = load_app(SAGEMAKER_RUNTIME_ENDPOINT_URL=fake_runtime.url, FUNCTION_TIMEOUT_SECONDS="4",
                   POWERTOOLS_SERVICE_NAME="imgclf-inference", POWERTOOLS_LOG_LEVEL="ERROR",
                   PREDICTED_CLASS_METRIC="true")
    many = answer(5)
    many["predictions"][0].update(class_id=pm.MAX_CLASS_DIMENSION_VALUES + 7, label="class-127")
    fake_runtime.answer_ok(answer(5))
    fake_runtime.answer_ok(many)
    labels = []
    for _ in range(2):
        app.handler(make_event(jpeg_bytes, "image/jpeg"), context)
        docs = _emf_lines(capsys.readouterr().out)
        [single] = [d for d in docs if pm.PREDICTIONS.name in _metrics(d)]
        unit, value, dimensions = _metrics(single)[pm.PREDICTIONS.name]
        assert (unit, value) == (pm.PREDICTIONS.unit, 1)
        assert sorted(dimensions[0]) == sorted([pm.SERVICE_DIMENSION, pm.PREDICTED_CLASS_DIMENSION])
        labels.append(single[pm.PREDICTED_CLASS_DIMENSION])
    assert labels == ["class-000", "other"]
