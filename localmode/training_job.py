"""Run the training entry point the way SageMaker runs it, on this machine.

A local "training job" is `python training/train.py --name value ...` in a subprocess, with the SM_*
environment SageMaker sets and a job folder standing in for /opt/ml. One process per "host"; with two or
more hosts the processes find each other through SM_HOSTS / SM_CURRENT_HOST exactly as on a
multi-instance SageMaker job (MASTER_ADDR points the first host's name at loopback).

Log lines stream to a file and to an optional callback (progress bars, Optuna pruning), and metrics are
read back with the same regexes the SageMaker tuning job uses (imgclf.contract).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from imgclf import contract

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAIN_SCRIPT = REPO_ROOT / "training" / "train.py"


class TrainingJobFailed(RuntimeError):
    """The entry point exited non-zero; the message carries the end of its log."""


# Every training process running now, so that Ctrl-C can stop them all at once: they run in their own
# process groups (the terminal's SIGINT does not reach them), and parallel trials run in worker threads
# that the main thread would otherwise wait for. Once stopped, no new job starts in this process.
_RUNNING: set[subprocess.Popen[str]] = set()
# Reentrant: the SIGINT handler runs in the main thread, which may hold the lock at that moment.
_RUNNING_LOCK = threading.RLock()
_STOPPED = threading.Event()


def stop_all_jobs(wait_seconds: float = 0.0) -> None:
    """Stop every running training process (SIGTERM to its process group) and refuse new ones; with
    `wait_seconds`, wait that long for them to exit, then SIGKILL what is left."""
    with _RUNNING_LOCK:
        _STOPPED.set()
        running = list(_RUNNING)
    for process in running:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    if wait_seconds:
        _terminate(running, timeout=wait_seconds)


@dataclass
class TrainingJob:
    """One SageMaker-style training job. `job_dir` stands in for /opt/ml."""

    name: str
    job_dir: Path
    data_dir: Path  # dogImages layout: train/ valid/ test/ (the single "training" channel)
    hyperparameters: Mapping[str, str | int | float]
    instance_count: int = 1
    # Hyperparameters the tuner chose are JSON-quoted by SageMaker (`--batch-size "64"`): same here.
    quoted_hyperparameters: frozenset[str] = field(default_factory=frozenset)
    threads_per_process: int | None = None

    @property
    def model_dir(self) -> Path:
        return self.job_dir / "model"

    @property
    def output_data_dir(self) -> Path:
        return self.job_dir / "output" / "data"

    @property
    def checkpoint_dir(self) -> Path:
        return self.job_dir / "checkpoints"

    @property
    def log_path(self) -> Path:
        return self.job_dir / "training.log"


@dataclass(frozen=True)
class TrainingJobResult:
    job: TrainingJob
    log_text: str

    @property
    def final_metrics(self) -> dict[str, float]:
        return contract.final_metrics(self.log_text)

    @property
    def metric_series(self) -> dict[str, list[float]]:
        return contract.parse_metrics(self.log_text)


def hyperparameter_args(hyperparameters: Mapping[str, str | int | float], quoted: frozenset[str]) -> list[str]:
    """CLI arguments as SageMaker passes hyperparameters: `--name value`, tuned ones JSON-quoted."""
    args: list[str] = []
    for name, value in hyperparameters.items():
        text = str(value)
        args += [f"--{name}", json.dumps(text) if name in quoted else text]
    return args


def host_names(instance_count: int) -> list[str]:
    return [f"algo-{i + 1}" for i in range(instance_count)]


def sagemaker_environment(job: TrainingJob, current_host: str, master_port: int) -> dict[str, str]:
    """The SM_* variables SageMaker's training toolkit sets, pointed at the job folder."""
    hosts = host_names(job.instance_count)
    env = {
        "SM_MODEL_DIR": str(job.model_dir),
        "SM_OUTPUT_DIR": str(job.job_dir / "output"),
        "SM_OUTPUT_DATA_DIR": str(job.output_data_dir),
        "SM_INPUT_DIR": str(job.job_dir / "input"),
        "SM_CHANNELS": json.dumps(["training"]),
        "SM_CHANNEL_TRAINING": str(job.data_dir),
        "SM_HOSTS": json.dumps(hosts),
        "SM_CURRENT_HOST": current_host,
        "SM_NUM_GPUS": "0",
        "SM_NUM_CPUS": str(os.cpu_count() or 1),
        "SM_HPS": json.dumps({k: str(v) for k, v in job.hyperparameters.items()}),
        # The host names only resolve inside SageMaker; on one machine the first host is loopback.
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(master_port),
        "PYTHONUNBUFFERED": "1",
    }
    if job.threads_per_process:
        env["OMP_NUM_THREADS"] = str(job.threads_per_process)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_training_job(job: TrainingJob, on_line: Callable[[str], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> TrainingJobResult:
    """Run the job to the end and return its log (the first host's, which is rank 0).

    `on_line` sees every line of rank 0 as it is printed; `should_stop` is asked after each line and
    ends the job early (Optuna pruning) — the result then holds the log so far.
    Raises TrainingJobFailed when a process exits non-zero (not when we stopped it).
    """
    for folder in (job.model_dir, job.output_data_dir, job.checkpoint_dir):
        folder.mkdir(parents=True, exist_ok=True)
    args = [*hyperparameter_args(job.hyperparameters, job.quoted_hyperparameters),
            "--checkpoint-dir", str(job.checkpoint_dir)]
    port = free_port()
    processes: list[subprocess.Popen[str]] = []
    drains: list[threading.Thread] = []
    stopped = False
    try:
        for rank, host in enumerate(host_names(job.instance_count)):
            env = {**os.environ, **sagemaker_environment(job, host, port)}
            log_path = job.log_path if rank == 0 else job.job_dir / f"training-{host}.log"
            with _RUNNING_LOCK:
                if _STOPPED.is_set():
                    raise TrainingJobFailed(f"training job {job.name} not started: the run was interrupted")
                process = subprocess.Popen(
                    [sys.executable, str(TRAIN_SCRIPT), *args], cwd=job.job_dir, env=env, text=True,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1,
                    # Own process group: Ctrl-C reaches us once, and we stop the children ourselves.
                    start_new_session=True)
                _RUNNING.add(process)
            processes.append(process)
            if rank > 0:
                drains.append(_drain_to_file(process, log_path))
        lines: list[str] = []
        with job.log_path.open("w") as log:
            assert processes[0].stdout is not None
            for line in processes[0].stdout:
                log.write(line)
                log.flush()
                lines.append(line)
                if on_line is not None:
                    on_line(line.rstrip("\n"))
                if should_stop is not None and should_stop():
                    stopped = True
                    break
        if stopped:
            _terminate(processes)
        for process in processes:
            process.wait()
        for drain in drains:
            drain.join()
    finally:
        _terminate(processes)
        with _RUNNING_LOCK:
            _RUNNING.difference_update(processes)
    log_text = "".join(lines)
    failed = [p for p in processes if p.returncode not in (0, None)]
    if failed and not stopped:
        tail = "".join(lines[-25:])
        raise TrainingJobFailed(f"training job {job.name} failed (exit code {failed[0].returncode}); "
                                f"log: {job.log_path}\n{tail}")
    return TrainingJobResult(job=job, log_text=log_text)


def _drain_to_file(process: subprocess.Popen[str], path: Path) -> threading.Thread:
    def drain() -> None:
        assert process.stdout is not None
        with path.open("w") as log:
            for line in process.stdout:
                log.write(line)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    return thread


def _terminate(processes: list[subprocess.Popen[str]], timeout: float = 10.0) -> None:
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        if process.poll() is None:
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
