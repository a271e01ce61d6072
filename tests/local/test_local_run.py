"""Local mode end to end: tune (2 trials) -> train -> gate -> serve -> the inference Lambda's handler -> report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imgclf import contract
from localmode import endpoint as local_endpoint
from localmode import pipeline
from localmode.cli import main as cli_main


@pytest.mark.slow
def test_run_serves_through_the_lambda_handler_and_writes_the_report(tiny_dataset: Path, tmp_path: Path,
                                                                   fast_options) -> None:
    runs = tmp_path / "runs"
    options = fast_options(tiny_dataset, runs)
    try:
        summary = pipeline.run(options)

        # Tuning ran 2 trials with the shared search space; the best one's values are in it.
        assert set(summary.best_hyperparameters) == {p.name for p in contract.SEARCH_SPACE}
        assert summary.best_hyperparameters["batch-size"] in contract.SEARCH_SPACE[1].values
        assert 0.0 <= summary.metrics[contract.TEST_ACCURACY_METRIC_NAME] <= 1.0
        assert summary.gate["passed"]

        # The extraction job wrote the feature set (the AWS format); every trial trained its head on it, and
        # the final job (cached features by default) found the same files in its cache.
        run_dir = Path(summary.run_dir)
        assert (run_dir / "feature-cache" / "feature-set.json").is_file()
        for trial in (run_dir / "trials").iterdir():
            assert "from the feature set" in (trial / "training.log").read_text(), trial
        assert (run_dir / "final" / "training.log").read_text().count("feature cache hit") == 3

        # The endpoint answered every sample through the Lambda handler, with labels of the dataset.
        assert summary.endpoint is not None and local_endpoint.ping(summary.endpoint["url"])
        assert len(summary.predictions) == 2
        labels = {folder.split(".", 1)[1] for folder in ("001.Red_thing", "002.Green_thing", "003.Blue_thing")}
        for item in summary.predictions:
            assert item["status"] == 200, item
            predictions = item["answer"]["predictions"]
            assert len(predictions) == 3
            assert {p["label"] for p in predictions} <= labels
            assert abs(sum(p["probability"] for p in predictions) - 1.0) < 1e-3

        # The report and its plots exist; the summary and the live-model record are written.
        report = Path(summary.report)
        page = report.read_text()
        for plot in ("learning-curves.png", "tuning-trials.png", "confusion-matrix.png"):
            assert (report.parent / plot).stat().st_size > 1000, plot
            assert plot in page
        for rule in ("loss_not_decreasing", "overfit", "overtraining", "poor_weight_initialization"):
            assert f"<td>{rule}</td>" in page, rule
        recorded = json.loads((Path(summary.run_dir) / "summary.json").read_text())
        assert recorded["run_id"] == summary.run_id
        live = json.loads((runs / "live-model.json").read_text())
        assert live["run_id"] == summary.run_id

        # A second run of the same data and settings resumes: no new trial, no retraining.
        trials_before = sorted(p.name for p in (Path(summary.run_dir) / "trials").iterdir())
        log_before = (Path(summary.run_dir) / "final" / "training.log").stat().st_mtime_ns
        again = pipeline.run(options)
        assert again.run_id == summary.run_id
        assert sorted(p.name for p in (Path(summary.run_dir) / "trials").iterdir()) == trials_before
        assert (Path(summary.run_dir) / "final" / "training.log").stat().st_mtime_ns == log_before
    finally:
        local_endpoint.stop(runs)
    assert not local_endpoint.ping(options_url(options))


def options_url(options: pipeline.RunOptions) -> str:
    return f"http://127.0.0.1:{options.port}"


def test_bad_dataset_fails_before_any_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "broken"
    (data / "train" / "001.A").mkdir(parents=True)
    (data / "valid" / "001.A").mkdir(parents=True)
    code = cli_main(["run", "--data", str(data), "--runs-dir", str(tmp_path / "runs"), "--no-serve"])
    assert code == 2
    assert "lacks the split folder(s) test" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_class_sets_that_differ_are_named(tmp_path: Path) -> None:
    for split, folders in {"train": ("001.A", "002.B"), "valid": ("001.A",), "test": ("001.A", "002.B")}.items():
        for folder in folders:
            (tmp_path / split / folder).mkdir(parents=True)
    with pytest.raises(ValueError, match=r"classes of valid/ differ from train/: 002\.B"):
        pipeline.check_dataset(tmp_path)


def test_serve_hands_its_arguments_to_the_server(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["serve", "--help"])
    assert exit_info.value.code == 0
    assert "model directory" in capsys.readouterr().out
