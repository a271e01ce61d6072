"""The web page through the inference Lambda's handler: `GET /` answers it with its security headers,
and a real headless Chromium that opens the Function URL gets a working page whose photo goes back
through the same handler (and its strict validation and error mapping) to the endpoint.

In the browser tests Playwright hands each request the browser makes to the handler as the Function URL
event Lambda would build from it (payload format 2.0: a binary body base64-encoded, a GET without a body,
https://docs.aws.amazon.com/lambda/latest/dg/urls-invocation.html#urls-request-payload), and returns the
handler's response as the HTTP response. The browser enforces the headers (CSP included) itself.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import imgclf_page
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
PAGE_FILE = REPO / "functions" / "inference" / "imgclf_page" / "index.html"
FUNCTION_URL = "https://abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws/"
MESSAGE_SELECTOR = "#error-message"


class _PageParts(HTMLParser):
    """The inline <script>/<style> texts and every URL-bearing attribute, read by the standard library's
    HTML parser (independently of imgclf_page's own extraction)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.inline: dict[str, list[str]] = {"script": [], "style": []}
        self.urls: list[str] = []
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.inline:
            self._open = tag
            self.inline[tag].append("")
        self.urls += [value or "" for name, value in attrs if name in ("src", "href", "action", "srcset")]

    def handle_endtag(self, tag: str) -> None:
        self._open = None if tag == self._open else self._open

    def handle_data(self, data: str) -> None:
        if self._open:
            self.inline[self._open][-1] += data


def _csp(header: str) -> dict[str, list[str]]:
    directives = [part.strip().split() for part in header.split(";") if part.strip()]
    return {words[0]: words[1:] for words in directives}


def _sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_get_slash_is_the_page_with_its_security_headers(load_app, context, make_event, fake_runtime):
    app = load_app(SAGEMAKER_RUNTIME_ENDPOINT_URL=fake_runtime.url)
    for event in (make_event(None, None, method="GET"), make_event(None, None, method="GET", query={"utm": "x"}),
                  json.loads((REPO / "events" / "inference_page.json").read_text())):
        response = app.handler(event, context)
        assert response["statusCode"] == 200
        assert response["isBase64Encoded"] is False
        assert response["body"] == PAGE_FILE.read_text(encoding="utf-8")
        headers = response["headers"]
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["X-Frame-Options"] == "DENY"
        # CORS stays the Function URL's business: its configured headers override a function's anyway.
        assert not [name for name in headers if name.lower().startswith("access-control-")]
    assert fake_runtime.requests == []  # the page costs no endpoint call


def test_the_csp_allows_only_the_page_itself():
    parts = _PageParts()
    parts.feed(PAGE_FILE.read_text(encoding="utf-8"))
    policy = _csp(imgclf_page.HEADERS["Content-Security-Policy"])
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == [_sha256_source(text) for text in parts.inline["script"]] != []
    assert policy["style-src"] == [_sha256_source(text) for text in parts.inline["style"]] != []
    assert policy["connect-src"] == ["'self'"]
    assert policy["img-src"] == ["data:"]
    assert policy["frame-ancestors"] == policy["base-uri"] == policy["form-action"] == ["'none'"]
    assert not re.search(r"unsafe-|\*|https?:", imgclf_page.HEADERS["Content-Security-Policy"])
    # Nothing is loaded from anywhere: no CDN, no other file.
    assert parts.urls == ["data:,"]  # the empty favicon
    assert "http://" not in PAGE_FILE.read_text() and "https://" not in PAGE_FILE.read_text()


def test_post_handling_is_unchanged_by_the_page(load_app, context, make_event, fake_runtime, jpeg_bytes):
    app = load_app(SAGEMAKER_RUNTIME_ENDPOINT_URL=fake_runtime.url)
    assert app.handler(make_event(b"<html>", "text/html"), context)["statusCode"] == 415
    assert app.handler(make_event(jpeg_bytes, "image/jpeg", method="PUT"), context)["statusCode"] == 405
    assert app.handler(make_event(None, None, method="GET", path="/index.html"), context)["statusCode"] == 404
    assert app.handler(make_event(jpeg_bytes, "image/jpeg"), context)["statusCode"] == 200
    assert len(fake_runtime.requests) == 1


# --------------------------------------------------------------------------------------------------
# In a real browser, through the handler.


def function_url_event(request: Any) -> dict[str, Any]:
    """The Function URL event (payload 2.0) for a request the browser made."""
    url = urllib.parse.urlsplit(request.url)
    headers = {name.lower(): value for name, value in request.all_headers().items()}
    query = {name: ",".join(values) for name, values in urllib.parse.parse_qs(url.query).items()}
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": url.path or "/",
        "rawQueryString": url.query,
        "headers": headers,
        "requestContext": {
            "domainName": url.hostname,
            "http": {"method": request.method, "path": url.path or "/", "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.7", "userAgent": headers.get("user-agent", "")},
            "requestId": "browser",
            "routeKey": "$default",
            "stage": "$default",
        },
        "isBase64Encoded": False,
    }
    if query:
        event["queryStringParameters"] = query
    body = request.post_data_buffer
    if body:
        if headers.get("content-type", "").startswith(("text/", "application/json")):
            event["body"] = body.decode("utf-8")
        else:  # binary: Lambda base64-encodes it
            event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode("ascii"), True
    return event


