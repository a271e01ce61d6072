"""Property-based fuzzing of bodies, headers and encodings through the real handler.

Whatever a client sends, the answer is either 200 (and then exactly one JPEG/PNG reached the endpoint)
or a 4xx with a JSON error message (and nothing reached the endpoint): never a 5xx, never an exception.
The one exception is `GET /`, the web page: 200 with the page, and nothing reached the endpoint.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import imgclf_page
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from imgclf import contract

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------ strategies

image_like = st.one_of(
    st.binary(max_size=256),
    st.binary(max_size=256).map(lambda tail: JPEG_MAGIC + tail),
    st.binary(max_size=256).map(lambda tail: PNG_MAGIC + tail),
    st.sampled_from([b"GIF89a", b"BM", b"RIFF\x00\x00\x00\x00WEBP", JPEG_MAGIC[:2], PNG_MAGIC[:4]]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
top_k_values = st.one_of(st.integers(-5, 40), st.text(max_size=4), st.just(None), json_values)


@st.composite
def json_bodies(draw: st.DrawFn) -> str:
    document: dict[str, Any] = {}
    if draw(st.booleans()):
        image = draw(image_like)
        encoded = base64.b64encode(image).decode()
        document["image"] = draw(
            st.sampled_from(
                [
                    encoded,
                    "data:image/jpeg;base64," + encoded,
                    "data:image/png;base64," + encoded,
                    encoded[:-1],
                    encoded + "!",
                    "",
                ]
            )
        )
    else:
        document["image"] = draw(json_values)
    if draw(st.booleans()):
        document["top_k"] = draw(top_k_values)
    if draw(st.integers(0, 9)) == 0:
        document[draw(st.text(max_size=8))] = draw(json_values)
    text = json.dumps(document)
    return draw(st.sampled_from([text, text[: len(text) // 2], "[" + text + "]"]))


content_types = st.one_of(
    st.sampled_from(
        [
            "image/jpeg",
            "image/png",
            "application/octet-stream",
            "application/x-image",
            "application/json",
            "application/json; charset=utf-8",
            "IMAGE/JPEG",
            "text/plain",
            "multipart/form-data; boundary=xyz",
            "",
            " ; ",
            "image/gif",
        ]
    ),
    st.text(max_size=30),
)
other_headers = st.dictionaries(
    st.sampled_from(["accept", "x-forwarded-for", "content-length", "user-agent", "Accept-Encoding"]),
    st.text(max_size=20),
    max_size=3,
)


def rarely(strategy: st.SearchStrategy, common: Any) -> st.SearchStrategy:
    """Mostly `common`, sometimes something drawn from `strategy` (sampled_from draws indexes about
    evenly; hypothesis's integers and one_of favour the edge cases instead)."""
    return st.sampled_from([False] * 7 + [True]).flatmap(lambda rare: strategy if rare else st.just(common))


@st.composite
def url_events(draw: st.DrawFn) -> dict[str, Any]:
    headers = draw(other_headers)
    if draw(rarely(st.just(False), True)):
        name = draw(st.sampled_from(["content-type", "Content-Type", "CONTENT-TYPE"]))
        headers[name] = draw(content_types)
    encoding = draw(rarely(st.one_of(st.sampled_from(["gzip", "identity", "", "br"]), st.text(max_size=8)), None))
    if encoding is not None:
        headers["content-encoding"] = encoding
    kind = draw(st.sampled_from(["image", "image", "json", "json", "text", "none"]))
    if kind == "image":
        # Binary bodies arrive base64-encoded; a client declaring text gets them as (mangled) text.
        raw = draw(image_like)
        base64_encoded = draw(rarely(st.just(False), True))
        body = base64.b64encode(raw).decode() if base64_encoded else raw.decode("latin-1")
    elif kind == "json":
        text = draw(json_bodies())
        base64_encoded = draw(st.booleans())
        body = base64.b64encode(text.encode("utf-8", "surrogatepass")).decode() if base64_encoded else text
    elif kind == "text":
        base64_encoded = draw(st.booleans())  # a text body wrongly flagged as base64 must be a 400
        body = draw(st.text(max_size=64))
    else:
        base64_encoded, body = draw(st.booleans()), None
    query = draw(
        st.one_of(
            st.none(),
            st.fixed_dictionaries({"top_k": st.text(max_size=4)}),
            st.fixed_dictionaries({"top_k": st.integers(-2, 25).map(str)}),
            st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
        )
    )
    method = draw(rarely(st.sampled_from(["GET", "PUT", "DELETE", "OPTIONS", "HEAD", "post", ""]), "POST"))
    path = draw(rarely(st.sampled_from(["", "/x", "//", "/predict", "/?top_k=3"]), "/"))
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "isBase64Encoded": base64_encoded,
        "requestContext": {
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "hypothesis",
            }
        },
    }
    if query is not None:
        event["queryStringParameters"] = query
    if body is not None:
        event["body"] = body
    return event


