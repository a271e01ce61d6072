"""imgclf.report, the run report both pipelines build, on job outputs recorded from this project's own
train.py (fixtures/final-job, see record_job_outputs.py)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna

from imgclf import monitoring, report
from localmode import report as local_report

FINAL_JOB = Path(__file__).resolve().parent / "fixtures" / "final-job"
TRIALS = [
    {"trial": 0, "state": "COMPLETE", "lr": 0.01, "batch-size": "64", "objective": 0.61, "job": "t-000-aa"},
    {"trial": 1, "state": "PRUNED", "lr": 0.08, "batch-size": "256", "objective": None, "last_value": 1.9},
    {"trial": 2, "state": "COMPLETE", "lr": 0.002, "batch-size": "32", "objective": 0.48},
    {"trial": 3, "state": "FAIL", "lr": 0.05, "batch-size": "128", "objective": None},
]


def _metadata() -> dict:
    return json.loads((FINAL_JOB / "model" / "metadata.json").read_text())


def test_report_on_recorded_job_outputs(tmp_path: Path):
    metadata = _metadata()
    baseline = metadata[report.BASELINE_KEY]
    predictions = [{"image": "test/0.png", "true_class": "T-shirt", "status": 200, "latency_ms": 12.0,
                    "answer": {"predictions": [{"label": "T-shirt", "class_id": 0, "probability": 0.93}]}},
                   {"image": "test/1.png", "true_class": "Bag", "status": 200, "latency_ms": 9.0,
                    "answer": {"predictions": [{"label": "Shirt", "class_id": 6, "probability": 0.41}]}}]
    cost = {"line": "Run cost: $0.82", "items": [{"item": "training", "usd": 0.49}], "price_source": "test table",
            "endpoint_monthly": {"instance_type": "ml.m5.large", "instance_count": 1, "usd": 83.95}}
    page = report.write_report(
        tmp_path, summary={"run_id": "fashion-mnist-0123", "outcome": "succeeded",
                           "gate": {"passed": True, "reason": "test accuracy 0.8 >= 0.7"},
                           "best_hyperparameters": {"lr": "0.002", "batch-size": "32"}, "best_objective": 0.48,
                           "metrics": metadata["metrics"], "predictions": predictions},
        trials=TRIALS, data_dir=FINAL_JOB / "output" / "data", metadata=metadata,
        log_text=(FINAL_JOB / "training.log").read_text(), cost=cost).read_text()
    for plot in ("learning-curves.png", "tuning-trials.png", "confusion-matrix.png", "confidence.png"):
        assert (tmp_path / plot).stat().st_size > 1000, plot
        assert f'src="{plot}"' in page
    assert "Run cost: $0.82" in page and "$83.95 a month" in page
    assert "t-000-aa" in page  # the tuning job's trial names
    for rule in json.loads((FINAL_JOB / "output/data/debugger-report.json").read_text())["rules"]:
        assert rule["sagemaker_rule"] in page
    assert f"{monitoring.drift_threshold(baseline):.4g}" in page  # the alarm's threshold, from the baseline
    assert "not enough data to plot" not in page


def test_a_report_with_nothing_recorded_still_renders(tmp_path: Path):
    page = report.write_report(tmp_path, summary={"run_id": "r", "gate": {}}, trials=[], data_dir=tmp_path / "none",
                               metadata=None).read_text()
    assert "no prediction baseline" in page and "no cost computed" in page
    assert report.best_trial(TRIALS)["trial"] == 2


def test_local_mode_hands_the_study_to_the_same_builder(tmp_path: Path):
    study = optuna.create_study(direction="minimize")
    for lr, batch, value in ((0.01, "64", 0.7), (0.003, "32", 0.5)):
        study.add_trial(optuna.trial.create_trial(
            params={"lr": lr, "batch-size": batch}, value=value,
            distributions={"lr": optuna.distributions.FloatDistribution(0.001, 0.1, log=True),
                           "batch-size": optuna.distributions.CategoricalDistribution(["32", "64"])}))
    job_dir = tmp_path / "final"
    (job_dir / "output").mkdir(parents=True)
    (job_dir / "output" / "data").symlink_to(FINAL_JOB / "output" / "data")
    (job_dir / "model").symlink_to(FINAL_JOB / "model")
    page = local_report.write_report(tmp_path / "report", summary={"run_id": "local", "model_dir": "runs/x",
                                                                   "gate": {"passed": True, "reason": "ok"}},
                                     study=study, final_job_dir=job_dir).read_text()
    assert (tmp_path / "report" / "tuning-trials.png").exists()
    assert "prediction_baseline" not in page and "Baseline: the model" in page
