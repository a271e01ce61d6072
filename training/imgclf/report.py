"""The run report: one HTML page with PNG plots that a person opens instead of reading logs.

The same builder for both pipelines: local mode (localmode/report.py hands it the Optuna study's trials)
and the AWS pipeline (the ReportFunction Lambda, mlpipeline.run_report, hands it the tuning job's trials
and the S3 job outputs). It reads what the run left behind — the tuning trials, the final training job's
output-data files (training-history.json, evaluation.json, debugger-report.json, profiler-report.json),
the model's metadata.json (serving export, prediction baseline), the sample invocations and the run's
cost — and draws (the figures: imgclf.report_plots): learning curves, tuning trials (objective vs lr and
batch size), the confusion matrix and per-class accuracy on the test split, the debugging-rule results,
the profiler summary, the serving numbers, the sample requests' confidence against the validation
baseline and the cost table.
A part whose input is missing says so instead of failing the report.

Trials are plain rows: {"trial", "state" (COMPLETE | PRUNED | FAIL | RUNNING), "lr", "batch-size",
"objective" (final value or None), "last_value" (the last reported value of a pruned/stopped trial)}.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from imgclf import contract, monitoring, report_plots


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "<p class=missing>nothing recorded</p>"
    columns = columns or list(rows[0])
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(row.get(c))}</td>" for c in columns) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return _esc(f"{value:.4g}")
    if isinstance(value, dict | list):
        return _esc(json.dumps(value)[:300])
    return _esc("" if value is None else value)


COMPLETE, PRUNED = "COMPLETE", "PRUNED"
BASELINE_KEY = "prediction_baseline"  # metadata.json's key for imgclf.monitoring.baseline's record


def best_trial(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The complete trial with the best objective (contract.OBJECTIVE_TYPE: lowest)."""
    complete = [t for t in trials if t.get("state") == COMPLETE and t.get("objective") is not None]
    return min(complete, key=lambda t: t["objective"]) if complete else None


