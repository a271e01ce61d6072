"""The local endpoint over real HTTP (uvicorn, 2 worker processes) on the trained tiny model."""

from __future__ import annotations

import json
import signal
import tarfile
from pathlib import Path

import boto3
import httpx
import pytest

from imgclf import contract, serving
from localmode.supervisor import BackgroundServer, start_background


@pytest.fixture(scope="module")
def server(trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> BackgroundServer:
    log = tmp_path_factory.mktemp("server") / "server.log"
    with start_background(trained_model_dir, workers=2, threads=1, log_path=log) as running:
        yield running
    assert running.process.returncode == 0, log.read_text()[-2000:]


def _post(url: str, body: bytes, content_type: str | None, **kwargs: object) -> httpx.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    headers.update(kwargs.pop("headers", {}))  # type: ignore[arg-type]
    return httpx.post(f"{url}/invocations", content=body, headers=headers, timeout=30, **kwargs)


def test_ping_and_invocations_match_the_toolkit_path(server: BackgroundServer, trained_model_dir: Path,
                                                     jpeg_bytes: bytes, png_bytes: bytes) -> None:
    ping = httpx.get(f"{server.url}/ping", timeout=10)
    assert ping.status_code == 200
    model = serving.load_model(trained_model_dir)  # the handler code training/inference.py calls
    assert ping.json()["runtime"] == model.runtime_name
    for body, content_type in ((jpeg_bytes, "image/jpeg"), (png_bytes, "image/png"),
                               (png_bytes, "application/octet-stream")):
        response = _post(server.url, body, content_type)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert response.text == serving.invoke(model, body, content_type)[0]
    assert response.json()["predictions"][0]["label"] in json.loads(
        (trained_model_dir / "metadata.json").read_text())["class_names"]


def test_top_k_by_query_and_custom_attributes(server: BackgroundServer, jpeg_bytes: bytes) -> None:
    assert len(_post(server.url, jpeg_bytes, "image/jpeg", params={"top_k": "2"}).json()["predictions"]) == 2
    response = _post(server.url, jpeg_bytes, "image/jpeg",
                     headers={"X-Amzn-SageMaker-Custom-Attributes": "top_k=1"})
    assert len(response.json()["predictions"]) == 1
    assert _post(server.url, jpeg_bytes, "image/jpeg", params={"top_k": "99"}).status_code == 400


def test_every_bad_input_is_a_4xx_and_the_server_answers_the_next(server: BackgroundServer,
                                                                  jpeg_bytes: bytes) -> None:
    cases = [
        (b"", "image/jpeg", 400),
        (jpeg_bytes[:100], "image/jpeg", 400),
        (b"plain text, no image", "application/octet-stream", 415),
        (jpeg_bytes, "text/plain", 415),
        (jpeg_bytes, None, 415),
        (b"\xff\xd8\xff" + bytes(contract.MAX_IMAGE_BYTES), "image/jpeg", 413),
    ]
    for body, content_type, expected in cases:
        response = _post(server.url, body, content_type)
        assert response.status_code == expected, response.text
        assert response.json()["error"]
        assert _post(server.url, jpeg_bytes, "image/jpeg").status_code == 200
    assert httpx.get(f"{server.url}/ping", timeout=10).status_code == 200


def test_boto3_sagemaker_runtime_client_talks_to_it(server: BackgroundServer, jpeg_bytes: bytes) -> None:
    """What the inference Lambda does with SAGEMAKER_RUNTIME_ENDPOINT_URL: the runtime API path."""
    client = boto3.client("sagemaker-runtime", endpoint_url=server.url, region_name="us-east-1",
                          aws_access_key_id="local", aws_secret_access_key="local")
    response = client.invoke_endpoint(EndpointName="imgclf-endpoint", Body=jpeg_bytes, ContentType="image/jpeg",
                                      Accept="application/json", CustomAttributes="top_k=2")
    assert response["ContentType"] == "application/json"
    assert len(json.loads(response["Body"].read())["predictions"]) == 2
    # A container-side 4xx reaches the caller as SageMaker's ModelError, with the original status.
    with pytest.raises(client.exceptions.ModelError) as caught:
        client.invoke_endpoint(EndpointName="imgclf-endpoint", Body=b"garbage", ContentType="image/jpeg")
    assert caught.value.response["OriginalStatusCode"] == 415
    assert "JPEG or PNG" in caught.value.response["OriginalMessage"]


def test_model_tar_gz_serves_the_same_answers_and_sigterm_is_clean(
        trained_model_dir: Path, tmp_path: Path, jpeg_bytes: bytes) -> None:
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:  # SageMaker's layout: files at the archive's root
        for path in sorted(trained_model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    expected = serving.invoke(serving.load_model(trained_model_dir), jpeg_bytes, "image/jpeg")[0]
    running = start_background(archive, workers=1, threads=1, log_path=tmp_path / "log")
    try:
        assert _post(running.url, jpeg_bytes, "image/jpeg").text == expected
    finally:
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(30) == 0
    log = (tmp_path / "log").read_text()
    assert "Application shutdown complete" in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(line.get("event") == "invocation" and line["status"] == 200 for line in lines)


def test_a_broken_artifact_fails_at_start_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"")
    with pytest.raises(RuntimeError, match="exited"):
        start_background(tmp_path, workers=1, log_path=tmp_path / "log", startup_timeout_s=60)
    assert "metadata.json" in (tmp_path / "log").read_text()


def test_a_request_over_the_timeout_gets_504_and_the_server_goes_on(trained_model_dir: Path, tmp_path: Path,
                                                                     jpeg_bytes: bytes) -> None:
    # A 1 µs budget: over before the inference can start, so the request is answered 504.
    with start_background(trained_model_dir, workers=1, threads=1, request_timeout_s=1e-6,
                          log_path=tmp_path / "log") as running:
        response = _post(running.url, jpeg_bytes, "image/jpeg")
        assert response.status_code == 504 and "longer than" in response.json()["error"]
        assert httpx.get(f"{running.url}/ping", timeout=10).status_code == 200


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def test_metrics_are_the_lambdas_prediction_statistics_over_every_worker(
        server: BackgroundServer, trained_model_dir: Path, jpeg_bytes: bytes, png_bytes: bytes) -> None:
    from imgclf import monitoring
    from localmode.prediction_metrics import prometheus_name

    before = _scrape(server.url)
    answers = [_post(server.url, image, ctype).json() for image, ctype in
               [(jpeg_bytes, "image/jpeg"), (png_bytes, "image/png")] * 3]
    assert _post(server.url, b"not an image", "image/jpeg").status_code == 415
    after = _scrape(server.url)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    requests = prometheus_name(monitoring.REQUESTS)
    assert requests == "imgclf_requests_total"
    assert (delta(requests, status_class="2xx"), delta(requests, status_class="4xx")) == (6, 1)
    top1 = prometheus_name(monitoring.TOP1_PROBABILITY)
    expected = [monitoring.prediction_stats([p["probability"] for p in a["predictions"]]) for a in answers]
    # Six answers, spread over two worker processes, summed by /metrics.
    assert delta(f"{top1}_count") == 6
    assert delta(f"{top1}_sum") == pytest.approx(sum(s.top1_probability for s in expected), abs=1e-6)
    entropy = prometheus_name(monitoring.PREDICTION_ENTROPY)
    assert delta(f"{entropy}_sum") == pytest.approx(sum(s.entropy for s in expected), abs=1e-6)
    assert delta(f"{prometheus_name(monitoring.IMAGE_SIZE)}_sum") == 3 * (len(jpeg_bytes) + len(png_bytes)) + 12
    assert delta(f"{prometheus_name(monitoring.ENDPOINT_LATENCY)}_count") == 6
    # The baseline the model was trained with (metadata.json), beside the live statistics.
    baseline = json.loads((trained_model_dir / "metadata.json").read_text())["prediction_baseline"]
    key = ("imgclf_baseline", (("moment", "mean"), ("statistic", "top1_probability")))
    assert after[key] == pytest.approx(baseline[monitoring.TOP1_PROBABILITY.name]["mean"])
    threshold = ("imgclf_baseline", (("moment", "drift_threshold"), ("statistic", "top1_probability")))
    assert after[threshold] == pytest.approx(monitoring.drift_threshold(baseline))
