"""Every events/inference_*.json (the files `sam local invoke -e` takes) through the handler, with moto
answering for the endpoint; and what the function must not carry (torch, numpy, PIL)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from moto import mock_aws
from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

REPO_ROOT = Path(__file__).resolve().parents[2]
EVENT_FILES = sorted((REPO_ROOT / "events").glob("inference_*.json"))

# What each event must produce: 200 and how many predictions (its top_k), or a 4xx and its error code.
# A new event file fails the test until it is listed here.
EXPECTED: dict[str, tuple[int, int | str]] = {
    "inference_jpeg.json": (200, 3),
    "inference_png_octet_stream.json": (200, 5),
    "inference_json.json": (200, 5),
    "inference_bad_empty_body.json": (400, "empty_body"),
    "inference_bad_not_an_image.json": (415, "unsupported_media_type"),
    "inference_bad_type_mismatch.json": (415, "unsupported_image"),
    "inference_bad_json_syntax.json": (400, "malformed_body"),
    "inference_bad_json_not_base64.json": (400, "malformed_body"),
    "inference_bad_top_k.json": (400, "bad_top_k"),
    "inference_bad_method.json": (405, "method_not_allowed"),
    "inference_page.json": (200, "page"),  # a browser opening the Function URL: the web page
    "inference_bad_content_type.json": (415, "unsupported_media_type"),
}


def test_every_event_file_is_covered():
    assert {path.name for path in EVENT_FILES} == set(EXPECTED)


@pytest.fixture
def moto_app(load_app, monkeypatch):
    setup_class = SageMakerRuntimeResponse.setup_class

    def setup_class_keeping_bytes(self, request, full_url=None, headers=None, use_raw_body=None):
        setup_class(self, request, full_url, headers, use_raw_body=True)  # image bytes are not UTF-8
        self.body = base64.b64encode(self.raw_body).decode("ascii")

    monkeypatch.setattr(SageMakerRuntimeResponse, "setup_class", setup_class_keeping_bytes)
    with mock_aws():
        yield load_app()


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda path: path.name)
def test_event_file_through_the_handler(moto_app, context, answer, response_body, path):
    status, detail = EXPECTED[path.name]
    if status == 200 and detail != "page":
        results = [{"Body": json.dumps(answer(10)), "ContentType": "application/json"}]
        requests.post(
            "http://motoapi.amazonaws.com/moto-api/static/sagemaker/endpoint-results",
            json={"results": results},
            timeout=5,
        ).raise_for_status()
    response = moto_app.handler(json.loads(path.read_text()), context)
    assert response["statusCode"] == status, response["body"]
    if detail == "page":
        assert response["headers"]["Content-Type"] == "text/html; charset=utf-8"
        assert response["body"].startswith("<!doctype html>")
        return
    body = response_body(response)
    if status == 200:
        assert len(body["predictions"]) == detail
    else:
        assert body["error"] == detail and body["message"]


def test_function_imports_nothing_heavy():
    """A fresh interpreter loads the handler (client built at init) without torch, numpy or PIL."""
    code = (
        "import os, sys\n"
        "os.environ.update(ENDPOINT_NAME='e', AWS_DEFAULT_REGION='us-east-1',\n"
        "                  AWS_ACCESS_KEY_ID='x', AWS_SECRET_ACCESS_KEY='x')  # no credential-chain probing\n"
        "from functions.inference import app\n"
        "print(sorted(m for m in ('torch', 'numpy', 'PIL', 'onnxruntime', 'boto3') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
