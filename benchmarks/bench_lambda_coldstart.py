"""Package size and cold start of the inference Lambda (functions/inference). Run by hand:

    .venv/bin/python benchmarks/bench_lambda_coldstart.py [--runs 15] [--offline]

Package: what `sam build` ships for the function - its directory plus requirements.txt installed into a
temporary directory (pip for python3.12/arm64 wheels, like the deployed function; --offline or no PyPI:
the same distributions copied from this venv) - and, separately, the PipelineLayer's imgclf/ that it uses.

Cold start: a fresh interpreter per run imports app.py and runs its init (settings + sagemaker-runtime
client), then serves its first request against a loopback endpoint. Goal: import + init <= 250 ms.
The machine is shared and noisy: medians over several runs, and ratios to a bare interpreter's start-up.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
FUNCTION_DIR = REPO_ROOT / "functions" / "inference"
GOAL_MS = 250.0
JPEG = b"\xff\xd8\xff\xe0" + bytes(2000)  # magic bytes are all the function looks at

# ------------------------------------------------------------------------------------------ package size


def _tree_bytes(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return len(files), sum(p.stat().st_size for p in files)


def _zip_bytes(root: Path) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / "package.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
            for path in root.rglob("*"):
                if path.is_file() and "__pycache__" not in path.parts:
                    bundle.write(path, path.relative_to(root))
        return archive.stat().st_size


def _copy_installed(requirement_names: list[str], target: Path) -> None:
    """Offline stand-in for pip: copy the installed files of these distributions and their dependencies."""
    seen: set[str] = set()
    pending = list(requirement_names)
    while pending:
        name = pending.pop()
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        dist = metadata.distribution(name)
        for file in dist.files or []:
            source = Path(dist.locate_file(file))
            if source.is_file() and "__pycache__" not in source.parts and not str(file).startswith(".."):
                destination = target / file
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, destination)
        for requirement in dist.requires or []:
            if "extra ==" not in requirement:
                pending.append(
                    requirement.split(";")[0]
                    .split("[")[0]
                    .split("<")[0]
                    .split(">")[0]
                    .split("=")[0]
                    .split("~")[0]
                    .split("!")[0]
                    .strip()
                )


def package_size(offline: bool) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        build = Path(scratch) / "InferenceFunction"
        shutil.copytree(FUNCTION_DIR, build, ignore=shutil.ignore_patterns("__pycache__"))
        how = "pip (python3.12, manylinux2014_aarch64 wheels)"
        pip = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(build),
            "-r",
            str(FUNCTION_DIR / "requirements.txt"),
            "--platform",
            "manylinux2014_aarch64",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            "--only-binary=:all:",
        ]
        if offline or subprocess.run(pip, capture_output=True, timeout=300).returncode != 0:
            how = "copied from this venv (offline)"
            _copy_installed(["aws-lambda-powertools"], build)
        files, size = _tree_bytes(build)
        print(
            f"function package ({how}): {files} files, {size / 1e6:.2f} MB unzipped, "
            f"{_zip_bytes(build) / 1e6:.2f} MB zipped (Lambda limits: 250 MB unzipped incl. layers, "
            f"50 MB zipped upload)"
        )
        own_files, own_size = _tree_bytes(FUNCTION_DIR)
        print(f"  of which the function's own code: {own_files} files, {own_size / 1e3:.1f} kB")
    layer_files, layer_size = _tree_bytes(REPO_ROOT / "training" / "imgclf")
    print(
        f"imgclf/ from the PipelineLayer (the function imports only imgclf.contract): {layer_files} files, "
        f"{layer_size / 1e3:.1f} kB"
    )


# ------------------------------------------------------------------------------------------ cold start

_CHILD = r"""
import json, os, sys, time
mode = sys.argv[1]
started = time.perf_counter()
if mode == "botocore-client":  # the floor: any Python function that calls InvokeEndpoint pays this
    import botocore.session
    botocore.session.get_session().create_client("sagemaker-runtime", region_name="us-east-1")
    print(json.dumps({"import_init": time.perf_counter() - started})); sys.exit()
if mode == "boto3-client":  # what the usual `boto3.client("sagemaker-runtime")` costs
    import boto3
    boto3.client("sagemaker-runtime", region_name="us-east-1")
    print(json.dumps({"import_init": time.perf_counter() - started})); sys.exit()
import botocore.session
botocore_done = time.perf_counter()
import aws_lambda_powertools.logging
powertools_done = time.perf_counter()
import app  # as the Lambda runtime imports the handler: the function's folder (the cwd) is on sys.path
init_done = time.perf_counter()
class Context:
    function_name = "inference"; memory_limit_in_mb = 512; aws_request_id = "bench"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:inference"
    def get_remaining_time_in_millis(self): return 30000
