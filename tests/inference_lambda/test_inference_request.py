"""Pure parts of the inference Lambda: request validation, the endpoint's answer, error mapping, timeouts."""

from __future__ import annotations

import base64
import json

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
)
from imgclf_lambda import endpoint
from imgclf_lambda.request import (
    MAX_JSON_BODY_BYTES,
    HttpError,
    is_page_request,
    parse_request,
    read_endpoint_answer,
)

from imgclf import contract


def _refused(event: dict) -> HttpError:
    with pytest.raises(HttpError) as caught:
        parse_request(event)
    return caught.value


# ---------------------------------------------------------------------------------------------- request


def test_raw_jpeg_with_top_k_in_query(make_event, jpeg_bytes):
    request = parse_request(make_event(jpeg_bytes, "image/jpeg", query={"top_k": "3"}))
    assert (request.image, request.content_type, request.top_k) == (jpeg_bytes, "image/jpeg", 3)


@pytest.mark.parametrize(
    "declared", [None, "application/octet-stream", "application/x-image", "IMAGE/PNG; charset=binary"]
)
def test_png_is_sniffed_whatever_generic_type_is_declared(make_event, png_bytes, declared):
    request = parse_request(make_event(png_bytes, declared))
    assert (request.content_type, request.top_k) == ("image/png", contract.DEFAULT_TOP_K)


def test_json_body_with_top_k(make_event, png_bytes):
    body = json.dumps({"image": base64.b64encode(png_bytes).decode(), "top_k": 7})
    request = parse_request(make_event(body, "application/json; charset=utf-8"))
    assert (request.image, request.content_type, request.top_k) == (png_bytes, "image/png", 7)


def test_json_body_accepts_data_uri_and_wrapped_base64(make_event, jpeg_bytes):
    encoded = base64.encodebytes(jpeg_bytes).decode()  # wrapped at 76 columns, as `base64` prints it
    assert "\n" in encoded
    body = json.dumps({"image": f"data:image/jpeg;base64,{encoded}"})
    assert parse_request(make_event(body, "application/json")).image == jpeg_bytes


def test_json_body_may_arrive_base64_encoded(make_event, png_bytes):
    body = json.dumps({"image": base64.b64encode(png_bytes).decode()}).encode()
    assert parse_request(make_event(body, "application/json", base64_encoded=True)).image == png_bytes


def test_header_names_are_case_insensitive(make_event, jpeg_bytes):
    event = make_event(jpeg_bytes, None, headers={"Content-Type": "image/jpeg"})
    assert parse_request(event).content_type == "image/jpeg"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("PUT", "/", 405), ("DELETE", "/", 405), ("HEAD", "/", 405), ("POST", "/predict", 404), ("GET", "/x", 404)],
)
def test_method_and_route(make_event, jpeg_bytes, method, path, status):
    error = _refused(make_event(jpeg_bytes, "image/jpeg", method=method, path=path))
    assert error.status == status
    if status == 405:
        assert error.headers == {"Allow": "GET, POST"}  # GET / is the web page


@pytest.mark.parametrize(
    ("method", "path", "is_page"),
    [("GET", "/", True), ("get", "/", True), ("GET", "/x", False), ("POST", "/", False), ("HEAD", "/", False)],
)
def test_only_get_slash_is_the_page(make_event, method, path, is_page):
    assert is_page_request(make_event(None, None, method=method, path=path)) is is_page


@pytest.mark.parametrize("body", [None, b"", ""])
def test_empty_body_is_400(make_event, body):
    assert _refused(make_event(body, "image/jpeg")).status == 400


def test_broken_base64_event_body_is_400(make_event):
    assert _refused(make_event("not*base64", "image/jpeg", base64_encoded=True)).status == 400


@pytest.mark.parametrize(
    "body",
    [
        "{",
        "[]",
        '"image"',
        "null",
        json.dumps({"top_k": 3}),
        json.dumps({"image": 42}),
        json.dumps({"image": "@@@@"}),
        json.dumps({"image": "QUJD", "extra": 1}),
        json.dumps({"image": "data:image/png,QUJD"}),
        "\ud800",
    ],
)
def test_malformed_json_is_400(make_event, body):
    error = _refused(make_event(body, "application/json"))
    assert (error.status, error.code) == (400, "malformed_body")


def test_json_with_empty_image_is_400(make_event):
    assert _refused(make_event(json.dumps({"image": ""}), "application/json")).status == 400


