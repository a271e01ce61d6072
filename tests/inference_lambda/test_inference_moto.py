"""The handler against moto's SageMaker runtime, with answers queued through moto's own API.

moto decodes request bodies as UTF-8, which image bytes are not: `raw_image_bodies` makes moto keep the
body raw (and records it, so the tests see exactly what reached the endpoint).

moto evaluates no IAM: every AWS call the handler makes here is recorded and, at the end of each test,
evaluated as AWS would against InferenceFunction's policies in the SAM-transformed template.yaml
(tests/pipeline/iam_model.py: the Service Authorization Reference and a real policy evaluator)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import iam_model
import pipeline_world as pw
import pytest
import requests
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

MOTO_RESULTS_API = "http://motoapi.amazonaws.com/moto-api/static/sagemaker/endpoint-results"


@pytest.fixture
def raw_image_bodies(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    setup_class = SageMakerRuntimeResponse.setup_class

    def setup_class_keeping_bytes(self, request, full_url=None, headers=None, use_raw_body=None):
        setup_class(self, request, full_url, headers, use_raw_body=True)
        received.append(
            {"path": self.path, "body": self.raw_body, "headers": {k.lower(): v for k, v in self.headers.items()}}
        )
        # moto json-dumps the body into its per-request cache key: give it text that stands for the bytes.
        self.body = base64.b64encode(self.raw_body).decode("ascii")

    monkeypatch.setattr(SageMakerRuntimeResponse, "setup_class", setup_class_keeping_bytes)
    return received


# The caller's logical id in template.yaml -> its code folder, for the IAM evaluation.
INFERENCE_FUNCTION = {"InferenceFunction": "inference"}


@pytest.fixture
def recorded_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[pw.RecordedCall]]:
    """Records the handler's AWS calls; after the test, each must be authorized by InferenceFunction's role
    as AWS evaluates it (template parameters at their defaults: ENDPOINT_NAME is the default EndpointName)."""
    recorded: list[pw.RecordedCall] = []
    make_api_call = BaseClient._make_api_call

    def recording(client: Any, operation_name: str, api_params: Any) -> Any:
        record = pw.RecordedCall(
            "inference", client.meta.service_model.signing_name, operation_name, dict(api_params), {}, None
        )
        try:
            response = make_api_call(client, operation_name, api_params)
        except ClientError as error:
            recorded.append(record._replace(error=error.response.get("Error", {}).get("Code")))
            raise
        recorded.append(record._replace(answer={k: v for k, v in response.items() if isinstance(v, str)}))
        return response

    monkeypatch.setattr(BaseClient, "_make_api_call", recording)
    yield recorded
    iam_model.assert_calls_authorized(iam_model.world_template(), recorded, INFERENCE_FUNCTION)


@pytest.fixture
def moto_app(load_app, raw_image_bodies, recorded_calls):
    with mock_aws():
        yield load_app()


def queue_answers(*answers: dict[str, Any] | tuple[str, str]) -> None:
    """Queue InvokeEndpoint answers: a dict is sent as JSON, a (body, content type) pair as is."""
    results = []
    for answer in answers:
        body, content_type = (json.dumps(answer), "application/json") if isinstance(answer, dict) else answer
        results.append({"Body": body, "ContentType": content_type, "InvokedProductionVariant": "AllTraffic"})
    requests.post(MOTO_RESULTS_API, json={"results": results}, timeout=5).raise_for_status()


def test_jpeg_body_reaches_the_endpoint_unchanged(
    moto_app, context, make_event, jpeg_bytes, answer, response_body, raw_image_bodies
):
    queue_answers(answer(5))
    response = moto_app.handler(make_event(jpeg_bytes, "image/jpeg", query={"top_k": "3"}), context)
    assert response["statusCode"] == 200
    result = response_body(response)
    assert result == {"predictions": answer(5)["predictions"][:3], "runtime": "onnxruntime-fp32"}

    [sent] = raw_image_bodies
    assert sent["path"] == "/endpoints/imgclf-classifier/invocations"
    assert sent["body"] == jpeg_bytes
    assert sent["headers"]["content-type"] == "image/jpeg"
    assert sent["headers"]["accept"] == "application/json"
    assert sent["headers"]["x-amzn-sagemaker-custom-attributes"] == "top_k=3"


def test_the_invocation_is_authorized_as_aws_evaluates_it(
    moto_app, context, make_event, jpeg_bytes, answer, recorded_calls
):
    """What the recorded_calls fixture checks after every test here, shown on one call: InvokeEndpoint on
    the endpoint, by InferenceFunction's role; the same call to another endpoint is denied, by name."""
    queue_answers(answer(5))
    assert moto_app.handler(make_event(jpeg_bytes, "image/jpeg"), context)["statusCode"] == 200
    [call] = recorded_calls
    assert (call.service, call.operation, call.params["EndpointName"]) == ("sagemaker", "InvokeEndpoint", pw.ENDPOINT)
    template = iam_model.world_template()
    [verdict] = iam_model.assert_calls_authorized(template, recorded_calls, INFERENCE_FUNCTION)
    assert verdict.request.principal == template.role_of("InferenceFunction")
    assert (verdict.request.action, verdict.request.resource) == (
        "sagemaker:InvokeEndpoint",
        f"arn:aws:sagemaker:{pw.REGION}:{pw.ACCOUNT}:endpoint/{pw.ENDPOINT}",
    )
    elsewhere = call._replace(params={**call.params, "EndpointName": "other-endpoint"})
    with pytest.raises(
        AssertionError, match=r"is ImplicitlyDenied: sagemaker:InvokeEndpoint on .*endpoint/other-endpoint"
    ):
        iam_model.assert_calls_authorized(template, [elsewhere], INFERENCE_FUNCTION)


