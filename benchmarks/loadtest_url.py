"""Bounded load test of the inference URL: latency percentiles and how many requests were throttled (429).

Over ~300 lines on purpose: a stand-alone script (run by path, no package), so its local stand-in server,
SigV4 signing and report stay in the one file.

    # the deployed Function URL (stack output InferenceUrl); --iam when InferenceAuthType is AWS_IAM
    .venv/bin/python benchmarks/loadtest_url.py --url https://<id>.lambda-url.<region>.on.aws/ --requests 200

    # local mode's stand-in: the same handler (functions/inference/app.py) behind a loopback HTTP server
    # that behaves like a Function URL with reserved concurrency, in front of the local endpoint that
    # `make local` left running (<runs>/endpoint.json), or any --endpoint-url
    .venv/bin/python benchmarks/loadtest_url.py --local --reserved-concurrency 2 --concurrency 4

Both limits hold: it stops after --requests requests or --duration seconds, whichever comes first (a
request in flight at the deadline may take up to --timeout more). A 429 is counted by who throttled it:
Lambda's concurrency (reserved concurrency reached; body {"Message": "Rate Exceeded."}) or the function's
own answer to SageMaker throttling ({"error": "throttled"}).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from imgclf import contract

REPO_ROOT = Path(__file__).resolve().parents[1]
# Lambda refuses synchronous invocations whose event exceeds 6 MB (the body counts base64-encoded).
LAMBDA_PAYLOAD_LIMIT = 6 * 1024 * 1024
LAMBDA_THROTTLE_BODY = b'{"Message":"Rate Exceeded."}'
LAMBDA_TOO_LARGE_BODY = b'{"Message":"Request must be smaller than 6291456 bytes for the InvokeFunction operation"}'


# ------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Outcome:
    status: int | None  # None: no HTTP answer (connection error or client timeout)
    seconds: float
    throttled_by: str | None = None  # "lambda" | "endpoint" for a 429
    error: str | None = None


def throttled_by(status: int, body: bytes) -> str | None:
    """Who answered 429: the function (SageMaker throttled it) or Lambda (concurrency exhausted)."""
    if status != 429:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return "lambda"
    return "endpoint" if isinstance(document, dict) and document.get("error") == "throttled" else "lambda"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def summarize(outcomes: list[Outcome], wall_seconds: float) -> dict[str, Any]:
    statuses = Counter("error" if o.status is None else str(o.status) for o in outcomes)
    throttles = Counter(o.throttled_by for o in outcomes if o.throttled_by)
    summary: dict[str, Any] = {
        "requests": len(outcomes),
        "wall_seconds": round(wall_seconds, 3),
        "requests_per_second": round(len(outcomes) / wall_seconds, 2) if wall_seconds > 0 else None,
        "statuses": dict(sorted(statuses.items())),
        "throttled": sum(throttles.values()),
        "throttled_by_lambda": throttles["lambda"],
        "throttled_by_endpoint": throttles["endpoint"],
        "transport_errors": dict(Counter(o.error for o in outcomes if o.error)),
    }
    for name, subset in (
        ("latency_ms_all_answers", [o for o in outcomes if o.status is not None]),
        ("latency_ms_200", [o for o in outcomes if o.status == 200]),
    ):
        seconds = [o.seconds * 1e3 for o in subset]
        summary[name] = (
            {f"p{q}": round(percentile(seconds, q), 1) for q in (50, 90, 95, 99)}
            | {"mean": round(statistics.fmean(seconds), 1), "max": round(max(seconds), 1)}
            if seconds
            else None
        )
    return summary


def print_summary(summary: dict[str, Any], target: str, concurrency: int) -> None:
    print(
        f"target {target}: {summary['requests']} requests in {summary['wall_seconds']:.1f} s "
        f"({summary['requests_per_second']} req/s) at concurrency {concurrency}"
    )
    print(f"  statuses: {summary['statuses']}")
    print(
        f"  throttled (429): {summary['throttled']} (by Lambda concurrency: {summary['throttled_by_lambda']}, "
        f"by the endpoint: {summary['throttled_by_endpoint']})"
    )
    if summary["transport_errors"]:
        print(f"  no answer: {summary['transport_errors']}")
    for name in ("latency_ms_all_answers", "latency_ms_200"):
        if summary[name]:
            print(f"  {name}: " + ", ".join(f"{key} {value}" for key, value in summary[name].items()))


# ------------------------------------------------------------------------------------------ load


def _sigv4_signer(url: str) -> Any:
    """Sign requests for an AWS_IAM Function URL (service "lambda") with botocore's credential chain."""
    import botocore.session
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    host = urlsplit(url).hostname or ""
    region = host.split(".")[2] if ".lambda-url." in host else os.environ.get("AWS_REGION", "us-east-1")
    credentials = botocore.session.get_session().get_credentials()
    if credentials is None:
        raise SystemExit("--iam needs AWS credentials (environment, profile or role)")

    def sign(body: bytes, headers: dict[str, str]) -> dict[str, str]:
        request = AWSRequest(method="POST", url=url, data=body, headers=headers)
        SigV4Auth(credentials.get_frozen_credentials(), "lambda", region).add_auth(request)
        return dict(request.headers.items())

    return sign


