"""Pure request and answer handling for the inference Lambda: no AWS client, no I/O.

`is_page_request` tells the web page's `GET /` (answered with `page_response`, imgclf_page) from a
prediction; `parse_request` turns a Lambda Function URL event (payload format 2.0) into an `ImageRequest`
or raises `HttpError` with a status a client can act on; `read_endpoint_answer` checks what the endpoint
sent back; `http_response` shapes what the Function URL returns. Everything is decided before any money
is spent.

Limits and content types come from imgclf.contract (shipped to this function in the pipeline's layer).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import imgclf_page

from imgclf import contract

# A JSON body carries the image in base64 (4 bytes per 3) plus a little framing; anything longer cannot
# hold an image within contract.MAX_IMAGE_BYTES, so it is refused before it is parsed.
_JSON_FRAMING_BYTES = 4096
MAX_JSON_BODY_BYTES = 4 * math.ceil(contract.MAX_IMAGE_BYTES / 3) + _JSON_FRAMING_BYTES
_JSON_FIELDS = frozenset({"image", "top_k"})
_DATA_URI_PREFIX = "data:"


@dataclass(frozen=True)
class ImageRequest:
    """A validated request: image bytes, their sniffed content type and how many classes to return."""

    image: bytes
    content_type: str
    top_k: int


class HttpError(Exception):
    """An answer for the client: HTTP status, a stable error code and a short message (no internals)."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def http_response(status: int, payload: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A Function URL response with a JSON body."""
    return {
        "statusCode": status,
        "headers": {"Content-Type": contract.JSON_CONTENT_TYPE, **(headers or {})},
        "body": json.dumps(payload, separators=(",", ":")),
        "isBase64Encoded": False,
    }


def error_response(error: HttpError) -> dict[str, Any]:
    return http_response(error.status, {"error": error.code, "message": error.message}, error.headers)


def page_response() -> dict[str, Any]:
    """The web page (imgclf_page/index.html) with its security headers, as a Function URL response."""
    return {
        "statusCode": 200,
        "headers": dict(imgclf_page.HEADERS),
        "body": imgclf_page.HTML,
        "isBase64Encoded": False,
    }


# --------------------------------------------------------------------------------------------------
# Request


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # Function URLs lower-case header names; hand-written events (sam local invoke) may not.
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _media_type(content_type: str | None) -> str | None:
    """'image/jpeg' from 'Image/JPEG; q=1'; None when the header is absent or blank."""
    if content_type is None:
        return None
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type or None


def _too_large(size: int, what: str = "the image") -> HttpError:
    return HttpError(
        413,
        "image_too_large",
        f"{what} is {size} bytes; images are limited to {contract.MAX_IMAGE_BYTES} bytes",
    )


def _decode_base64(text: str, what: str) -> bytes:
    # Strict alphabet (validate=True), but tolerate line breaks: `base64` on the command line wraps at 76.
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as err:
        raise HttpError(400, "malformed_body", f"{what} is not valid base64") from err