@pytest.mark.parametrize("top_k", [0, -1, contract.MAX_TOP_K + 1, "3", 2.5, True, None, [3]])
def test_bad_top_k_in_json_is_400(make_event, png_bytes, top_k):
    document = {"image": base64.b64encode(png_bytes).decode(), "top_k": top_k}
    if top_k is None:  # explicit null means "default"
        assert parse_request(make_event(json.dumps(document), "application/json")).top_k == 5
        return
    if top_k == "3":  # a numeric string is read as text, like the query string
        assert parse_request(make_event(json.dumps(document), "application/json")).top_k == 3
        return
    error = _refused(make_event(json.dumps(document), "application/json"))
    assert (error.status, error.code) == (400, "bad_top_k")


@pytest.mark.parametrize("top_k", ["0", "21", "abc", "", "3.0", "1e1"])
def test_bad_top_k_in_query_is_400(make_event, jpeg_bytes, top_k):
    assert _refused(make_event(jpeg_bytes, "image/jpeg", query={"top_k": top_k})).status == 400


def test_top_k_given_twice_is_400(make_event, png_bytes):
    body = json.dumps({"image": base64.b64encode(png_bytes).decode(), "top_k": 3})
    assert _refused(make_event(body, "application/json", query={"top_k": "3"})).status == 400


def test_image_over_the_limit_is_413(make_event):
    image = b"\xff\xd8\xff" + bytes(contract.MAX_IMAGE_BYTES - 2)
    error = _refused(make_event(image, "image/jpeg"))
    assert (error.status, error.code) == (413, "image_too_large")
    just_fits = image[:-1]
    assert parse_request(make_event(just_fits, "image/jpeg")).image == just_fits


def test_json_image_over_the_limit_is_413(make_event):
    image = b"\x89PNG\r\n\x1a\n" + bytes(contract.MAX_IMAGE_BYTES - 7)
    body = json.dumps({"image": base64.b64encode(image).decode()})
    assert len(body) <= MAX_JSON_BODY_BYTES  # refused for the image, not for the framing
    assert _refused(make_event(body, "application/json")).status == 413


def test_oversized_bodies_are_refused_before_decoding(make_event):
    huge = "A" * (MAX_JSON_BODY_BYTES * 2)
    assert _refused(make_event(huge, "image/jpeg", base64_encoded=True)).status == 413
    assert _refused(make_event(huge, "application/json", base64_encoded=False)).status == 413


@pytest.mark.parametrize(
    "body", [b"GIF89a....", b"BM6\x00\x00\x00", b"\x00\x00\x00\x0cjP  ", b"hello", b"\xff\xd8", b"\x89PNG"]
)
def test_not_jpeg_or_png_is_415(make_event, body):
    error = _refused(make_event(body, "application/octet-stream"))
    assert (error.status, error.code) == (415, "unsupported_image")


def test_declared_type_must_match_the_bytes(make_event, jpeg_bytes, png_bytes):
    assert _refused(make_event(jpeg_bytes, "image/png")).status == 415
    body = json.dumps({"image": "data:image/jpeg;base64," + base64.b64encode(png_bytes).decode()})
    assert _refused(make_event(body, "application/json")).status == 415


@pytest.mark.parametrize(
    "content_type", ["text/plain", "multipart/form-data; boundary=x", "image/gif", "application/x-www-form-urlencoded"]
)
def test_unsupported_content_type_is_415(make_event, jpeg_bytes, content_type):
    error = _refused(make_event(jpeg_bytes, content_type))
    assert (error.status, error.code) == (415, "unsupported_media_type")


def test_compressed_body_is_415(make_event, jpeg_bytes):
    error = _refused(make_event(jpeg_bytes, "image/jpeg", headers={"content-encoding": "gzip"}))
    assert error.status == 415


# ---------------------------------------------------------------------------------------------- answer


def test_answer_is_sorted_and_cut_to_top_k(answer):
    document = answer(5)
    document["predictions"].reverse()
    result = read_endpoint_answer(json.dumps(document).encode(), top_k=3)
    assert [p["class_id"] for p in result["predictions"]] == [0, 1, 2]
    assert result["runtime"] == "onnxruntime-fp32"
    assert set(result) == {"predictions", "runtime"}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"predictions": []}',
        b'{"predictions": "x"}',
        b'{"predictions": [1]}',
        b'{"predictions": [{"label": "a", "class_id": "0", "probability": 0.5}]}',
        b'{"predictions": [{"label": "a", "class_id": 0, "probability": 1.5}]}',
        b'{"predictions": [{"label": "a", "class_id": 0, "probability": NaN}]}',
        b'{"predictions": [{"label": 3, "class_id": 0, "probability": 0.5}]}',
    ],
)
def test_unreadable_answer_is_502(body):
    with pytest.raises(HttpError) as caught:
        read_endpoint_answer(body, top_k=5)
    assert caught.value.status == 502


