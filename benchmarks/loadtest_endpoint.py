"""Load test of the local endpoint at rising concurrency, from one command (Locust, headless, loopback).

    .venv/bin/python benchmarks/loadtest_endpoint.py MODEL_DIR_OR_MODEL_TAR_GZ
    .venv/bin/python benchmarks/loadtest_endpoint.py --url http://127.0.0.1:8080   # a server already up

It starts `python -m localmode.server` on a free loopback port (unless --url), then for each concurrency
level runs Locust headless (benchmarks/locustfile_endpoint.py: photo-like JPEGs posted back to back),
bounded by --max-requests and --duration per level. Written to --out:
- loadtest.csv: per level: requests, failures, error rate, throughput (requests/s), p50/p95/p99 ms;
- loadtest.png: throughput and latency percentiles against concurrency;
- loadtest.json: the same plus the autoscaling recommendation; locust-*.csv: Locust's own stats.

Autoscaling: SageMaker's target-tracking metric SageMakerVariantInvocationsPerInstance counts invocations
per instance per MINUTE. The sustainable rate is the highest throughput among levels with no errors and
p99 within --slo-ms; AWS's guidance is to set the target at about half of it (SAFETY_FACTOR) so a
scale-out happens before latency degrades:  target = sustainable requests/s x 60 x 0.5.
Run the load test on the endpoint's instance type for the real number (this machine's number is for
local mode); the load generator shares the CPU with the server here, so it is a lower bound.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile_endpoint.py"
SAFETY_FACTOR = 0.5


def run_level(url: str, users: int, duration_s: int, max_requests: int, out: Path, path: str) -> dict:
    prefix = out / f"locust-{users:03d}"
    env = {**os.environ, "LOADTEST_MAX_REQUESTS": str(max_requests), "LOADTEST_PATH": path}
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
               "-u", str(users), "-r", str(users), "-t", f"{duration_s}s", "--host", url,
               "--csv", str(prefix), "--loglevel", "WARNING", "--exit-code-on-error", "0",
               "--stop-timeout", "10"]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=duration_s + 120)
    if completed.returncode != 0:
        raise RuntimeError(f"locust failed at {users} users:\n{completed.stderr[-3000:]}")
    with open(f"{prefix}_stats.csv", newline="") as handle:
        aggregated = next(row for row in csv.DictReader(handle) if row["Name"] == "Aggregated")
    requests = int(aggregated["Request Count"])
    failures = int(aggregated["Failure Count"])
    return {"concurrency": users, "requests": requests, "failures": failures,
            "error_rate": failures / requests if requests else 0.0,
            "requests_per_s": float(aggregated["Requests/s"]),
            "p50_ms": float(aggregated["50%"]), "p95_ms": float(aggregated["95%"]),
            "p99_ms": float(aggregated["99%"])}


def recommend(levels: list[dict], slo_ms: float) -> dict:
    healthy = [level for level in levels if level["failures"] == 0 and level["p99_ms"] <= slo_ms]
    if not healthy:
        return {"sustainable_requests_per_s": None, "invocations_per_instance_target": None,
                "reason": f"no level had zero errors and p99 <= {slo_ms:g} ms"}
    best = max(healthy, key=lambda level: level["requests_per_s"])
    return {"sustainable_requests_per_s": best["requests_per_s"], "at_concurrency": best["concurrency"],
            "slo_p99_ms": slo_ms, "safety_factor": SAFETY_FACTOR,
            "invocations_per_instance_target": int(best["requests_per_s"] * 60 * SAFETY_FACTOR)}


def plot(levels: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    concurrency = [level["concurrency"] for level in levels]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(concurrency, [level["requests_per_s"] for level in levels], "o-")
    left.set(xlabel="concurrent clients", ylabel="requests/s", title="throughput")
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        right.plot(concurrency, [level[key] for level in levels], "o-", label=key.replace("_ms", ""))
    right.set(xlabel="concurrent clients", ylabel="latency (ms)", title="latency")
    right.legend()
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(concurrency, [str(c) for c in concurrency])
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="model directory or model.tar.gz to serve (unless --url)")
    parser.add_argument("--url", help="load an already running endpoint instead (loopback)")
    parser.add_argument("--levels", default="1,2,4,8,16", help="concurrency levels, comma-separated")
    parser.add_argument("--duration", type=int, default=20, help="seconds per level at most")
    parser.add_argument("--max-requests", type=int, default=1000, help="requests per level at most")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--runtime", default=None, help="INFERENCE_RUNTIME for the server (default auto)")
    parser.add_argument("--path", default="/invocations", help="or /endpoints/<name>/invocations")
    parser.add_argument("--slo-ms", type=float, default=1000.0, help="p99 bound for the sustainable rate")
    parser.add_argument("--out", type=Path, default=Path("runs/loadtest"))
    args = parser.parse_args(argv)
    if not args.url and not args.model:
        parser.error("give a model directory / model.tar.gz, or --url of a running endpoint")
    if args.url and not args.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        parser.error("--url must be a loopback address: this load test never leaves the machine")
    args.out.mkdir(parents=True, exist_ok=True)
    levels = [int(level) for level in args.levels.split(",")]

    server = None
    if not args.url:
        from localmode.supervisor import start_background

        server = start_background(args.model, workers=args.workers, runtime=args.runtime,
                                  log_path=args.out / "server.log")
    url = args.url or server.url
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=10) as response:
            runtime = json.loads(response.read())
        results = []
        for users in levels:
            start = time.perf_counter()
            level = run_level(url, users, args.duration, args.max_requests, args.out, args.path)
            results.append(level)
            elapsed = time.perf_counter() - start
            print(f"{users:>4} clients: {level['requests']:>6} requests in {elapsed:5.1f} s, "
                  f"{level['requests_per_s']:7.1f} req/s, p50 {level['p50_ms']:7.1f} ms, "
                  f"p95 {level['p95_ms']:7.1f} ms, p99 {level['p99_ms']:7.1f} ms, "
                  f"errors {level['error_rate']:.2%}", flush=True)
    finally:
        if server is not None:
            server.stop()

    with open(args.out / "loadtest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)
    title = f"local endpoint ({args.workers} workers, runtime {runtime.get('runtime')})"
    plot(results, args.out / "loadtest.png", title)
    recommendation = recommend(results, args.slo_ms)
    (args.out / "loadtest.json").write_text(json.dumps(
        {"url": url, "workers": args.workers, "runtime": runtime.get("runtime"), "levels": results,
         "autoscaling": recommendation}, indent=2))
    print(f"\nwrote {args.out / 'loadtest.csv'} and {args.out / 'loadtest.png'}")
    if recommendation["invocations_per_instance_target"] is None:
        print(f"autoscaling: {recommendation['reason']}")
    else:
        rate = recommendation["sustainable_requests_per_s"]
        print(f"autoscaling: sustainable {rate:.1f} req/s per instance (p99 <= {args.slo_ms:g} ms, no errors)"
              f" -> TargetValue for SageMakerVariantInvocationsPerInstance = {rate:.1f} x 60 x {SAFETY_FACTOR} = "
              f"{recommendation['invocations_per_instance_target']} invocations/minute")
    return 0


if __name__ == "__main__":
    sys.exit(main())