def test_json_png_request(moto_app, context, make_event, png_bytes, answer, response_body, raw_image_bodies):
    queue_answers(answer(7, runtime="openvino-int8"))
    body = json.dumps({"image": base64.b64encode(png_bytes).decode(), "top_k": 7})
    response = moto_app.handler(make_event(body, "application/json"), context)
    assert response["statusCode"] == 200
    result = response_body(response)
    assert len(result["predictions"]) == 7 and result["runtime"] == "openvino-int8"
    probabilities = [p["probability"] for p in result["predictions"]]
    assert probabilities == sorted(probabilities, reverse=True)
    [sent] = raw_image_bodies
    assert (sent["body"], sent["headers"]["content-type"]) == (png_bytes, "image/png")
    assert sent["headers"]["x-amzn-sagemaker-custom-attributes"] == "top_k=7"


def test_default_top_k(moto_app, context, make_event, image_factory, answer, response_body, raw_image_bodies):
    queue_answers(answer(20))
    response = moto_app.handler(make_event(image_factory("JPEG", 3), "application/octet-stream"), context)
    assert len(response_body(response)["predictions"]) == 5
    assert raw_image_bodies[0]["headers"]["x-amzn-sagemaker-custom-attributes"] == "top_k=5"


@pytest.mark.parametrize(
    "bad_answer",
    [
        ("<html>oops</html>", "text/html"),
        ("not json at all", "application/json"),
        ({"predictions": []},),
        ({"label": "no predictions key"},),
        ({"predictions": [{"label": "a", "class_id": 0, "probability": 7}]},),
    ],
)
def test_unreadable_model_answer_is_502(moto_app, context, make_event, image_factory, response_body, bad_answer):
    queue_answers(bad_answer[0] if len(bad_answer) == 1 else bad_answer)
    response = moto_app.handler(make_event(image_factory("PNG", 4), "image/png"), context)
    assert response["statusCode"] == 502
    assert response_body(response)["error"] == "model_error"


@pytest.mark.parametrize(
    ("event_args", "status"),
    [
        ((b"", "image/jpeg"), 400),
        ((b"GIF89a\x01\x00", "image/gif"), 415),
        ((b"plain text", "application/octet-stream"), 415),
        (('{"image": 1}', "application/json"), 400),
        ((b"\xff\xd8\xff" + bytes(5 * 1024 * 1024), "image/jpeg"), 413),
    ],
)
def test_client_errors_never_reach_the_endpoint(
    moto_app, context, make_event, response_body, raw_image_bodies, event_args, status
):
    response = moto_app.handler(make_event(*event_args), context)
    assert response["statusCode"] == status
    assert response_body(response)["message"]
    assert raw_image_bodies == []