async def run_load(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    requests: int,
    duration: float,
    concurrency: int,
    timeout: float,
    sign: Any = None,
) -> tuple[list[Outcome], float]:
    """POST `body` to `url` from `concurrency` workers until `requests` were sent or `duration` passed."""
    outcomes: list[Outcome] = []
    issued = 0
    started = time.perf_counter()
    deadline = started + duration

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal issued
        while issued < requests and time.perf_counter() < deadline:
            issued += 1  # single-threaded event loop: no lock needed
            request_headers = sign(body, headers) if sign else headers
            sent = time.perf_counter()
            try:
                response = await client.post(url, content=body, headers=request_headers)
            except httpx.HTTPError as error:
                outcomes.append(Outcome(None, time.perf_counter() - sent, error=type(error).__name__))
                continue
            outcomes.append(
                Outcome(
                    response.status_code,
                    time.perf_counter() - sent,
                    throttled_by(response.status_code, response.content),
                )
            )

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return outcomes, time.perf_counter() - started


# ------------------------------------------------------------------------------------------ local stand-in


def function_url_event(
    method: str, target: str, headers: dict[str, str], body: bytes, source_ip: str
) -> dict[str, Any]:
    """The payload-2.0 event a Function URL hands the function for this HTTP request."""
    parts = urlsplit(target)
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value  # Lambda joins repeats with commas
    lowered = {key.lower(): value for key, value in headers.items()}
    media_type = lowered.get("content-type", "").split(";")[0].strip().lower()
    textual = media_type.startswith("text/") or media_type in (
        contract.JSON_CONTENT_TYPE,
        "application/xml",
        "application/javascript",
    )
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.path or "/",
        "rawQueryString": parts.query,
        "headers": lowered,
        "requestContext": {
            "http": {
                "method": method,
                "path": parts.path or "/",
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": lowered.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "timeEpoch": int(time.time() * 1000),
        },
        "isBase64Encoded": not textual,
    }
    if query:
        event["queryStringParameters"] = query
    if body:
        event["body"] = body.decode("utf-8", "replace") if textual else base64.b64encode(body).decode("ascii")
    return event