# ---------------------------------------------------------------------------------------------- errors


def _client_error(code: str, message: str = "", status: int = 400, **fields) -> ClientError:
    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}, **fields}
    return ClientError(response, "InvokeEndpoint")


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (_client_error("ThrottlingException", "Rate exceeded"), 429),
        (_client_error("ModelNotReadyException", "not loaded", 429), 503),
        (_client_error("ValidationError", "Endpoint imgclf-classifier of account 123456789012 not found."), 503),
        (_client_error("ValidationError", "1 validation error detected"), 502),
        (_client_error("ValidationError", "Request payload size exceeds the maximum allowed"), 413),
        (_client_error("ServiceUnavailable", "", 503), 503),
        (_client_error("InternalFailure", "", 500), 502),
        (_client_error("AccessDeniedException", "not authorized", 403), 502),
        (_client_error("ModelError", "Received server error (500)", 424, OriginalStatusCode=500), 502),
        (_client_error("ModelError", "Received client error (415)", 424, OriginalStatusCode=415), 415),
        (_client_error("ModelError", "Received client error (400)", 424, OriginalStatusCode=400), 400),
        (_client_error("ModelError", "Received server error (504)", 424, OriginalStatusCode=504), 504),
        (_client_error("ModelError", "Received server error (503)", 424, OriginalStatusCode=503), 503),
        (
            _client_error(
                "ModelError",
                'Received server error (0) from primary with message "Your invocation timed '
                'out while waiting for a response from container primary."',
                424,
                OriginalStatusCode=0,
            ),
            504,
        ),
        (ReadTimeoutError(endpoint_url="https://runtime.sagemaker"), 504),
        (ConnectTimeoutError(endpoint_url="https://runtime.sagemaker"), 504),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), 503),
        (IncompleteReadError(actual_bytes=1, expected_bytes=2), 502),
    ],
)
def test_endpoint_errors_map_to_actionable_statuses(error, status):
    mapped = endpoint.endpoint_error(error)
    assert mapped.status == status
    assert "account" not in mapped.message and "123456789012" not in mapped.message
    if status in (429, 503):
        assert int(mapped.headers["Retry-After"]) > 0


# ---------------------------------------------------------------------------------------------- budget


@pytest.mark.parametrize("timeout", [4, 5, 10, 30, 60, 900])
@pytest.mark.parametrize("attempts", [1, 2, 3])
def test_invoke_budget_ends_before_the_function_times_out(timeout, attempts):
    if timeout <= 10 and attempts == 3:  # two retries' backoff ceilings (2 s + 4 s) eat the timeout
        with pytest.raises(ValueError):
            endpoint.invoke_budget(timeout, attempts)
        return
    budget = endpoint.invoke_budget(timeout, attempts)
    assert budget.max_attempts == attempts
    assert budget.read_timeout >= 0.1 and budget.connect_timeout > 0
    assert budget.worst_case_seconds() < timeout


def test_invoke_budget_refuses_a_timeout_too_short():
    with pytest.raises(ValueError, match="no time"):
        endpoint.invoke_budget(2, 2)


def test_settings_from_environ():
    settings = endpoint.Settings.from_environ(
        {
            "ENDPOINT_NAME": "ep",
            "FUNCTION_TIMEOUT_SECONDS": "30",
            "SAGEMAKER_RUNTIME_ENDPOINT_URL": "http://localhost:8080",
        }
    )
    assert (settings.endpoint_name, settings.endpoint_url, settings.region) == (
        "ep",
        "http://localhost:8080",
        "us-east-1",
    )
    assert settings.budget == endpoint.invoke_budget(30, 2)
    assert endpoint.client_config(settings).signature_version is endpoint.UNSIGNED
    remote = endpoint.Settings.from_environ({"ENDPOINT_NAME": "ep", "AWS_REGION": "eu-west-1"})
    assert (remote.endpoint_url, remote.region) == (None, "eu-west-1")
    assert endpoint.client_config(remote).signature_version is None
    with pytest.raises(ValueError, match="ENDPOINT_NAME"):
        endpoint.Settings.from_environ({})
