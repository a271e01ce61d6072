"""Ctrl-C stops a run cleanly and a rerun resumes; a manifest's dataset version runs once only."""

from __future__ import annotations

import argparse
import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from imgclf import manifest as manifests
from localmode import tuning, watch
from localmode.pipeline import default_run_id

REPO_ROOT = Path(__file__).resolve().parents[2]


def _finished_trials(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=0.1) as connection:
            return connection.execute("SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is still being created
        return 0


def _trial_running(trials_dir: Path, after: int) -> bool:
    logs = [trials_dir / f"trial-{n:03d}" / "training.log" for n in range(after + 1, after + 3)]
    return any(log.exists() and log.stat().st_size > 0 for log in logs)


@pytest.mark.slow
def test_interrupted_tuning_resumes(tiny_dataset: Path, tmp_path: Path, fast_options) -> None:
    runs = tmp_path / "runs"
    args = [sys.executable, "-m", "localmode", "run", "--data", str(tiny_dataset), "--runs-dir", str(runs),
            "--max-jobs", "3", "--tuning-epochs", "1", "--epochs", "1", "--image-size", "64", "--no-serve",
            "--quality-threshold", "0"]
    run_id = default_run_id(fast_options(tiny_dataset, runs, max_jobs=3))
    db = runs / run_id / "tuning.db"

    process = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    # Interrupt once a trial has finished and the next one is training (its log has begun).
    while _finished_trials(db) < 1 or not _trial_running(runs / run_id / "trials", after=0):
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        assert time.monotonic() < deadline, "no trial finished in time"
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)  # what Ctrl-C sends
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert "run the same command again to resume" in output

    study = optuna.load_study(study_name=run_id, storage=f"sqlite:///{db}")
    kept = {t.number: t.params for t in study.trials if t.state in tuning.FINISHED_STATES}
    assert 1 <= len(kept) < 3
    # No training process outlived the interruption.
    leftovers = subprocess.run(["pgrep", "-a", "-f", f"train.py.*{runs}"], capture_output=True, text=True).stdout
    assert leftovers == ""

    rerun = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    study = optuna.load_study(study_name=run_id, storage=f"sqlite:///{db}")
    finished = {t.number: t.params for t in study.trials if t.state in tuning.FINISHED_STATES}
    assert len(finished) == 3
    assert all(finished[number] == params for number, params in kept.items())  # kept, not rerun


def _upload(bucket: Path, source: Path, name: str, manifest: dict) -> Path:
    prefix = bucket / "datasets" / name
    for split in ("train", "valid", "test"):
        (prefix / split).parent.mkdir(parents=True, exist_ok=True)
        if not (prefix / split).exists():
            (prefix / split).symlink_to(source / split, target_is_directory=True)
    path = prefix / "manifest.json"  # uploaded last, as the README says
    path.write_text(json.dumps(manifest))
    return path


@pytest.mark.slow
def test_watch_runs_a_dataset_version_once(tiny_dataset: Path, tmp_path: Path, fast_options) -> None:
    bucket = tmp_path / "bucket"
    options = fast_options(tiny_dataset, tmp_path / "runs", serve=False, max_jobs=1)
    # The overrides also ask for the best model on two data-parallel processes, as on two instances.
    manifest = {"version": "2026-11-23", "overrides": {"max_jobs": 1, "epochs": 1, "training_instance_count": 2}}
    _upload(bucket, tiny_dataset, "tiny", manifest)
    run_id = manifests.run_id(watch.RUN_ID_PREFIX, "tiny", "version:2026-11-23")

    assert watch.watch(bucket, options, once=True) == 0
    claim = json.loads((bucket / watch.CLAIMS_FOLDER / f"{run_id}.json").read_text())
    assert claim["status"] == "succeeded", claim
    run_dir = tmp_path / "runs" / run_id
    assert (run_dir / "summary.json").exists()
    assert "rank 1/2" in (run_dir / "final" / "training-algo-2.log").read_text()
    stamp = (run_dir / "summary.json").stat().st_mtime_ns

    # The same manifest again (a duplicate event, a re-upload of the same bytes): nothing runs.
    _upload(bucket, tiny_dataset, "tiny", manifest)
    assert watch.watch(bucket, options, once=True) == 0
    assert (run_dir / "summary.json").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [run_id]


def test_bad_manifest_fails_once_with_a_clear_reason(tmp_path: Path, fast_options) -> None:
    bucket = tmp_path / "bucket"
    path = bucket / "datasets" / "tiny" / "manifest.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"version": "1", "splits": {"train": "../elsewhere"}, "colour": "blue"}')
    options = fast_options(tmp_path, tmp_path / "runs")
    run_id, summary = watch.handle_manifest(bucket, path, options)
    assert summary is None
    record = json.loads((bucket / watch.CLAIMS_FOLDER / f"{run_id}.json").read_text())
    assert record["status"] == "failed"
    assert "unknown keys ['colour']" in record["detail"] and "splits.train" in record["detail"]
    # Not retried while the bytes are the same.
    assert watch.handle_manifest(bucket, path, options) == (run_id, None)
    assert not (tmp_path / "runs").exists()


def test_overrides_map_to_local_settings(tmp_path: Path, fast_options) -> None:
    options = fast_options(tmp_path, tmp_path / "runs")
    changed = watch.apply_overrides(options, {"max_jobs": "5", "epochs": 3, "endpoint_instance_type": "ml.c5.xlarge",
                                              "quality_threshold": 0.7})
    assert (changed.max_jobs, changed.epochs, changed.quality_threshold) == (5, 3, 0.7)
    with pytest.raises(manifests.ManifestError, match=r"overrides\.max_jobs"):
        watch.apply_overrides(options, {"max_jobs": "many"})
    # A name the stack does not know is refused, as the stack's Validate refuses it (settings.build_settings).
    with pytest.raises(manifests.ManifestError, match=r"unknown overrides \['max_job'\]"):
        watch.apply_overrides(options, {"max_job": 5})


def test_local_mode_shares_the_stacks_setting_names() -> None:
    """One name per setting: the RunOptions fields that are stack settings are the overrides that apply here,
    and the README lists exactly those."""
    shared = {"max_jobs", "max_parallel_jobs", "epochs", "patience", "backbone", "pretrained", "precision",
              "quality_threshold", "training_instance_count"}
    assert shared == watch.LOCAL_OVERRIDES
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    listed = readme.split("`overrides` with a local meaning apply (", 1)[1].split(":", 1)[0]
    assert set(re.findall(r"`(\w+)`", listed)) == watch.LOCAL_OVERRIDES
    # The CLI's flags are the same names.
    from localmode import cli
    parser = argparse.ArgumentParser()
    cli.add_run_arguments(parser)
    assert set(vars(parser.parse_args([]))) >= watch.LOCAL_OVERRIDES


def test_manual_approval_stops_a_local_run_after_the_gate(tmp_path: Path, fast_options) -> None:
    """No model registry locally: ApprovalMode=manual means the model is not served until a person does."""
    options = fast_options(tmp_path, tmp_path / "runs")
    assert options.serve
    assert watch.apply_overrides(options, {"approval_mode": "manual"}).serve is False
    assert watch.apply_overrides(options, {"approval_mode": "auto"}).serve is True
    with pytest.raises(manifests.ManifestError, match=r"approval_mode: expected one of \['auto', 'manual'\]"):
        watch.apply_overrides(options, {"approval_mode": "sometimes"})