@contextmanager
def function_url_stand_in(handler_module: ModuleType, reserved_concurrency: int) -> Iterator[str]:
    """A loopback HTTP server in front of the handler that behaves like a Function URL: events built as
    Lambda builds them, 413 above Lambda's payload limit, 429 beyond the reserved concurrency."""
    from localmode.lambda_bridge import LambdaContext

    slots = threading.BoundedSemaphore(reserved_concurrency)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if 4 * -(-len(body) // 3) > LAMBDA_PAYLOAD_LIMIT:  # its base64 form is what counts
                self._reply(413, {"Content-Type": "application/json"}, LAMBDA_TOO_LARGE_BODY)
                return
            if not slots.acquire(blocking=False):
                self._reply(429, {"Content-Type": "application/json"}, LAMBDA_THROTTLE_BODY)
                return
            try:
                event = function_url_event(
                    self.command, self.path, dict(self.headers.items()), body, self.client_address[0]
                )
                response = handler_module.handler(event, LambdaContext(aws_request_id=str(uuid.uuid4())))
            finally:
                slots.release()
            payload = response.get("body") or ""
            data = base64.b64decode(payload) if response.get("isBase64Encoded") else payload.encode()
            self._reply(int(response["statusCode"]), dict(response.get("headers") or {}), data)

        do_POST = do_GET = do_PUT = do_DELETE = _handle

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _local_endpoint(args: argparse.Namespace) -> tuple[str, str]:
    """(endpoint name, URL) of the local endpoint to put behind the stand-in."""
    if args.endpoint_url:
        return args.endpoint_name, args.endpoint_url
    from localmode.endpoint import read_record

    record = read_record(args.runs_dir)
    if record is None or not record.is_alive():
        raise SystemExit(
            f"no live local endpoint recorded in {args.runs_dir}: run `make local` first (or pass --endpoint-url)"
        )
    return record.name, record.url


def _default_image() -> Path:
    candidates = sorted(
        path
        for path in (REPO_ROOT / "sample_data").rglob("*")
        if path.suffix.lower() in (".jpg", ".jpeg", ".png") and "test" in path.parts
    )
    if not candidates:
        raise SystemExit("no sample image found: pass --image")
    return candidates[0]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="the Function URL (or any URL that answers like it)")
    target.add_argument("--local", action="store_true", help="run the handler behind a local stand-in")
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=REPO_ROOT / "runs",
        help="local mode's runs directory (its endpoint.json names the local endpoint)",
    )
    parser.add_argument("--endpoint-url", help="with --local: the SageMaker-protocol endpoint to call instead")
    parser.add_argument("--endpoint-name", default="imgclf-classifier", help="with --endpoint-url")
    parser.add_argument(
        "--reserved-concurrency",
        type=int,
        default=2,
        help="with --local: concurrent executions before the stand-in answers 429",
    )
    parser.add_argument("--image", type=Path, help="JPEG or PNG to send (default: a bundled sample image)")
    parser.add_argument("--json-body", action="store_true", help='send {"image": "<base64>"} instead of bytes')
    parser.add_argument("--top-k", type=int, default=contract.DEFAULT_TOP_K)
    parser.add_argument("--requests", type=int, default=100, help="stop after this many requests")
    parser.add_argument("--duration", type=float, default=60.0, help="stop issuing after this many seconds")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    parser.add_argument("--iam", action="store_true", help="SigV4-sign requests (AuthType AWS_IAM)")
    parser.add_argument("--report", type=Path, help="also write the summary here as JSON")
    args = parser.parse_args(argv)
    if min(args.requests, args.concurrency, args.reserved_concurrency) < 1 or args.duration <= 0:
        parser.error("--requests, --concurrency, --reserved-concurrency and --duration must be positive")

    image_path = args.image or _default_image()
    image = image_path.read_bytes()
    content_type = contract.sniff_image_type(image)
    if content_type is None:
        parser.error(f"{image_path} is not a JPEG or PNG")
    top_k = contract.parse_top_k(args.top_k)
    if args.json_body:
        body = json.dumps({"image": base64.b64encode(image).decode("ascii"), "top_k": top_k}).encode()
        headers, query = {"Content-Type": contract.JSON_CONTENT_TYPE}, ""
    else:
        body, headers, query = image, {"Content-Type": content_type}, f"?top_k={top_k}"

    def load(url: str) -> dict[str, Any]:
        sign = _sigv4_signer(url + query) if args.iam else None
        outcomes, wall = asyncio.run(
            run_load(
                url + query,
                body,
                headers,
                requests=args.requests,
                duration=args.duration,
                concurrency=args.concurrency,
                timeout=args.timeout,
                sign=sign,
            )
        )
        summary = summarize(outcomes, wall)
        print_summary(summary, url, args.concurrency)
        return summary

    print(
        f"image {image_path} ({len(image)} bytes, {content_type}), top_k {top_k}, "
        f"at most {args.requests} requests / {args.duration:g} s"
    )
    if args.url:
        summary = load(args.url)
    else:
        from localmode.lambda_bridge import load_handler

        endpoint_name, endpoint_url = _local_endpoint(args)
        with function_url_stand_in(load_handler(endpoint_name, endpoint_url), args.reserved_concurrency) as url:
            print(f"local stand-in {url} -> {endpoint_url} (reserved concurrency {args.reserved_concurrency})")
            summary = load(url)
    if args.report:
        args.report.write_text(json.dumps(summary | {"image": str(image_path)}, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
