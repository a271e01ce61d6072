"""benchmarks/loadtest_url.py: its arithmetic, the Function URL stand-in, and a bounded run end to end
(stand-in -> the real handler -> a loopback SageMaker runtime)."""

from __future__ import annotations

import base64
import importlib.util
import os
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "loadtest_url.py"


@pytest.fixture(scope="module")
def loadtest():
    spec = importlib.util.spec_from_file_location("loadtest_url_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture
def restored_environ():
    """The local stand-in loads the handler the way local mode does, which sets environment variables."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_percentile(loadtest):
    values = [float(v) for v in range(1, 101)]
    assert [loadtest.percentile(values, q) for q in (50, 90, 99, 100)] == [50.0, 90.0, 99.0, 100.0]
    assert loadtest.percentile([7.0], 99) == 7.0


def test_who_throttled(loadtest):
    assert loadtest.throttled_by(429, loadtest.LAMBDA_THROTTLE_BODY) == "lambda"
    assert loadtest.throttled_by(429, b'{"error": "throttled", "message": "slow down"}') == "endpoint"
    assert loadtest.throttled_by(429, b"<html>") == "lambda"
    assert loadtest.throttled_by(200, b"{}") is None


def test_stand_in_builds_events_as_lambda_does(loadtest):
    binary = loadtest.function_url_event(
        "POST", "/?top_k=3&a=1&a=2", {"Content-Type": "image/png"}, b"\x89PNG", "127.0.0.1"
    )
    assert binary["isBase64Encoded"] is True and base64.b64decode(binary["body"]) == b"\x89PNG"
    assert binary["queryStringParameters"] == {"top_k": "3", "a": "1,2"}
    assert binary["headers"] == {"content-type": "image/png"}
    text = loadtest.function_url_event("POST", "/", {"content-type": "application/json"}, b'{"image": ""}', "::1")
    assert (text["isBase64Encoded"], text["body"]) == (False, '{"image": ""}')


def test_bounded_run_counts_throttles(loadtest, fake_runtime, restored_environ, tmp_path, jpeg_bytes):
    fake_runtime.default.delay = 0.05  # slow enough that four clients overlap on one reserved slot
    image = tmp_path / "image.jpg"
    image.write_bytes(jpeg_bytes)
    summary = loadtest.main(
        [
            "--local",
            "--endpoint-url",
            fake_runtime.url,
            "--image",
            str(image),
            "--requests",
            "24",
            "--concurrency",
            "4",
            "--reserved-concurrency",
            "1",
            "--duration",
            "30",
            "--report",
            str(tmp_path / "report.json"),
        ]
    )
    assert summary["requests"] == 24
    assert summary["statuses"].get("200", 0) + summary["statuses"].get("429", 0) == 24
    assert summary["statuses"].get("200", 0) >= 1
    assert summary["throttled"] == summary["throttled_by_lambda"] >= 1
    assert len(fake_runtime.requests) == summary["statuses"]["200"]  # throttled ones never ran
    assert summary["latency_ms_200"]["p50"] >= 50 * 0.9
    assert (tmp_path / "report.json").is_file()


def test_duration_bounds_the_run(loadtest, fake_runtime, restored_environ, tmp_path, png_bytes):
    fake_runtime.default.delay = 0.1
    image = tmp_path / "image.png"
    image.write_bytes(png_bytes)
    summary = loadtest.main(
        [
            "--local",
            "--endpoint-url",
            fake_runtime.url,
            "--image",
            str(image),
            "--json-body",
            "--requests",
            "1000",
            "--concurrency",
            "2",
            "--reserved-concurrency",
            "2",
            "--duration",
            "0.5",
            "--timeout",
            "5",
        ]
    )
    assert 2 <= summary["requests"] < 1000
    # Without the duration bound, 1000 requests of 0.1 s at concurrency 2 take 50 s; the margin allows for a
    # loaded machine (CI saw 1.76 s on a busy 2-core box) while still proving the run stopped at the bound.
    assert summary["wall_seconds"] < 0.5 + 5.0
    assert summary["statuses"] == {"200": summary["requests"]}