def _raw_body(event: Mapping[str, Any]) -> bytes:
    body = event.get("body")
    if body is None:
        return b""
    if not isinstance(body, str):
        raise HttpError(400, "malformed_body", "the request body must be a string in the event")
    if event.get("isBase64Encoded"):
        # Refuse before decoding what cannot fit (3 bytes per 4 characters).
        if len(body) // 4 * 3 > MAX_JSON_BODY_BYTES:
            raise _too_large(len(body) // 4 * 3, "the request body")
        return _decode_base64(body, "the request body")
    return body.encode("utf-8", errors="surrogatepass")


def _image_type(image: bytes, declared: str | None) -> str:
    """The sniffed type of `image`, which must agree with a specific declared type (not a generic one)."""
    if not image:
        raise HttpError(400, "empty_image", "the request carries no image bytes")
    if len(image) > contract.MAX_IMAGE_BYTES:
        raise _too_large(len(image))
    sniffed = contract.sniff_image_type(image)
    if sniffed is None:
        raise HttpError(415, "unsupported_image", "the body is not a JPEG or PNG image")
    if declared in (contract.JPEG_CONTENT_TYPE, contract.PNG_CONTENT_TYPE) and declared != sniffed:
        raise HttpError(415, "unsupported_image", f"Content-Type says {declared} but the bytes are {sniffed}")
    return sniffed


def _top_k(value: object) -> int:
    try:
        return contract.parse_top_k(value)
    except ValueError as err:
        raise HttpError(400, "bad_top_k", str(err)) from err


def _parse_json_body(body: bytes) -> tuple[bytes, str | None, object]:
    """(image bytes, declared type from a data: URI or None, top_k value or None) from a JSON body."""
    if len(body) > MAX_JSON_BODY_BYTES:
        raise _too_large(len(body), "the JSON body")
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as err:
        raise HttpError(400, "malformed_body", "the body is not valid JSON") from err
    if not isinstance(document, dict):
        raise HttpError(400, "malformed_body", 'the JSON body must be an object: {"image": "<base64>"}')
    unknown = sorted(set(document) - _JSON_FIELDS)
    if unknown:
        raise HttpError(
            400,
            "malformed_body",
            f"unknown field(s) {', '.join(map(repr, unknown))[:200]}; expected image, top_k",
        )
    encoded = document.get("image")
    if not isinstance(encoded, str):
        raise HttpError(400, "malformed_body", 'the JSON body needs "image": a base64 string')
    declared = None
    if encoded.startswith(_DATA_URI_PREFIX):  # data:image/png;base64,....
        header, separator, encoded = encoded.partition(",")
        if not separator or not header.endswith(";base64"):
            raise HttpError(400, "malformed_body", 'a data: URI in "image" must be base64-encoded')
        declared = _media_type(header[len(_DATA_URI_PREFIX) : -len(";base64")])
    return _decode_base64(encoded, '"image"'), declared, document.get("top_k")


def _method_and_path(event: Mapping[str, Any]) -> tuple[str, str]:
    http = (event.get("requestContext") or {}).get("http") or {}
    return str(http.get("method", "")).upper(), event.get("rawPath") or http.get("path") or "/"


def is_page_request(event: Mapping[str, Any]) -> bool:
    """`GET /` (query string or not): a browser asking for the page. A Function URL GET carries no body
    (https://docs.aws.amazon.com/lambda/latest/dg/urls-invocation.html#urls-request-payload)."""
    return _method_and_path(event) == ("GET", "/")


def parse_request(event: Mapping[str, Any]) -> ImageRequest:
    """Validate a Function URL event: `POST /` with raw JPEG/PNG bytes (top_k in the query string) or a
    JSON body {"image": "<base64>", "top_k": 5}. Raises HttpError (4xx) for anything else."""
    method, path = _method_and_path(event)
    if path != "/":
        raise HttpError(404, "not_found", "the only route is /: POST an image, or GET the web page")
    if method != "POST":
        raise HttpError(
            405, "method_not_allowed", "use POST with an image body (GET / is the web page)", {"Allow": "GET, POST"}
        )

    headers = event.get("headers") or {}
    encoding = (_header(headers, "content-encoding") or "identity").strip().lower()
    if encoding != "identity":
        raise HttpError(415, "unsupported_encoding", f"Content-Encoding {encoding[:40]!r} is not supported")

    query = event.get("queryStringParameters") or {}
    query_top_k = query.get("top_k")
    declared = _media_type(_header(headers, "content-type"))
    body = _raw_body(event)
    if not body:
        raise HttpError(400, "empty_body", "the request body is empty; send a JPEG or PNG image")

    if declared == contract.JSON_CONTENT_TYPE:
        image, declared_in_uri, json_top_k = _parse_json_body(body)
        if json_top_k is not None and query_top_k is not None:
            raise HttpError(400, "bad_top_k", "give top_k either in the JSON body or in the query, not both")
        top_k_value = json_top_k if json_top_k is not None else query_top_k
        content_type = _image_type(image, declared_in_uri)
    elif declared is None or declared in contract.IMAGE_CONTENT_TYPES:
        image, top_k_value = body, query_top_k
        content_type = _image_type(image, declared)
    else:
        raise HttpError(
            415,
            "unsupported_media_type",
            f"Content-Type {declared[:60]!r} is not supported; send image/jpeg, image/png or application/json",
        )
    top_k = contract.DEFAULT_TOP_K if top_k_value is None else _top_k(top_k_value)
    return ImageRequest(image=image, content_type=content_type, top_k=top_k)


# --------------------------------------------------------------------------------------------------
# Endpoint answer


def _bad_answer(why: str) -> HttpError:
    return HttpError(502, "model_error", f"the model returned an unreadable answer ({why})")


def _prediction(item: object) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise _bad_answer("a prediction is not an object")
    label, class_id, probability = item.get("label"), item.get("class_id"), item.get("probability")
    if not isinstance(label, str) or isinstance(class_id, bool) or not isinstance(class_id, int):
        raise _bad_answer("a prediction lacks label or class_id")
    if isinstance(probability, bool) or not isinstance(probability, int | float) or not 0.0 <= probability <= 1.0:
        raise _bad_answer("a probability is not in [0, 1]")
    return {"label": label, "class_id": class_id, "probability": float(probability)}


def read_endpoint_answer(body: bytes, top_k: int) -> dict[str, Any]:
    """The endpoint's JSON answer, checked against the agreed shape, best first, at most top_k entries."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as err:
        raise _bad_answer("not JSON") from err
    if not isinstance(document, dict) or not isinstance(document.get("predictions"), list):
        raise _bad_answer("no predictions list")
    predictions = sorted(
        (_prediction(item) for item in document["predictions"]), key=lambda p: p["probability"], reverse=True
    )
    if not predictions:
        raise _bad_answer("no predictions")
    runtime = document.get("runtime")
    return {"predictions": predictions[:top_k], "runtime": runtime if isinstance(runtime, str) else "unknown"}