response = app.handler(json.loads(sys.argv[2]), Context())
first_done = time.perf_counter()
assert response["statusCode"] == 200, response
heavy = sorted(m for m in ("torch", "numpy", "PIL", "boto3") if m in sys.modules)
print(json.dumps({"botocore": botocore_done - started, "powertools": powertools_done - botocore_done,
                  "app_and_client": init_done - powertools_done, "import_init": init_done - started,
                  "first_request": first_done - init_done, "heavy": heavy}))
"""


class _Endpoint(BaseHTTPRequestHandler):
    """A loopback SageMaker runtime that answers every invocation with a valid top-5."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    ANSWER = json.dumps(
        {
            "predictions": [{"label": f"c{i}", "class_id": i, "probability": 0.5 / 2**i} for i in range(5)],
            "runtime": "bench",
        }
    ).encode()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.ANSWER)))
        self.end_headers()
        self.wfile.write(self.ANSWER)

    def log_message(self, *args: object) -> None:
        pass


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cold_start(runs: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        **os.environ,
        "ENDPOINT_NAME": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",  # as Lambda sets them
        "SAGEMAKER_RUNTIME_ENDPOINT_URL": f"http://127.0.0.1:{server.server_address[1]}",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    event = json.dumps(
        {
            "rawPath": "/",
            "headers": {"content-type": "image/jpeg"},
            "isBase64Encoded": True,
            "requestContext": {"http": {"method": "POST", "path": "/"}},
            "body": base64.b64encode(JPEG).decode(),
        }
    )
    modes = ("bare", "botocore-client", "boto3-client", "app")
    wall: dict[str, list[float]] = {mode: [] for mode in modes}
    inside: dict[str, list[dict]] = {mode: [] for mode in modes}
    for _ in range(runs):  # interleaved, so that the machine's load hits every variant alike
        for mode in modes:
            command = (
                [sys.executable, "-c", "pass"]
                if mode == "bare"
                else [sys.executable, "-c", _CHILD, mode, event]
            )
            started = time.perf_counter()
            # `python -c` puts the cwd first on sys.path, as Lambda puts the task root.
            result = subprocess.run(command, capture_output=True, text=True, check=True, env=env, cwd=FUNCTION_DIR)
            wall[mode].append((time.perf_counter() - started) * 1e3)
            if mode != "bare":
                inside[mode].append(json.loads(result.stdout.strip().splitlines()[-1]))
    server.shutdown()

    def ms(mode: str, key: str = "import_init") -> list[float]:
        return [sample[key] * 1e3 for sample in inside[mode]]

    ours = ms("app")
    median = statistics.median(ours)
    floor = statistics.median(ms("botocore-client"))
    print(
        f"cold start, {runs} fresh interpreters per variant (python {sys.version.split()[0]} here; Lambda runs "
        f"3.12 on arm64), load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs:"
    )
    print(
        f"  import + init of app.py: median {median:.0f} ms, p90 {_percentile(ours, 0.9):.0f} ms, "
        f"min {min(ours):.0f} ms -> {'MEETS' if median <= GOAL_MS else 'MISSES'} the {GOAL_MS:.0f} ms goal "
        f"({median / GOAL_MS:.2f}x of it)"
    )
    print(
        f"    import botocore {statistics.median(ms('app', 'botocore')):.0f} ms + Powertools logger "
        f"{statistics.median(ms('app', 'powertools')):.0f} ms + app modules, settings and client "
        f"{statistics.median(ms('app', 'app_and_client')):.0f} ms (medians)"
    )
    print(
        f"  floor, botocore import + sagemaker-runtime client alone: median {floor:.0f} ms "
        f"-> app.py costs {median / floor:.2f}x the floor"
    )
    print(f"  boto3 import + client (the usual way): median {statistics.median(ms('boto3-client')):.0f} ms")
    print(
        f"  first request (validate + InvokeEndpoint on loopback): median "
        f"{statistics.median(ms('app', 'first_request')):.1f} ms"
    )
    print(
        f"  whole processes: app {statistics.median(wall['app']):.0f} ms, bare interpreter "
        f"{statistics.median(wall['bare']):.0f} ms (medians)"
    )
    print(f"  heavy modules loaded by app.py: {inside['app'][0]['heavy'] or 'none'} (torch, numpy, PIL, boto3 checked)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--offline", action="store_true", help="do not ask PyPI; size the venv's copies")
    args = parser.parse_args()
    package_size(args.offline)
    cold_start(args.runs)


if __name__ == "__main__":
    main()