@pytest.fixture
def open_page(new_page, context) -> Callable[[Any], tuple[Any, list[str]]]:
    """Open the Function URL in a fresh browser context whose every request goes to `app.handler`."""

    def open_with(app: Any) -> tuple[Any, list[str]]:
        page, problems = new_page()

        def through_the_handler(route: Any) -> None:
            response = app.handler(function_url_event(route.request), context)
            body = response.get("body", "")
            route.fulfill(status=response["statusCode"], headers=response.get("headers", {}),
                          body=base64.b64decode(body) if response.get("isBase64Encoded") else body)

        page.route("**/*", through_the_handler)
        page.goto(FUNCTION_URL)
        return page, problems

    return open_with


def _jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 60, 200)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _choose(page: Any, name: str, data: bytes, mime: str = "image/jpeg") -> None:
    page.get_by_label("Choose a photo").set_input_files({"name": name, "mimeType": mime, "buffer": data})


def test_the_page_works_under_its_own_csp_through_the_handler(load_app, fake_runtime, open_page, answer):
    app = load_app(SAGEMAKER_RUNTIME_ENDPOINT_URL=fake_runtime.url)
    page, problems = open_page(app)
    _choose(page, "wide.jpg", _jpeg(2000, 1000))
    page.locator("#predictions li").first.wait_for()
    labels = page.locator("#predictions li").evaluate_all("items => items.map(i => i.dataset.label)")
    assert labels == [p["label"] for p in answer(5)["predictions"]]
    assert page.locator("#runtime").text_content() == "onnxruntime-fp32"
    assert page.locator("#sent").text_content().startswith("1024 × 512 px JPEG")
    # The bar is sized through the CSSOM, which the CSP allows (a style attribute would be refused).
    width = page.locator("#predictions li .bar span").first.evaluate("e => e.getBoundingClientRect().width")
    track = page.locator("#predictions li .bar").first.evaluate("e => e.getBoundingClientRect().width")
    assert width == pytest.approx(0.5 * track, abs=2)  # answer(): the best class has probability 0.5
    [request] = fake_runtime.requests
    with Image.open(io.BytesIO(request.body)) as sent:
        assert (sent.format, sent.size) == ("JPEG", (1024, 512))
    assert problems == []

    # The CSP is really in force. Script text must be a TrustedScript (require-trusted-types-for); and
    # even as one, an inline script that is not the page's own (by hash) does not run (script-src).
    with pytest.raises(Exception, match="TrustedScript"):
        page.add_script_tag(content="window.injected = true")
    violation = page.evaluate("""() => new Promise((resolve) => {
        document.addEventListener("securitypolicyviolation", (e) => resolve(e.effectiveDirective));
        const policy = trustedTypes.createPolicy("probe", {createScript: (text) => text});
        const script = document.createElement("script");
        script.text = policy.createScript("window.injected = true");
        document.body.append(script);
    })""")
    assert violation == "script-src-elem" and page.evaluate("window.injected") is None
    assert page.evaluate("fetch('https://example.org/').then(() => 'sent', () => 'blocked')") == "blocked"


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ([(400, "ThrottlingException", "Rate exceeded", {})] * 2,
         "The classifier is busy right now. Please wait a moment and try again. (It suggests waiting 1 second.)"),
        ([(429, "ModelNotReadyException", "Model is not ready", {})],
         "The model is not available right now"),
        ([(400, "ValidationError", "Endpoint imgclf-classifier of account 123456789012 not found.", {})],
         "(It suggests waiting 30 seconds.)"),
        ([(424, "ModelError", "Received client error (413) from primary", {"OriginalStatusCode": 413})],
         "This photo is too large for the classifier"),
        ([(424, "ModelError", "Received client error (415) from primary", {"OriginalStatusCode": 415})],
         "The classifier only reads JPEG and PNG photos"),
        ([(424, "ModelError", "boom", {"OriginalStatusCode": 500})], "The model gave an answer that could not be read"),
    ],
    ids=["429-throttled", "503-loading", "503-not-in-service", "413", "415", "502"],
)
def test_every_error_is_a_human_message(load_app, fake_runtime, open_page, answers, expected):
    app = load_app(SAGEMAKER_RUNTIME_ENDPOINT_URL=fake_runtime.url)
    for status, code, message, fields in answers:
        fake_runtime.answer_error(status, code, message, **fields)
    page, _ = open_page(app)
    _choose(page, "photo.jpg", _jpeg(64, 48))
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert expected in page.locator(MESSAGE_SELECTOR).text_content()
    text = alert.inner_text()
    assert "{" not in text and '"error"' not in text  # never a raw JSON dump
    assert page.locator("#result").is_hidden()