def _trial_rows(trials: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """The tuning trials' table rows; their figure (objective against lr and batch size) when one completed."""
    rows = [{"trial": t.get("trial"), "state": t.get("state"), "lr": t.get("lr"), "batch-size": t.get("batch-size"),
             contract.OBJECTIVE_METRIC_NAME: t.get("objective"), **({"job": t["job"]} if "job" in t else {})}
            for t in trials]
    best = best_trial(trials)
    if best is None:
        return rows
    complete, stopped = (_trial_points(trials, state) for state in (COMPLETE, PRUNED))
    report_plots.plot_trials(complete, stopped, (float(best["lr"]), int(best["batch-size"]), best["objective"]), out)
    return rows


def _trial_points(trials: list[dict[str, Any]], state: str) -> list[tuple[float, int, float]]:
    """(lr, batch size, objective) of the trials in `state`; a stopped trial's last reported value."""
    points = [(float(t["lr"]), int(t["batch-size"]),
               t["objective"] if t.get("objective") is not None else t.get("last_value"))
              for t in trials if t.get("state") == state and t.get("lr") is not None]
    return [p for p in points if p[2] is not None]


def _debugger_rows(debugger: Any) -> list[dict[str, Any]]:
    rules = debugger.get("rules", []) if isinstance(debugger, dict) else debugger
    rows = []
    for rule in rules or []:
        if not isinstance(rule, dict):
            continue
        evidence = rule.get("evidence")
        rows.append({"rule": rule.get("rule"), "status": rule.get("status"),
                     "SageMaker rule": rule.get("sagemaker_rule"),
                     "evidence": evidence.get("summary", evidence) if isinstance(evidence, dict) else evidence,
                     "parameters": rule.get("parameters")})
    return rows


def _profiler_html(profiler: Any, link: str | None) -> str:
    if not isinstance(profiler, dict):
        return "<p class=missing>no profiler report</p>"
    parts = []
    split = profiler.get("step_time_split") or profiler.get("step_time")
    if isinstance(split, dict):
        parts.append(_table([split]))
    ops = profiler.get("top_operators") or profiler.get("top_ops")
    if isinstance(ops, list):
        parts.append(_table([op for op in ops[:10] if isinstance(op, dict)]))
    system = profiler.get("system") or profiler.get("system_metrics")
    if isinstance(system, dict):
        parts.append(_table([{k: v for k, v in system.items() if not isinstance(v, list | dict)}]))
    if link:
        parts.append(f'<p><a href="{_esc(link)}">full profiler report</a></p>')
    return "".join(parts) or f"<pre>{_esc(json.dumps(profiler, indent=1)[:3000])}</pre>"


def _serving_html(metadata: Any, predictions: list[dict[str, Any]]) -> str:
    parts = []
    serving = metadata.get("serving") if isinstance(metadata, dict) else None
    if isinstance(serving, dict):
        variants = serving.get("variants") if isinstance(serving.get("variants"), dict) else {}
        parts.append(f"<p>Measured at export on {_esc(serving.get('validation_samples'))} validation images: "
                     f"eager fp32 torch {_fmt(serving.get('torch_latency_ms'))} ms per image; a runtime serves "
                     f"only with top-1 agreement ≥ {_fmt(serving.get('min_agreement'))}. Default: "
                     f"<b>{_esc(serving.get('default'))}</b>.</p>")
        parts.append(_table([{"runtime": name, **{k: v for k, v in info.items() if k != "file"}}
                             for name, info in variants.items() if isinstance(info, dict)]))
    else:
        parts.append("<p class=missing>no serving export recorded in metadata.json</p>")
    if predictions:
        latencies = sorted(p["latency_ms"] for p in predictions)
        median = latencies[len(latencies) // 2]
        parts.append(f"<p>{len(predictions)} requests through the inference Lambda's handler to the local "
                     f"endpoint: median {median:.1f} ms, max {latencies[-1]:.1f} ms (first includes warm-up)</p>")
        rows = []
        for p in predictions:
            top = (p.get("answer") or {}).get("predictions") if isinstance(p.get("answer"), dict) else None
            rows.append({"image": Path(p["image"]).name, "true class": p["true_class"], "status": p["status"],
                         "latency ms": p["latency_ms"],
                         "top predictions": ", ".join(f"{t['label']} {t['probability']:.2f}" for t in top)
                         if top else p.get("answer")})
        parts.append(_table(rows))
    return "".join(parts)


STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f3f3f3}img{max-width:100%}.missing{color:#999}.ok{color:#070}.bad{color:#b00}
pre{background:#f7f7f7;padding:.5em;overflow:auto;font-size:12px}"""


def _sample_top1(predictions: list[dict[str, Any]]) -> list[float]:
    """The top-1 probability of every sample request that got a 2xx answer."""
    values = []
    for p in predictions:
        answer = p.get("answer")
        top = answer.get("predictions") if isinstance(answer, dict) else None
        if top and isinstance(top[0], dict) and isinstance(top[0].get("probability"), int | float):
            values.append(float(top[0]["probability"]))
    return values


def _confidence_html(baseline: Any, predictions: list[dict[str, Any]], out: Path) -> str:
    """The sample requests' top-1 probabilities against the validation baseline (mean, ±1 standard
    deviation, the confidence-drift alarm's threshold, imgclf.monitoring); returns the section's HTML."""
    name = monitoring.TOP1_PROBABILITY.name
    if not isinstance(baseline, dict) or not isinstance(baseline.get(name), dict):
        return "<p class=missing>no prediction baseline in metadata.json</p>"
    top = baseline[name]
    entropy = baseline.get(monitoring.PREDICTION_ENTROPY.name) or {}
    try:
        threshold: float | None = monitoring.drift_threshold(baseline)
    except (KeyError, ValueError):
        threshold = None
    rows = [{"statistic": stat, "mean": summary.get("mean"), "std": summary.get("std")}
            for stat, summary in ((name, top), (monitoring.PREDICTION_ENTROPY.name, entropy)) if summary]
    policy = monitoring.DRIFT_POLICY
    text = (f"<p>Baseline: the model's answers on the {_esc(baseline.get('split'))} split "
            f"({_esc(baseline.get('count'))} images). The confidence-drift alarm counts an hour as drifted when "
            f"the mean top-1 probability of {policy.min_samples}+ requests falls below "
            f"<b>{_fmt(threshold)}</b>.</p>{_table(rows)}")
    samples = _sample_top1(predictions)
    if not samples:
        return text + "<p class=missing>no sample requests answered</p>"
    report_plots.plot_confidence(samples, float(top["mean"]), float(top["std"]), threshold, out)
    return text + f'<img src="{out.name}">'


def _cost_html(cost: Any) -> str:
    if not isinstance(cost, dict):
        return "<p class=missing>no cost computed (local mode spends no AWS money)</p>"
    parts = [f"<p><b>{_esc(cost.get('line'))}</b></p>", _table(cost.get("items") or [])]
    monthly = cost.get("endpoint_monthly")
    if isinstance(monthly, dict):
        parts.append(f"<p>The live endpoint: {_esc(monthly.get('instance_count'))} × "
                     f"{_esc(monthly.get('instance_type'))} = <b>${_fmt(monthly.get('usd'))} a month</b> "
                     f"(730 hours) before autoscaling adds instances.</p>")
    parts.append(f"<p>Prices: {_esc(cost.get('price_source'))}.</p>")
    return "".join(parts)


def write_report(out_dir: Path, *, summary: dict[str, Any], trials: list[dict[str, Any]], data_dir: Path,
                 metadata: dict[str, Any] | None, log_text: str = "", profiler_link: str | None = None,
                 cost: dict[str, Any] | None = None) -> Path:
    """Write out_dir/index.html and its PNGs; returns the HTML path.

    summary: run_id, gate {passed, reason}, and where known best_hyperparameters, best_objective, metrics,
    model (where the model is), outcome, predictions (sample invocations), notes (extra lines)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    has_curves = report_plots.plot_learning_curves(read_json(data_dir / "training-history.json"), log_text,
                                      out_dir / "learning-curves.png")
    trial_rows = _trial_rows(trials, out_dir / "tuning-trials.png")
    class_rows = report_plots.plot_evaluation(read_json(data_dir / "evaluation.json"), out_dir / "confusion-matrix.png")
    debugger = _debugger_rows(read_json(data_dir / "debugger-report.json"))
    predictions = summary.get("predictions") or []
    confidence = _confidence_html((metadata or {}).get(BASELINE_KEY), predictions,
                                 out_dir / "confidence.png")

    gate = summary.get("gate") or {}
    gate_class = "ok" if gate.get("passed") else "bad"
    metrics_rows = [{"metric": k, "value": v} for k, v in sorted((summary.get("metrics") or {}).items())]
    best = summary.get("best_objective")
    headline = (f"<p>Best hyperparameters <b>{_esc(summary.get('best_hyperparameters'))}</b>"
                f" ({_esc(contract.OBJECTIVE_METRIC_NAME)} {_fmt(best)}).") if summary.get("best_hyperparameters") \
        else "<p>"
    if gate:
        headline += (f" Quality gate: <b class={gate_class}>{'approved' if gate.get('passed') else 'rejected'}</b>"
                     f" — {_esc(gate.get('reason'))}.")
    if summary.get("model"):
        headline += f" Model: <code>{_esc(summary['model'])}</code>."
    headline += "</p>" + "".join(f"<p>{_esc(note)}</p>" for note in summary.get("notes") or [])

    def image(name: str, present: bool) -> str:
        return f'<img src="{name}">' if present and (out_dir / name).exists() else \
            "<p class=missing>not enough data to plot</p>"

    outcome = f" — {_esc(summary['outcome'])}" if summary.get("outcome") else ""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Run {_esc(summary['run_id'])}</title>
<style>{STYLE}</style></head><body>
<h1>Run {_esc(summary['run_id'])}{outcome}</h1>
{headline}
<h2>Cost</h2>{_cost_html(cost)}
<h2>Final metrics</h2>{_table(metrics_rows)}
<h2>Learning curves (best model)</h2>{image('learning-curves.png', has_curves)}
<h2>Tuning trials</h2>{image('tuning-trials.png', True)}{_table(trial_rows)}
<h2>Test split: confusion matrix and per-class accuracy</h2>{image('confusion-matrix.png', bool(class_rows))}
<details><summary>per-class table</summary>{_table(class_rows)}</details>
<h2>Debugging rules</h2>{_table(debugger)}
<h2>Profiler</h2>{_profiler_html(read_json(data_dir / 'profiler-report.json'), profiler_link)}
<h2>Serving</h2>{_serving_html(metadata, predictions)}
<h2>Prediction confidence against the baseline</h2>{confidence}
</body></html>"""
    path = out_dir / "index.html"
    path.write_text(page)
    return path
