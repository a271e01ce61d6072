"""Locust user for the endpoint load test (driven by benchmarks/loadtest_endpoint.py; usable on its own):

    .venv/bin/locust -f benchmarks/locustfile_endpoint.py --headless -u 4 -r 4 -t 20s \\
        --host http://127.0.0.1:8080

Each simulated client posts photo-like 500x375 JPEGs to /invocations back to back (a closed loop: the
concurrency level is the number of requests in flight). LOADTEST_MAX_REQUESTS bounds the total count:
the run stops when it is reached, or at --run-time, whichever comes first. LOADTEST_PATH may name the
runtime API path instead (/endpoints/<name>/invocations).
"""

from __future__ import annotations

import os

import numpy as np
from bench_inference import photo_like_jpeg  # beside this file: locust puts the locustfile's folder on sys.path
from locust import HttpUser, constant, task

IMAGES = [photo_like_jpeg(np.random.default_rng(seed))
          for seed in range(int(os.environ.get("LOADTEST_IMAGES", "16")))]
MAX_REQUESTS = int(os.environ.get("LOADTEST_MAX_REQUESTS", "0")) or None
PATH = os.environ.get("LOADTEST_PATH", "/invocations")
_sent = 0


class EndpointClient(HttpUser):
    wait_time = constant(0)

    @task
    def classify(self) -> None:
        global _sent
        if MAX_REQUESTS is not None and _sent >= MAX_REQUESTS:
            self.environment.runner.quit()
            return
        _sent += 1
        body = IMAGES[_sent % len(IMAGES)]
        with self.client.post(PATH, data=body, headers={"Content-Type": "image/jpeg"},
                              name="invocations", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
            elif not response.json().get("predictions"):
                response.failure("answer without predictions")