def test_a_model_that_times_out_is_a_human_message(load_app, fake_runtime, open_page):
    app = load_app(SAGEMAKER_RUNTIME_ENDPOINT_URL=fake_runtime.url, FUNCTION_TIMEOUT_SECONDS="2",
                   INVOKE_MAX_ATTEMPTS="1")
    fake_runtime.answer_ok({"predictions": []}, delay=2.5)
    page, _ = open_page(app)
    _choose(page, "photo.jpg", _jpeg(64, 48))
    page.get_by_role("alert").wait_for(timeout=10_000)
    assert page.locator(MESSAGE_SELECTOR).text_content() == "The model took too long to answer. Please try again."


SAM = REPO / ".venv-sam" / "bin" / "sam"


@pytest.mark.skipif(shutil.which("make") is None, reason="sam build's makefile builder (the layer) needs make")
def test_sam_build_ships_the_page_and_the_built_function_serves_it(tmp_path):
    """What Lambda runs: the function's built code at /var/task and the layer's python/ at /opt/python
    are all of sys.path that matters; the page and the handler's modules must come from there, with no
    path trick."""
    assert SAM.exists(), "run `make aws-tools` first (the SAM CLI lives in .venv-sam)"
    env = {**os.environ, "PATH": f"{SAM.parent}:{os.environ['PATH']}", "AWS_DEFAULT_REGION": "us-east-1",
           "SAM_CLI_TELEMETRY": "0"}
    build = tmp_path / "build"
    result = subprocess.run([str(SAM), "build", "InferenceFunction", "--template-file", str(REPO / "template.yaml"),
                             "--build-dir", str(build), "--cache-dir", str(tmp_path / "cache")],
                            cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    task, layer = build / "InferenceFunction", build / "PipelineLayer" / "python"
    assert (task / "imgclf_page" / "index.html").read_bytes() == PAGE_FILE.read_bytes()
    probe = (
        "import json, sys\n"
        f"sys.path[:0] = [{str(task)!r}, {str(layer)!r}]\n"
        "import app, imgclf_lambda, imgclf_page\n"
        f"assert imgclf_page.__file__.startswith({str(task)!r}), imgclf_page.__file__\n"
        f"assert imgclf_lambda.__file__.startswith({str(task)!r}), imgclf_lambda.__file__\n"
        f"event = json.load(open({str(REPO / 'events' / 'inference_page.json')!r}))\n"
        "class Context:\n"
        "    function_name = 'inference'; memory_limit_in_mb = 256; aws_request_id = 'r'\n"
        "    invoked_function_arn = 'arn:aws:lambda:us-east-1:123456789012:function:inference'\n"
        "response = app.handler(event, Context())\n"
        "print(json.dumps({'status': response['statusCode'], 'type': response['headers']['Content-Type'],\n"
        "                  'size': len(response['body'])}))\n"
    )
    run_env = {**os.environ, "ENDPOINT_NAME": "imgclf-classifier", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "POWERTOOLS_LOG_LEVEL": "ERROR"}
    served = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env=run_env)
    assert served.returncode == 0, served.stderr[-3000:]
    assert json.loads(served.stdout.strip().splitlines()[-1]) == {
        "status": 200, "type": "text/html; charset=utf-8", "size": len(PAGE_FILE.read_text(encoding="utf-8"))}
