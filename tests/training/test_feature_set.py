"""The pipeline's feature-extraction job and the tuning trial that reads its `features` channel, both as
SageMaker runs train.py (SM_* environment, /opt/ml stand-in); and the interchangeability of a feature set
extracted locally (fp32, the original files) with one extracted "on AWS" (bf16 autocast, a fresh copy of
the dataset as SageMaker downloads it: same bytes, new mtimes)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from imgclf import contract, features
from tests.training.test_train_entrypoint import FAST_ARGS, run_train, sagemaker_env

pytestmark = pytest.mark.slow

FEATURES_ENV = f"SM_CHANNEL_{contract.FEATURES_CHANNEL.upper()}"


def extract(dataset: Path, opt_ml: Path, cwd: Path, precision: str) -> Path:
    """The extraction job: train.py with the extract-only hyperparameter, features into /opt/ml/checkpoints
    (what the job's CheckpointConfig uploads to the data bucket). Returns the feature set folder."""
    env = sagemaker_env(opt_ml, SM_CHANNEL_TRAINING=str(dataset))
    proc = run_train([f"--{contract.EXTRACT_FEATURES_HYPERPARAMETER}", "true", "--precision", precision, *FAST_ARGS],
                     env, cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Test set:" not in proc.stdout  # extraction trains nothing and reports no objective
    feature_set = opt_ml / "checkpoints" / "feature-cache"
    manifest = json.loads((feature_set / features.FEATURE_SET_MANIFEST).read_text())
    assert set(manifest["splits"]) == {"train", "valid", "test"} and len(manifest["classes"]) == 3
    assert not (opt_ml / "model" / "model.pt").exists()
    return feature_set


def test_extraction_job_then_a_trial_on_the_features_channel(tmp_path: Path, dataset_factory) -> None:
    dataset = dataset_factory(num_classes=3)
    feature_set = extract(dataset, tmp_path / "extract" / "opt" / "ml", tmp_path, "auto")

    # A tuning trial: only the features channel (no image channel at all), tuned values JSON-quoted.
    trial_ml = tmp_path / "trial" / "opt" / "ml"
    env = sagemaker_env(trial_ml, **{FEATURES_ENV: str(feature_set)})
    proc = run_train(["--lr", '"0.01"', "--batch-size", '"32"', "--epochs", "2", "--patience", "0", *FAST_ARGS],
                     env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    regex = contract.METRIC_REGEXES[contract.OBJECTIVE_METRIC_NAME]  # the tuning job's objective regex
    objective = [float(v) for v in re.findall(regex, proc.stdout)]
    assert len(objective) == 3 and objective[-1] < 1.0  # two epochs and the final line; colours learnt
    accuracy = [float(v) for v in re.findall(contract.METRIC_REGEXES["test accuracy"], proc.stdout)]
    assert accuracy[-1] > 0.9
    assert "from the feature set" in proc.stderr
    metadata = json.loads((trial_ml / "model" / "metadata.json").read_text())
    assert metadata["class_folders"] == ["001.Class_0", "002.Class_1", "003.Class_2"]

    # Features of another backbone are refused with a clear reason, not trained on.
    other = run_train(["--epochs", "1", "--backbone", "resnet18", "--pretrained", "none", "--image-size", "64"],
                      sagemaker_env(tmp_path / "other" / "opt" / "ml", **{FEATURES_ENV: str(feature_set)}), tmp_path)
    assert other.returncode == 2 and "extracted for something else" in other.stderr
    failure = (tmp_path / "other" / "opt" / "ml" / "output" / "failure").read_text()
    assert "backbone 'efficientnet_lite0'" in failure


def test_locally_and_aws_extracted_features_are_interchangeable(tmp_path: Path, dataset_factory) -> None:
    dataset = dataset_factory(num_classes=3)
    local = extract(dataset, tmp_path / "local" / "opt" / "ml", tmp_path, "fp32")
    copy = tmp_path / "s3-download" / "dogImages"
    shutil.copytree(dataset, copy)  # new mtimes, same bytes
    aws = extract(copy, tmp_path / "aws" / "opt" / "ml", tmp_path, "bf16")
    features_by_split: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    for split in ("train", "valid", "test"):
        a = features.feature_set_description(local, split)
        b = features.feature_set_description(aws, split)
        # Same data (by content), backbone and preprocessing; only the numerics differ.
        assert {k: v for k, v in a.items() if k != "numerics"} == {k: v for k, v in b.items() if k != "numerics"}
        assert a["numerics"] != b["numerics"]
        f32 = torch.load(next(local.glob(f"*-{split}-*.pt")), weights_only=True)["features"]
        bf16 = torch.load(next(aws.glob(f"*-{split}-*.pt")), weights_only=True)["features"]
        # bf16 keeps 8 significand bits (a relative rounding error of up to 2^-9 per value), and the errors
        # of a 60-odd-layer network's activations add up: 5-10 % in norm is what bf16 autocast gives on
        # this backbone (measured: 6.8-9.2 %, cosine >= 0.992), while the direction of each feature
        # vector, which is what a linear head reads, stays put.
        assert f32.shape == bf16.shape
        relative = ((f32 - bf16).norm() / f32.norm()).item()
        cosine = torch.nn.functional.cosine_similarity(f32, bf16, dim=1)
        assert relative < 0.12 and cosine.min() > 0.98 and cosine.mean() > 0.99
        features_by_split[split] = (f32, bf16, torch.tensor(a["labels"]))
    # Interchangeable for the head: a classifier fitted on the local train features (class centroids)
    # predicts the same classes from the local and from the AWS test features.
    train, _, train_labels = features_by_split["train"]
    centroids = torch.stack([train[train_labels == c].mean(0) for c in range(3)])
    local_test, aws_test, _ = features_by_split["test"]
    assert torch.equal(torch.cdist(local_test, centroids).argmin(1), torch.cdist(aws_test, centroids).argmin(1))
