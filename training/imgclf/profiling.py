"""Profiling, as the seed's ProfilerConfig(system_monitor_interval_millis=500, FrameworkProfile(num_steps=10))
did with SageMaker Profiler, but inside the script so it works anywhere:

- torch.profiler over N training steps (after one warm-up step), exported by
  torch.profiler.tensorboard_trace_handler as `<tensorboard-dir>/<run>/<host>_<pid>.<ns>.pt.trace.json`:
  the layout TensorBoard's PyTorch profiler plugin (torch-tb-profiler) opens: a run is a folder holding
  `<worker>[.<span>].pt.trace.json[.gz]` files (pytorch/kineto tb_plugin/torch_tb_profiler/plugin.py
  `_get_run_dirs`, consts.py `WORKER_PATTERN`), next to the run's learning curves
  (imgclf.tensorboard_log). The file is a Chrome trace, which Perfetto (ui.perfetto.dev) opens as well.
- System metrics (CPU %, memory, GPU memory if any) sampled every 500 ms by a background thread.
- The step-time split (waiting for data vs compute) for every training step.
- `profiler-report.json` + `profiler-report.html`: the split, the top operators, the system metrics.
"""

from __future__ import annotations

import html
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import torch
from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

from imgclf import tensorboard_log

TOP_OPERATORS = 15


class SystemMonitor:
    """Samples CPU, memory and (CUDA) GPU memory every `interval_s` in a daemon thread."""

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="system-monitor", daemon=True)
        self._process = psutil.Process()
        self._t0 = time.monotonic()

    def start(self) -> SystemMonitor:
        psutil.cpu_percent(None)  # the first call only primes the counter
        self._thread.start()
        return self

    def _sample(self) -> dict[str, float]:
        memory = psutil.virtual_memory()
        sample = {"t_s": round(time.monotonic() - self._t0, 3), "cpu_percent": psutil.cpu_percent(None),
                  "memory_percent": memory.percent,
                  "process_rss_mb": self._process.memory_info().rss / 2**20}
        if torch.cuda.is_available():
            sample["gpu_memory_allocated_mb"] = torch.cuda.memory_allocated() / 2**20
            sample["gpu_memory_reserved_mb"] = torch.cuda.memory_reserved() / 2**20
        return sample

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(self._sample())

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"interval_ms": round(self.interval_s * 1000), "num_samples": len(self.samples),
                               "cpu_count": psutil.cpu_count()}
        if self.samples:
            for key in self.samples[0]:
                if key == "t_s":
                    continue
                values = [s[key] for s in self.samples if key in s]
                out[key] = {"mean": round(sum(values) / len(values), 2), "max": round(max(values), 2)}
        return out


class StepProfiler:
    """torch.profiler for `num_steps` steps after one warm-up step; call `step()` after each training step.
    The trace goes to `trace_dir` (a TensorBoard run folder) through tensorboard_trace_handler."""

    def __init__(self, trace_dir: Path, num_steps: int = 10):
        self.trace_dir = trace_dir
        self.num_steps = num_steps
        self.top_operators: list[dict[str, Any]] = []
        self.trace_files: list[Path] = []
        self._export = tensorboard_trace_handler(str(trace_dir))
        self._profile: profile | None = None
        self._steps = 0
        if num_steps <= 0:
            return
        activities = [ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(ProfilerActivity.CUDA)
        self._profile = profile(activities=activities, schedule=schedule(wait=0, warmup=1, active=num_steps),
                                on_trace_ready=self._trace_ready, record_shapes=False)
        self._profile.start()

    def _trace_ready(self, prof: profile) -> None:
        before = set(self.trace_dir.glob("*.pt.trace.json"))
        self._export(prof)
        self.trace_files += sorted(set(self.trace_dir.glob("*.pt.trace.json")) - before)
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events) or 1
        self.top_operators = [
            {"name": e.key, "calls": e.count, "self_cpu_ms": round(e.self_cpu_time_total / 1000, 3),
             "cpu_total_ms": round(e.cpu_time_total / 1000, 3),
             "self_cpu_percent": round(100 * e.self_cpu_time_total / total, 2)}
            for e in events[:TOP_OPERATORS]]

    def step(self) -> None:
        if self._profile is None:
            return
        self._steps += 1
        self._profile.step()
        if self._steps >= self.num_steps + 1:
            self.stop()

    def stop(self) -> None:
        if self._profile is not None:
            prof, self._profile = self._profile, None
            prof.stop()


