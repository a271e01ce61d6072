"""`imgclf predict` against local mode's endpoint serving the model the tests trained (tests/conftest.py),
found by --url, by --local (the record `make local` leaves) and by --stack (the stack's InferenceUrl)."""

from __future__ import annotations

import io
import json
import socket
import threading
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import httpx
from cli_world import pw
from moto import mock_aws

from imgclf_cli.errors import ExitCode
from imgclf_cli.main import main
from localmode.endpoint import ENDPOINT_RECORD, LocalEndpoint


def _images(tmp_path: Path, class_image) -> tuple[Path, Path]:
    jpeg, png = tmp_path / "blue.jpg", tmp_path / "red.png"
    buffer = io.BytesIO()
    class_image(2, (90, 70), seed=7).save(buffer, "JPEG", quality=90)
    jpeg.write_bytes(buffer.getvalue())
    class_image(0, (70, 90), seed=8).save(png, "PNG")
    return jpeg, png


def test_a_table_of_the_top_k(local_endpoint, class_image, model_classes, tmp_path, capsys):
    jpeg, png = _images(tmp_path, class_image)
    assert main(["predict", str(jpeg), str(png), "--url", local_endpoint.url, "--top-k", "2"]) == ExitCode.OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["IMAGE", "RANK", "LABEL", "PROBABILITY"]
    direct = httpx.post(f"{local_endpoint.url}/invocations?top_k=2", content=jpeg.read_bytes(),
                        headers={"Content-Type": "image/jpeg"}).json()
    first = [line.split() for line in lines[1:3]]
    expected = [[p["label"], f"{p['probability']:.4f}"] for p in direct["predictions"]]
    assert first == [["blue.jpg", "1", *expected[0]], ["2", *expected[1]]]
    assert lines[3].split()[:2] == ["runtime", f"{direct['runtime']},"]
    assert lines[4].split()[:2] == ["red.png", "1"]
    assert first[0][2] == model_classes[2] and lines[4].split()[2] == model_classes[0]


def test_json_from_the_local_record(local_endpoint, class_image, tmp_path, capsys):
    jpeg, png = _images(tmp_path, class_image)
    runs = tmp_path / "runs"
    runs.mkdir()
    record = LocalEndpoint(name="imgclf-local", url=local_endpoint.url, pid=local_endpoint.process.pid,
                           model_dir="model", log_path="endpoint.log")
    (runs / ENDPOINT_RECORD).write_text(json.dumps(asdict(record)))
    assert main(["predict", str(jpeg), str(png), "--local", "--runs-dir", str(runs), "--json"]) == ExitCode.OK
    answers = json.loads(capsys.readouterr().out)
    assert [a["image"] for a in answers] == [str(jpeg), str(png)]
    assert all(a["status"] == 200 and len(a["predictions"]) == 3 and a["runtime"] for a in answers)
    assert all(a["latency_ms"] > 0 for a in answers)


def test_the_stacks_inference_url(aws_env, local_endpoint, class_image, tmp_path, capsys):
    jpeg, _ = _images(tmp_path, class_image)
    outputs = {"DataBucketName": "b", "StateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:p",
               "InferenceUrl": f"{local_endpoint.url}/", "EndpointName": pw.ENDPOINT}
    with mock_aws():
        boto3.client("cloudformation", region_name=pw.REGION).create_stack(StackName="imgclf", TemplateBody=json.dumps(
            {"Resources": {"Placeholder": {"Type": "AWS::SNS::Topic"}},
             "Outputs": {key: {"Value": value} for key, value in outputs.items()}}))
        assert main(["predict", str(jpeg), "--stack", "imgclf", "--json"]) == ExitCode.OK
    [answer] = json.loads(capsys.readouterr().out)
    assert answer["status"] == 200


def test_a_refused_image_exits_1_with_the_servers_words(local_endpoint, class_image, tmp_path, capsys):
    jpeg, _ = _images(tmp_path, class_image)
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo")
    assert main(["predict", str(jpeg), str(notes), "--url", local_endpoint.url]) == ExitCode.FAILED
    out = capsys.readouterr().out
    assert "notes.jpg  refused (415): the body is not a JPEG or PNG image" in out
    assert "blue.jpg" in out  # the good image still answered


def test_missing_files_and_a_down_endpoint(class_image, tmp_path, capsys):
    jpeg, _ = _images(tmp_path, class_image)
    assert main(["predict", str(tmp_path / "nope.jpg"), "--url", "http://127.0.0.1:9"]) == ExitCode.BAD_INPUT
    assert "no such image file" in capsys.readouterr().err
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    assert main(["predict", str(jpeg), "--url", f"http://127.0.0.1:{port}"]) == ExitCode.SERVICE_ERROR
    assert "cannot be reached" in capsys.readouterr().err
    assert main(["predict", str(jpeg), "--url", "http://127.0.0.1:9", "--top-k", "99"]) == ExitCode.BAD_INPUT


def test_sign_sends_sigv4_for_an_iam_function_url(aws_env, class_image, tmp_path, capsys):
    """InferenceAuthType AWS_IAM: requests are signed for the service `lambda` in the URL's region."""
    jpeg, _ = _images(tmp_path, class_image)
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append({k.lower(): v for k, v in self.headers.items()})
            body = json.dumps({"predictions": [{"label": "x", "class_id": 0, "probability": 1.0}],
                               "runtime": "torch"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        assert main(["predict", str(jpeg), "--url", url, "--sign", "--region", "eu-west-1"]) == ExitCode.OK
    finally:
        server.shutdown()
    [headers] = seen
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "/eu-west-1/lambda/aws4_request" in headers["authorization"]
    assert "x-amz-date" in headers and "x-amz-security-token" in headers
