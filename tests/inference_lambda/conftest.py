"""Fixtures for the inference Lambda: import its handler as a package (functions.inference.app), build
Function URL events, and two stand-ins for the SageMaker runtime: moto (queued answers, happy paths) and a
loopback HTTP server that speaks the runtime's wire protocol, for the errors moto cannot produce
(throttling, model errors, timeouts) and for SAGEMAKER_RUNTIME_ENDPOINT_URL itself."""

from __future__ import annotations

import base64
import importlib
import io
import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
HANDLER_MODULE = "functions.inference.app"
EVENTS_DIR = REPO_ROOT / "events"
ENDPOINT_NAME = "imgclf-classifier"


@dataclass
class LambdaContext:
    """The context attributes Powertools' logger reads."""

    function_name: str = "inference"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:inference"
    aws_request_id: str = "c0ffee00-0000-4000-8000-000000000001"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@pytest.fixture(scope="session")
def context() -> LambdaContext:
    return LambdaContext()


def _load_app(patch: pytest.MonkeyPatch, env: dict[str, str]) -> ModuleType:
    """Import functions/inference/app.py afresh with the given environment, as a new Lambda execution
    environment would (its client is built at import)."""
    patch.setenv("AWS_ACCESS_KEY_ID", "testing")
    patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    patch.delenv("AWS_PROFILE", raising=False)
    patch.delenv("SAGEMAKER_RUNTIME_ENDPOINT_URL", raising=False)
    patch.setenv("ENDPOINT_NAME", ENDPOINT_NAME)
    for key, value in env.items():
        patch.setenv(key, value)
    sys.modules.pop(HANDLER_MODULE, None)
    return importlib.import_module(HANDLER_MODULE)


@pytest.fixture
def load_app(monkeypatch: pytest.MonkeyPatch) -> Callable[..., ModuleType]:
    return lambda **env: _load_app(monkeypatch, env)


def url_event(
    body: bytes | str | None,
    content_type: str | None = None,
    *,
    base64_encoded: bool | None = None,
    method: str = "POST",
    path: str = "/",
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Function URL event (payload 2.0). Bytes are base64-encoded, as Lambda does for binary bodies."""
    all_headers = {"host": "abc.lambda-url.us-east-1.on.aws", **(headers or {})}
    if content_type is not None:
        all_headers["content-type"] = content_type
    if base64_encoded is None:
        base64_encoded = isinstance(body, bytes)
    if isinstance(body, bytes):
        body = base64.b64encode(body).decode("ascii") if base64_encoded else body.decode("latin-1")
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "&".join(f"{k}={v}" for k, v in (query or {}).items()),
        "headers": all_headers,
        "requestContext": {
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "pytest",
            },
            "requestId": "r-1",
            "routeKey": "$default",
            "stage": "$default",
        },
        "isBase64Encoded": base64_encoded,
    }
    if query:
        event["queryStringParameters"] = query
    if body is not None:
        event["body"] = body
    return event


@pytest.fixture
def make_event() -> Callable[..., dict[str, Any]]:
    return url_event


def _encode(image_format: str, size: int, seed: int) -> bytes:
    from PIL import Image  # tests only: the function itself never imports PIL

    image = Image.new("RGB", (size, size), ((37 * seed) % 256, (91 * seed) % 256, (53 * seed) % 256))
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def jpeg_bytes() -> bytes:
    return _encode("JPEG", 48, 1)


@pytest.fixture(scope="session")
def png_bytes() -> bytes:
    return _encode("PNG", 40, 2)


@pytest.fixture(scope="session")
def image_factory() -> Callable[[str, int], bytes]:
    """Distinct small images (moto caches its answer per distinct request)."""
    return lambda image_format, seed: _encode(image_format, 32, seed)


def model_answer(top_k: int = 5, runtime: str = "onnxruntime-fp32") -> dict[str, Any]:
    """An answer in the agreed endpoint format (interface 5), best first."""
    probabilities = [0.5 / 2**i for i in range(top_k)]
    return {
        "predictions": [
            {"label": f"class-{i:03d}", "class_id": i, "probability": p} for i, p in enumerate(probabilities)
        ],
        "runtime": runtime,
    }


@pytest.fixture
def answer() -> Callable[..., dict[str, Any]]:
    return model_answer


def body_of(response: dict[str, Any]) -> dict[str, Any]:
    assert response["headers"]["Content-Type"] == "application/json"
    assert response["isBase64Encoded"] is False
    return json.loads(response["body"])


# --------------------------------------------------------------------------------------------------
# A loopback SageMaker runtime: POST /endpoints/{name}/invocations, answers scripted per test.


@dataclass
class ScriptedAnswer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes


class FakeSageMakerRuntime:
    """Records every request; answers with the next scripted answer, or `default` when none is left."""

    def __init__(self) -> None:
        self.script: deque[ScriptedAnswer] = deque()
        self.default = ScriptedAnswer(200, json.dumps(model_answer()).encode(), {"Content-Type": "application/json"})
        self.requests: list[ReceivedRequest] = []
        self._lock = threading.Lock()
        runtime = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with runtime._lock:
                    runtime.requests.append(
                        ReceivedRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    scripted = runtime.script.popleft() if runtime.script else runtime.default
                time.sleep(scripted.delay)
                try:
                    self.send_response(scripted.status)
                    for key, value in scripted.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(scripted.body)))
                    self.end_headers()
                    self.wfile.write(scripted.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (read timeout): what the test wanted

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def answer_ok(self, document: dict[str, Any], content_type: str = "application/json", delay: float = 0.0) -> None:
        self.script.append(ScriptedAnswer(200, json.dumps(document).encode(), {"Content-Type": content_type}, delay))

    def answer_error(self, status: int, code: str, message: str, delay: float = 0.0, **fields: Any) -> None:
        """An error as the SageMaker runtime sends it (rest-json: x-amzn-ErrorType + JSON body)."""
        self.script.append(
            ScriptedAnswer(
                status,
                json.dumps({"Message": message, **fields}).encode(),
                {"Content-Type": "application/json", "x-amzn-ErrorType": code},
                delay,
            )
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_runtime() -> Iterator[FakeSageMakerRuntime]:
    runtime = FakeSageMakerRuntime()
    yield runtime
    runtime.close()


@pytest.fixture
def response_body() -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The JSON body of a handler response (checks it is a plain JSON answer)."""
    return body_of


@pytest.fixture(scope="module")
def warm_local_app() -> Iterator[tuple[ModuleType, FakeSageMakerRuntime]]:
    """One execution environment kept warm across many requests, pointed at a loopback runtime that
    always answers (module scope: for property-based tests)."""
    runtime = FakeSageMakerRuntime()
    with pytest.MonkeyPatch.context() as patch:
        yield (
            _load_app(
                patch,
                {
                    "SAGEMAKER_RUNTIME_ENDPOINT_URL": runtime.url,
                    "FUNCTION_TIMEOUT_SECONDS": "10",
                    "POWERTOOLS_LOG_LEVEL": "ERROR",
                },
            ),
            runtime,
        )
    runtime.close()