class StepTimer:
    """Per-step wall time split into waiting for the next batch (data) and the rest (compute)."""

    def __init__(self) -> None:
        self.data_s: list[float] = []
        self.compute_s: list[float] = []

    def record(self, data_s: float, compute_s: float) -> None:
        self.data_s.append(data_s)
        self.compute_s.append(compute_s)

    def summary(self) -> dict[str, Any]:
        data, compute = sum(self.data_s), sum(self.compute_s)
        total = data + compute
        n = len(self.data_s)
        return {"steps": n, "data_loading_s": round(data, 4), "compute_s": round(compute, 4),
                "data_loading_percent": round(100 * data / total, 2) if total else 0.0,
                "compute_percent": round(100 * compute / total, 2) if total else 0.0,
                "mean_step_ms": round(1000 * total / n, 3) if n else 0.0}


@dataclass
class Instruments:
    """What watches a run's epochs: the step timer, and on rank 0 the system monitor, the torch profiler
    and the TensorBoard scalars (the ranks but 0 profile no step and write no scalar)."""

    timer: StepTimer
    monitor: SystemMonitor | None
    profiler: StepProfiler
    scalars: tensorboard_log.ScalarWriter | None

    @classmethod
    def start(cls, tensorboard_run: Path, monitor_interval_s: float, profile_steps: int,
              is_main: bool) -> Instruments:
        timer = StepTimer()
        monitor = SystemMonitor(monitor_interval_s).start() if is_main else None
        profiler = StepProfiler(tensorboard_run, profile_steps if is_main else 0)
        scalars = tensorboard_log.ScalarWriter(tensorboard_run) if is_main else None
        return cls(timer, monitor, profiler, scalars)

    def stop(self) -> None:
        self.profiler.stop()
        if self.scalars is not None:
            self.scalars.close()
        if self.monitor is not None:
            self.monitor.stop()


def write_report(output_dir: Path, timer: StepTimer, monitor: SystemMonitor, profiler: StepProfiler,
                 extra: dict[str, Any], tensorboard_dir: Path | None = None) -> dict[str, Any]:
    """profiler-report.json/.html; trace_files are relative to `tensorboard_dir` (the logdir) when given."""
    traces = [str(f.relative_to(tensorboard_dir)) if tensorboard_dir is not None else str(f)
              for f in profiler.trace_files]
    report = {"step_time": timer.summary(), "top_operators": profiler.top_operators,
              "system": monitor.summary(), "tensorboard_dir": str(tensorboard_dir) if tensorboard_dir else None,
              "trace_files": traces, "profiled_steps": profiler.num_steps, **extra}
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "profiler-report.json").write_text(json.dumps(report, indent=2))
    (output_dir / "profiler-report.html").write_text(render_html(report))
    return report


def render_html(report: dict[str, Any]) -> str:
    esc = html.escape
    split = report["step_time"]
    rows = "".join(f"<tr><td>{esc(op['name'])}</td><td>{op['calls']}</td><td>{op['self_cpu_ms']}</td>"
                   f"<td>{op['self_cpu_percent']}%</td></tr>" for op in report["top_operators"])
    system = "".join(f"<tr><td>{esc(k)}</td><td>{esc(json.dumps(v))}</td></tr>" for k, v in report["system"].items())
    traces = "".join(f"<li>{esc(t)}</li>" for t in report["trace_files"]) or "<li>none</li>"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Profiler report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}.bar{{display:flex;height:24px;width:480px}}
.d{{background:#e99}}.c{{background:#9c9}}</style></head><body>
<h1>Profiler report</h1>
<h2>Step time: data loading vs compute ({split['steps']} steps, mean {split['mean_step_ms']} ms)</h2>
<div class="bar"><div class="d" style="width:{split['data_loading_percent']}%"></div>
<div class="c" style="width:{split['compute_percent']}%"></div></div>
<p>data loading {split['data_loading_percent']}% ({split['data_loading_s']} s),
compute {split['compute_percent']}% ({split['compute_s']} s)</p>
<h2>Top operators ({report['profiled_steps']} profiled steps, by self CPU time)</h2>
<table><tr><th>operator</th><th>calls</th><th>self CPU ms</th><th>share</th></tr>{rows}</table>
<h2>System metrics</h2><table>{system}</table>
<h2>Trace (in the TensorBoard logdir {esc(str(report.get("tensorboard_dir") or ""))}; Perfetto opens it too)</h2>
<ul>{traces}</ul>
</body></html>
"""
