"""Local mode's run report: imgclf.report's builder (the AWS pipeline's too) on a local run's files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from imgclf import report


def trials_from_study(study: optuna.Study) -> list[dict[str, Any]]:
    """The Optuna study's trials as the report's plain rows."""
    return [{"trial": t.number, "state": t.state.name, "lr": t.params.get("lr"),
             "batch-size": t.params.get("batch-size"), "objective": t.value,
             "last_value": list(t.intermediate_values.values())[-1] if t.intermediate_values else None}
            for t in study.get_trials(deepcopy=False)]


def write_report(out_dir: Path, *, summary: dict[str, Any], study: optuna.Study, final_job_dir: Path) -> Path:
    """Write out_dir/index.html and its PNGs from a local run; returns the HTML path."""
    log_path = final_job_dir / "training.log"
    profiler_html = final_job_dir / "output" / "data" / "profiler-report.html"
    metadata_path = final_job_dir / "model" / "metadata.json"
    metadata = report.read_json(metadata_path) if metadata_path.exists() else None
    return report.write_report(
        out_dir, summary={**summary, "model": summary.get("model_dir")}, trials=trials_from_study(study),
        data_dir=final_job_dir / "output" / "data", metadata=metadata,
        log_text=log_path.read_text() if log_path.exists() else "",
        profiler_link=str(profiler_html) if profiler_html.exists() else None)
