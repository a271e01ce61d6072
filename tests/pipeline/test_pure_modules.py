"""The pure modules: imgclf.manifest, imgclf.gate (shared with local mode), and mlpipeline's settings,
source tarball, image table and notification text."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import pytest
import stack
from hypothesis import given
from hypothesis import strategies as st
from mlpipeline import images, notifications, settings, sourcedir

from imgclf import gate, manifest

SAGEMAKER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")


# --- manifest ---------------------------------------------------------------------------------------


def test_minimal_manifest_gets_the_standard_splits() -> None:
    parsed = manifest.parse_manifest(b"", "dogImages")
    assert parsed.splits == {"train": "train", "valid": "valid", "test": "test"} and parsed.version is None
    full = manifest.parse_manifest(
        json.dumps({"version": 3, "splits": {"valid": "val/"}, "overrides": {"epochs": 2}}), "dogImages"
    )
    assert full.version == "3" and full.splits["valid"] == "val" and full.overrides == {"epochs": 2}


def test_manifest_errors_list_every_problem() -> None:
    with pytest.raises(manifest.ManifestError) as error:
        manifest.parse_manifest(json.dumps({"schema_version": 2, "splits": {"extra": "x"}, "overrides": []}), "d")
    text = str(error.value)
    assert "schema_version must be 1" in text and "unknown split 'extra'" in text and "overrides must be" in text
    with pytest.raises(manifest.ManifestError, match="JSON object"):
        manifest.parse_manifest(b"[1, 2]", "d")


def test_dataset_from_key() -> None:
    assert manifest.dataset_from_key("datasets/dogImages/manifest.json") == "dogImages"
    for key in ("datasets/manifest.json", "datasets/a/b/manifest.json", "other/a/manifest.json"):
        with pytest.raises(manifest.ManifestError, match="not a dataset manifest"):
            manifest.dataset_from_key(key)


def test_version_token_prefers_the_manifest_version() -> None:
    with_version = manifest.parse_manifest(b'{"version": "2026-11"}', "d")
    assert manifest.version_token(with_version, '"etag"') == "version:2026-11"
    without = manifest.parse_manifest(b"{}", "d")
    assert manifest.version_token(without, '"abc"') == "etag:abc"
    with pytest.raises(manifest.ManifestError, match='add "version"'):
        manifest.version_token(without, None)


@given(
    dataset=st.text(min_size=1, max_size=80),
    token=st.text(max_size=40),
    prefix=st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True),
)
def test_run_id_is_deterministic_and_a_valid_tuning_job_name(dataset: str, token: str, prefix: str) -> None:
    run = manifest.run_id(prefix, dataset, token)
    assert run == manifest.run_id(prefix, dataset, token)
    assert len(run) <= manifest.TUNING_JOB_NAME_MAX and SAGEMAKER_NAME.match(run) and run.startswith(prefix + "-")
    final = manifest.training_job_name(run)
    assert len(final) <= manifest.TRAINING_JOB_NAME_MAX and SAGEMAKER_NAME.match(final)


def test_run_id_differs_per_version_and_dataset() -> None:
    ids = {manifest.run_id("imgclf", d, t) for d in ("dogImages", "cats") for t in ("version:1", "version:2")}
    assert len(ids) == 4
    with pytest.raises(manifest.ManifestError, match="resource prefix"):
        manifest.run_id("Bad-Prefix", "d", "t")


# --- gate ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accuracy", "threshold", "live", "passed"),
    [
        (0.80, 0.70, None, True),
        (0.69, 0.70, None, False),
        (0.80, 0.70, 0.85, False),
        (0.85, 0.70, 0.85, True),
        (None, 0.70, None, False),
    ],
)
def test_gate_decisions(accuracy: float | None, threshold: float, live: float | None, passed: bool) -> None:
    assert gate.decide(accuracy, threshold, live).passed is passed


def test_gate_rejects_impossible_numbers_and_reads_metrics_and_tags() -> None:
    with pytest.raises(ValueError, match="fraction"):
        gate.decide(93.0, 0.7)  # a percentage where a fraction belongs
    assert (
        gate.accuracy_from_final_metrics(
            [{"MetricName": "train loss", "Value": 1.0}, {"MetricName": "test accuracy", "Value": 0.8}]
        )
        == 0.8
    )
    assert gate.accuracy_from_final_metrics([]) is None
    assert gate.accuracy_from_tags([gate.accuracy_tag(0.75)]) == 0.75
    assert gate.accuracy_from_tags([{"Key": gate.LIVE_ACCURACY_TAG, "Value": "garbage"}]) is None


# --- settings -------------------------------------------------------------------------------------------


def _defaults() -> dict[str, str]:
    return json.loads((stack.REPO / "events" / "validate.json").read_text())["defaults"]


def test_settings_coerce_the_state_machine_strings() -> None:
    parsed = settings.build_settings(_defaults())
    assert parsed.max_jobs == 8 and parsed.lr_min == 0.001 and parsed.use_spot_instances is False
    assert parsed.batch_sizes == ["32", "64", "128", "256", "512"]
    overridden = settings.build_settings(
        _defaults(), {"epochs": 10, "use_spot_instances": True, "batch_sizes": [16, 32]}
    )
    assert (overridden.epochs, overridden.use_spot_instances, overridden.batch_sizes) == (10, True, ["16", "32"])


def test_settings_report_all_problems() -> None:
    with pytest.raises(settings.SettingsError) as error:
        settings.build_settings(_defaults(), {"epochs": "ten", "quality_threshold": 2, "nope": 1})
    text = str(error.value)
    assert "override epochs='ten'" in text and "unknown overrides ['nope']" in text
    with pytest.raises(settings.SettingsError, match="lr_min < lr_max"):
        settings.build_settings(_defaults(), {"lr_min": 0.5, "lr_max": 0.1})
    with pytest.raises(settings.SettingsError, match="max_parallel_jobs"):
        settings.build_settings(_defaults(), {"max_jobs": 2, "max_parallel_jobs": 3})
    # A backbone train.py cannot build is refused before any job bills (contract.BACKBONE_NAMES).
    with pytest.raises(settings.SettingsError, match=r"backbone must be one of \['resnet18'"):
        settings.build_settings(_defaults(), {"backbone": "resnet19"})
    # a JSON null is named, not a KeyError later
    with pytest.raises(settings.SettingsError, match="override epochs is null"):
        settings.build_settings(_defaults(), {"epochs": None})


# --- training source tarball ----------------------------------------------------------------------------


def _source(tmp_path: Path) -> Path:
    (tmp_path / "imgclf").mkdir()
    (tmp_path / "train.py").write_text("print('train')\n")
    (tmp_path / "requirements.txt").write_text("numpy\n")
    (tmp_path / "imgclf" / "__init__.py").write_text("")
    (tmp_path / "imgclf" / "__pycache__").mkdir()
    (tmp_path / "imgclf" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (tmp_path / "notes.md").write_text("not shipped\n")
    return tmp_path


def test_sourcedir_tarball_is_deterministic_and_content_addressed(tmp_path: Path) -> None:
    source = _source(tmp_path)
    first = sourcedir.build_sourcedir_tarball(source)
    (source / "train.py").touch()  # a new mtime changes nothing
    assert sourcedir.build_sourcedir_tarball(source) == first
    assert sourcedir.sourcedir_key(first) == f"code/sourcedir-{hashlib.sha256(first).hexdigest()}.tar.gz"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(first))) as tar:
        assert tar.getnames() == ["imgclf/__init__.py", "requirements.txt", "train.py"]
    (source / "train.py").write_text("print('changed')\n")
    assert sourcedir.build_sourcedir_tarball(source) != first


def test_sourcedir_requires_train_py(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"train\.py"):
        sourcedir.build_sourcedir_tarball(tmp_path)


def test_the_real_training_source_packs() -> None:
    tarball = sourcedir.build_sourcedir_tarball(stack.REPO / "training")
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(tarball))) as tar:
        names = tar.getnames()
    assert {"train.py", "inference.py", "requirements.txt", "imgclf/contract.py"} <= set(names)


# --- images, notifications ----------------------------------------------------------------------------


def test_image_uris_come_from_the_generated_table() -> None:
    assert images.pytorch_image_uri("training", "2.6", "py312", "ml.g4dn.xlarge", "us-east-1") == (
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.6-gpu-py312"
    )
    assert images.pytorch_image_uri("inference", "2.6", "py312", "ml.m5.large", "cn-north-1").endswith(
        ".amazonaws.com.cn/pytorch-inference:2.6-cpu-py312"
    )
    assert images.debugger_image_uri("us-east-1") == (
        "503895931360.dkr.ecr.us-east-1.amazonaws.com/sagemaker-debugger-rules:latest"
    )
    with pytest.raises(images.ImageNotFound, match="known"):
        images.pytorch_image_uri("training", "1.0", "py36", "ml.m5.large", "us-east-1")
    with pytest.raises(ValueError, match="instance type"):
        images.processor_for("m5.large")


def test_notification_text() -> None:
    subject, body = notifications.compose(
        "failed",
        {
            "run": {"dataset": "dogImages", "run_id": "imgclf-dogimages-1"},
            "error": {"Error": "SageMakerJobFailed", "Cause": json.dumps({"errorMessage": "tuning job x failed: oom"})},
            "cleanup": {"actions": [{"action": "stop_tuning_job", "name": "x"}]},
        },
    )
    assert subject == "[imgclf] failed: dogImages"
    assert "tuning job x failed: oom" in body and "stop_tuning_job" in body


def test_lambda_code_imports_neither_torch_nor_numpy() -> None:
    """What the Lambdas load (every handler, mlpipeline, imgclf's pure modules) stays light: a fresh
    interpreter (torch is installed, so importing it by accident would succeed) imports all of it and
    neither torch, numpy nor PIL ends up loaded."""
    import subprocess
    import sys

    handlers = "; ".join(
        f"import functions.{f}.app"
        # ReportFunction packages matplotlib (and numpy) on its own (functions/report/requirements.txt)
        for f in stack.FUNCTIONS.values() if f != "report")
    code = ("import sys; " + handlers +
            "; import mlpipeline.training_requests, mlpipeline.deployment_requests, mlpipeline.runs; "
            "import imgclf.manifest, imgclf.gate; "
            "heavy = sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules); "
            "assert not heavy, heavy; print('light')")
    # the functions' environment (template.yaml): a handler reads it at import
    env = {"PYTHONPATH": f"{stack.LAYER}:{stack.REPO / 'training'}", "PATH": "/usr/bin:/bin",
           **stack.lambda_environment()}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.stdout.strip() == "light", result.stderr[-2000:]