# ------------------------------------------------------------------------------------------ property


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(url_event=url_events())
def test_client_errors_are_4xx_json_and_never_reach_the_endpoint(warm_local_app, context, url_event):
    app, fake_runtime = warm_local_app
    before = len(fake_runtime.requests)
    response = app.handler(url_event, context)
    status = response["statusCode"]
    if url_event["requestContext"]["http"]["method"].upper() == "GET" and (url_event["rawPath"] or "/") == "/":
        # The web page, whatever else the request carries: static, and nothing reaches the endpoint.
        assert (status, response["headers"]["Content-Type"]) == (200, imgclf_page.CONTENT_TYPE)
        assert response["body"] == imgclf_page.HTML and fake_runtime.requests[before:] == []
        return
    body = json.loads(response["body"])
    event(f"{status} {body.get('error', '')}")  # shown by --hypothesis-show-statistics
    sent = fake_runtime.requests[before:]
    if status == 200:
        [request] = sent
        assert contract.sniff_image_type(request.body) == request.headers["content-type"]
        assert 1 <= len(body["predictions"]) <= contract.MAX_TOP_K
    else:
        assert 400 <= status < 500, (status, body)
        assert isinstance(body["message"], str) and body["message"]
        assert isinstance(body["error"], str)
        assert sent == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    magic=st.sampled_from([JPEG_MAGIC, PNG_MAGIC]),
    tail=st.binary(min_size=1, max_size=512),
    declared=st.sampled_from(
        [None, "image/jpeg", "image/png", "application/octet-stream", "application/x-image", "application/json"]
    ),
    top_k=st.one_of(st.none(), st.integers(1, contract.MAX_TOP_K)),
)
def test_jpeg_and_png_bodies_reach_the_endpoint_intact(warm_local_app, context, magic, tail, declared, top_k):
    app, fake_runtime = warm_local_app
    image = magic + tail
    sniffed = contract.sniff_image_type(image)
    if declared == "application/json":
        document: dict[str, Any] = {"image": base64.b64encode(image).decode()}
        if top_k is not None:
            document["top_k"] = top_k
        body, query = base64.b64encode(json.dumps(document).encode()).decode(), None
    else:
        body, query = base64.b64encode(image).decode(), None if top_k is None else {"top_k": str(top_k)}
    url_event: dict[str, Any] = {
        "rawPath": "/",
        "headers": {} if declared is None else {"content-type": declared},
        "requestContext": {"http": {"method": "POST", "path": "/"}},
        "body": body,
        "isBase64Encoded": True,
    }
    if query:
        url_event["queryStringParameters"] = query
    before = len(fake_runtime.requests)
    response = app.handler(url_event, context)
    if declared in ("image/jpeg", "image/png") and declared != sniffed:
        assert response["statusCode"] == 415
        assert len(fake_runtime.requests) == before
        return
    assert response["statusCode"] == 200, response["body"]
    [request] = fake_runtime.requests[before:]
    assert (request.body, request.headers["content-type"]) == (image, sniffed)
    expected_top_k = contract.DEFAULT_TOP_K if top_k is None else top_k
    assert request.headers["x-amzn-sagemaker-custom-attributes"] == f"top_k={expected_top_k}"
