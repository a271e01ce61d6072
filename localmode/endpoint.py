"""The local "real-time endpoint": the serving HTTP server (localmode.server) as a background process.

Like the stack's endpoint it has a stable name and outlives the run that deployed it: `run` leaves it
answering on loopback and records it in <runs>/endpoint.json; the next deploy replaces it (local mode's
UpdateEndpoint) and `python -m localmode stop` stops it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

ENDPOINT_RECORD = "endpoint.json"


class EndpointError(RuntimeError):
    pass


@dataclass(frozen=True)
class LocalEndpoint:
    name: str
    url: str
    pid: int
    model_dir: str
    log_path: str

    def is_alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except OSError:
            return False
        return ping(self.url)


def ping(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def read_record(runs_dir: Path) -> LocalEndpoint | None:
    path = runs_dir / ENDPOINT_RECORD
    if not path.exists():
        return None
    return LocalEndpoint(**json.loads(path.read_text()))


def stop(runs_dir: Path) -> LocalEndpoint | None:
    """Stop the recorded endpoint (if it still runs) and forget it. Returns what was stopped."""
    record = read_record(runs_dir)
    if record is None:
        return None
    try:
        os.killpg(record.pid, signal.SIGTERM)  # the server and its workers: its own process group
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            os.kill(record.pid, 0)
            time.sleep(0.2)
        os.killpg(record.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    (runs_dir / ENDPOINT_RECORD).unlink(missing_ok=True)
    return record


def deploy(runs_dir: Path, model_dir: Path, *, name: str, port: int, workers: int,
           startup_timeout: float = 120.0) -> LocalEndpoint:
    """Start the server on `model_dir` in the background (replacing the endpoint recorded before) and
    wait until /ping answers 200."""
    stop(runs_dir)
    url = f"http://127.0.0.1:{port}"
    if ping(url, timeout=0.5):
        raise EndpointError(f"something else already answers on {url}: stop it or pass --port")
    log_path = model_dir.parent / "endpoint.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "localmode.server", str(model_dir), "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(workers)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            # Its own session: it keeps answering after this command returns, and Ctrl-C here stays here.
            start_new_session=True)
    endpoint = LocalEndpoint(name=name, url=url, pid=process.pid, model_dir=str(model_dir),
                             log_path=str(log_path))
    deadline = time.monotonic() + startup_timeout
    while not ping(url, timeout=1.0):
        if process.poll() is not None:
            raise EndpointError(f"the endpoint exited with code {process.returncode}: see {log_path}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            raise EndpointError(f"the endpoint did not answer /ping within {startup_timeout:.0f} s: see {log_path}")
        time.sleep(0.3)
    runs_dir.mkdir(parents=True, exist_ok=True)
    (runs_dir / ENDPOINT_RECORD).write_text(json.dumps(asdict(endpoint), indent=2))
    return endpoint
