"""Every error path through the real handler and a real botocore client, pointed by
SAGEMAKER_RUNTIME_ENDPOINT_URL at a loopback server that answers as the SageMaker runtime does (moto
cannot throttle, fail a model or time out). Also covers local mode's use of that variable."""

from __future__ import annotations

import socket
import time

import pytest


@pytest.fixture
def app(load_app, fake_runtime):
    return load_app(SAGEMAKER_RUNTIME_ENDPOINT_URL=fake_runtime.url, FUNCTION_TIMEOUT_SECONDS="4")


def _post(app, context, make_event, image):
    return app.handler(make_event(image, "image/jpeg"), context)


def test_local_endpoint_happy_path(app, context, make_event, jpeg_bytes, fake_runtime, answer, response_body):
    fake_runtime.answer_ok(answer(5, runtime="torch-eager"))
    response = app.handler(make_event(jpeg_bytes, "image/jpeg", query={"top_k": "2"}), context)
    assert response["statusCode"] == 200
    assert response_body(response) == {"predictions": answer(2)["predictions"], "runtime": "torch-eager"}
    [request] = fake_runtime.requests
    assert request.path == "/endpoints/imgclf-classifier/invocations"
    assert request.body == jpeg_bytes
    assert request.headers["content-type"] == "image/jpeg"
    assert request.headers["accept"] == "application/json"
    assert request.headers["x-amzn-sagemaker-custom-attributes"] == "top_k=2"
    assert "authorization" not in request.headers  # a loopback endpoint gets unsigned requests


def test_throttling_is_retried_once_then_429(app, context, make_event, jpeg_bytes, fake_runtime, response_body):
    for _ in range(2):
        fake_runtime.answer_error(400, "ThrottlingException", "Rate exceeded")
    response = _post(app, context, make_event, jpeg_bytes)
    assert response["statusCode"] == 429
    assert response["headers"]["Retry-After"] == "1"
    assert response_body(response)["error"] == "throttled"
    assert len(fake_runtime.requests) == 2  # INVOKE_MAX_ATTEMPTS defaults to 2


def test_a_single_throttle_is_absorbed_by_the_retry(app, context, make_event, jpeg_bytes, fake_runtime, answer):
    fake_runtime.answer_error(400, "ThrottlingException", "Rate exceeded")
    fake_runtime.answer_ok(answer(5))
    assert _post(app, context, make_event, jpeg_bytes)["statusCode"] == 200
    assert len(fake_runtime.requests) == 2


@pytest.mark.parametrize(
    ("status", "code", "message", "fields", "expected"),
    [
        (
            424,
            "ModelError",
            'Received server error (500) from primary with message "boom"',
            {"OriginalStatusCode": 500, "OriginalMessage": "boom", "LogStreamArn": "arn:aws:logs:..."},
            502,
        ),
        (424, "ModelError", "Received client error (415) from primary", {"OriginalStatusCode": 415}, 415),
        (
            424,
            "ModelError",
            'Received server error (0) from primary with message "Your invocation timed out '
            'while waiting for a response from container primary."',
            {"OriginalStatusCode": 0},
            504,
        ),
        (400, "ValidationError", "Endpoint imgclf-classifier of account 123456789012 not found.", {}, 503),
        (429, "ModelNotReadyException", "Model is not ready", {}, 503),
        (500, "InternalFailure", "An internal error occurred", {}, 502),
        (403, "AccessDeniedException", "User is not authorized to perform sagemaker:InvokeEndpoint", {}, 502),
    ],
)
def test_endpoint_errors(
    app, context, make_event, jpeg_bytes, fake_runtime, response_body, status, code, message, fields, expected
):
    for _ in range(2):  # 5xx answers are retried once
        fake_runtime.answer_error(status, code, message, **fields)
    response = _post(app, context, make_event, jpeg_bytes)
    assert response["statusCode"] == expected
    body = response_body(response)
    assert set(body) == {"error", "message"}
    assert "123456789012" not in body["message"] and "arn:" not in body["message"]


def test_service_unavailable_is_503(app, context, make_event, jpeg_bytes, fake_runtime):
    for _ in range(2):
        fake_runtime.answer_error(503, "ServiceUnavailable", "Service unavailable")
    assert _post(app, context, make_event, jpeg_bytes)["statusCode"] == 503
    assert len(fake_runtime.requests) == 2


def test_slow_endpoint_is_504_before_the_function_times_out(
    app, context, make_event, jpeg_bytes, fake_runtime, answer, response_body
):
    # FUNCTION_TIMEOUT_SECONDS=4: each attempt may read for 0.4 s; the endpoint takes 1.5 s.
    assert app.SETTINGS.budget.read_timeout == pytest.approx(0.4)
    fake_runtime.answer_ok(answer(), delay=1.5)
    fake_runtime.answer_ok(answer(), delay=1.5)
    started = time.monotonic()
    response = _post(app, context, make_event, jpeg_bytes)
    elapsed = time.monotonic() - started
    assert response["statusCode"] == 504
    assert response_body(response)["error"] == "endpoint_timeout"
    assert elapsed < 4 - 0.4  # answered with the function's margin to spare
    assert len(fake_runtime.requests) == 2


def test_no_endpoint_listening_is_503(load_app, context, make_event, jpeg_bytes, response_body):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = load_app(SAGEMAKER_RUNTIME_ENDPOINT_URL=f"http://127.0.0.1:{port}", FUNCTION_TIMEOUT_SECONDS="4")
    response = _post(app, context, make_event, jpeg_bytes)
    assert response["statusCode"] == 503
    assert response_body(response)["error"] == "endpoint_unavailable"


def test_unexpected_failure_is_a_json_500_without_internals(
    app, context, make_event, jpeg_bytes, monkeypatch, response_body
):
    def broken_invoke(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(app, "invoke", broken_invoke)
    response = _post(app, context, make_event, jpeg_bytes)
    assert response["statusCode"] == 500
    assert "secret" not in response["body"]
    assert response_body(response)["error"] == "internal_error"
