"""The local "real-time endpoint": the serving HTTP server (localmode.server) as a background process.

Like the stack's endpoint it has a stable name and outlives the run that deployed it: `run` leaves it
answering on loopback and records it in <runs>/endpoint.json; the next deploy replaces it (local mode's
UpdateEndpoint) and `python -m localmode stop` stops it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import botocore.session

from imgclf import smoke_check
from localmode.supervisor import ping, running, start_background, stop_server

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
        return running(self.pid) and ping(self.url)


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
    stop_server(record.pid, timeout=15)
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
    log_path.unlink(missing_ok=True)
    try:
        # Its own session: it keeps answering after this command returns, and Ctrl-C here stays here.
        server = start_background(model_dir, "127.0.0.1", port, workers, log_path=log_path,
                                  startup_timeout_s=startup_timeout)
    except RuntimeError as error:
        raise EndpointError(f"{error} (log: {log_path})") from error
    endpoint = LocalEndpoint(name=name, url=server.url, pid=server.process.pid, model_dir=str(model_dir),
                             log_path=str(log_path))
    runs_dir.mkdir(parents=True, exist_ok=True)
    (runs_dir / ENDPOINT_RECORD).write_text(json.dumps(asdict(endpoint), indent=2))
    return endpoint


def smoke_test(endpoint: LocalEndpoint, model_dir: Path) -> smoke_check.SmokeReport:
    """The stack's post-deploy smoke test (imgclf.smoke_check, the code the SmokeTest Lambda runs) against
    the local endpoint: the model's recorded sample through InvokeEndpoint on the runtime API path of the
    local server, with the content types a client sends."""
    sample = smoke_check.validate_sample(json.loads((Path(model_dir) / smoke_check.SAMPLE_FILE).read_text()))
    # The local server checks no signature; botocore still signs, so any credentials do.
    session = botocore.session.get_session()
    if session.get_credentials() is None:
        session.set_credentials("local", "local")
    client = session.create_client("sagemaker-runtime", region_name="us-east-1", endpoint_url=endpoint.url)
    return smoke_check.run(sample, smoke_check.endpoint_invoker(client, endpoint.name, sample["top_k"]))
