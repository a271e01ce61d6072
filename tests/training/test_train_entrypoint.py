"""train.py as SageMaker runs it: a subprocess under the SM_* environment contract with a temporary
stand-in for /opt/ml, read back with the same regexes the tuning job uses, its TensorBoard output read
back with TensorBoard's own reader. Also: resume from a checkpoint, tuning trials sharing a checkpoint
folder, a 2-process data-parallel run, the feature cache, StopTraining on a rule, and bad data failing
clearly."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from imgclf import contract, data, models, monitoring, presets

TRAIN_PY = Path(__file__).resolve().parents[2] / "training" / "train.py"
pytestmark = pytest.mark.slow

# Small and fast: 64 px efficientnet_lite0 with its offline ImageNet weights (the offline default backbone).
FAST_ARGS = ["--backbone", "efficientnet_lite0", "--image-size", "64", "--profile-steps", "2"]
# What SageMaker sets in the container as TRAINING_JOB_NAME (a tuning trial: <tuning job>-<nnn>-<hex>).
JOB_NAME = "imgclf-t-001-0a1b2c3d"
# torch-tb-profiler's trace file name (pytorch/kineto tb_plugin/torch_tb_profiler/consts.py WORKER_PATTERN).
PROFILER_TRACE_FILE = re.compile(r"^(.*?)(\.\d+)?\.pt\.trace\.json(?:\.gz)?$")


def sagemaker_env(opt_ml: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SM_", "RANK", "WORLD_SIZE", "MASTER_", "TRAINING_JOB_"))}
    env.update({
        "TRAINING_JOB_NAME": JOB_NAME,
        "SM_MODEL_DIR": str(opt_ml / "model"),
        "SM_OUTPUT_DIR": str(opt_ml / "output"),
        "SM_OUTPUT_DATA_DIR": str(opt_ml / "output" / "data"),
        "SM_HOSTS": '["algo-1"]',
        "SM_CURRENT_HOST": "algo-1",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    (opt_ml / "output" / "data").mkdir(parents=True, exist_ok=True)
    return env


def run_train(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TRAIN_PY), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def objective(stdout: str) -> float:
    """What SageMaker's tuning job reads: the last match of the objective metric's regex."""
    return [float(m) for m in re.findall(contract.METRIC_REGEXES[contract.OBJECTIVE_METRIC_NAME], stdout)][-1]


def job_metrics(proc: subprocess.CompletedProcess) -> dict[str, list[float]]:
    """Every metric as SageMaker reads it: each MetricDefinition of the jobs (contract.metric_definitions(),
    the tuning and the training request's) applied to the job's log, stdout and stderr alike."""
    log = proc.stdout + proc.stderr
    return {d["Name"]: [float(v) for v in re.findall(d["Regex"], log)] for d in contract.metric_definitions()}


def tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def test_sagemaker_contract(tmp_path: Path, dataset_factory) -> None:
    dataset = dataset_factory(num_classes=3)
    opt_ml = tmp_path / "opt" / "ml"
    env = sagemaker_env(opt_ml, SM_CHANNEL_TRAINING=str(dataset))
    # The final job's request to bundle the serving wheels, on a job that cannot reach any index (as with
    # network isolation): the job still succeeds, and code/requirements.txt falls back to PyPI.
    (tmp_path / "no-index").mkdir()
    env = {k: v for k, v in env.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(tmp_path / "no-index"))
    # Hyperparameters exactly as SageMaker passes them, tuned values JSON-quoted.
    # fp32 so the recomputation below can be exact (auto runs bf16 features; the other tests use it).
    proc = run_train(["--lr", '"0.01"', "--batch-size", '"16"', "--epochs", "2", "--precision", "fp32", *FAST_ARGS,
                      f"--{contract.BUNDLE_SERVING_WHEELS_HYPERPARAMETER}", "true"], env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    metrics = contract.parse_metrics(proc.stdout)
    assert len(metrics["train loss"]) == 2 and len(metrics["valid loss"]) == 3  # 2 epochs + the final line
    assert len(metrics["epoch seconds"]) == 2 and metrics["images per second"][0] > 0
    final = contract.final_metrics(proc.stdout)
    model_dir = opt_ml / "model"
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert metadata["metrics"][contract.OBJECTIVE_METRIC_NAME] == pytest.approx(objective(proc.stdout), abs=1e-6)
    assert metadata["metrics"]["test accuracy"] == pytest.approx(final["test accuracy"], abs=1e-6)
    assert final["test accuracy"] > 0.9  # colours are learnable in two epochs with ImageNet features
    assert metadata["class_names"] == ["Class_0", "Class_1", "Class_2"]
    assert metadata["class_folders"][0] == "001.Class_0" and metadata["num_classes"] == 3
    assert (metadata["input_size"], metadata["resize_size"]) == (64, 73)
    assert metadata["normalization"]["mean"] == pytest.approx([127 / 255] * 3)
    assert metadata["hyperparameters"]["batch-size"] == 16 and metadata["hyperparameters"]["lr"] == 0.01
    assert metadata["best_epoch"] in (1, 2) and "serving" in metadata  # exported for serving
    assert (model_dir / "model.onnx").is_file()
    assert (model_dir / "code" / "imgclf" / "models.py").is_file()
    assert (model_dir / "code" / "requirements.txt").read_text() == (TRAIN_PY.parent / "requirements.txt").read_text()
    assert metadata["serving_requirements"]["source"] == "pypi" and not (model_dir / "code" / ".wheels").exists()
    assert "installs from PyPI instead" in proc.stderr
    assert (model_dir / "code" / "inference.py").is_file() == (TRAIN_PY.parent / "inference.py").is_file()

    # The objective is the per-sample mean cross-entropy of the saved model on the test split.
    model, _ = models.load_trained_model(model_dir)
    test = data.ImageFolderDataset(data.scan_split("test", dataset / "test").samples,
                                   presets.eval_transform_for(metadata))
    losses, correct = [], 0
    with torch.no_grad():
        for images, labels in DataLoader(test, batch_size=5):  # uneven batches: 12 = 5 + 5 + 2
            logits = model(images)
            losses.append(torch.nn.functional.cross_entropy(logits, labels, reduction="none"))
            correct += int((logits.argmax(1) == labels).sum())
    per_sample_mean = float(torch.cat(losses).mean())
    # Not the course starter's sum / number of batches (here 12 samples in batches of 16: 12x the mean).
    assert objective(proc.stdout) == pytest.approx(per_sample_mean, rel=1e-4, abs=2e-6)
    assert correct / len(test) == pytest.approx(final["test accuracy"], abs=1 / len(test) + 1e-9)

    # The prediction baseline: the statistics the inference Lambda emits (imgclf.monitoring), recomputed
    # here from the saved model's answers on the validation split, top-5 as the endpoint answers.
    valid = data.ImageFolderDataset(data.scan_split("valid", dataset / "valid").samples,
                                    presets.eval_transform_for(metadata))
    with torch.no_grad():
        answers = [row.topk(min(5, row.numel())).values.tolist()
                   for images, _ in DataLoader(valid, batch_size=7) for row in model(images).softmax(1)]
    expected = monitoring.baseline_of(monitoring.prediction_stats(a) for a in answers)
    recorded = metadata["prediction_baseline"]
    assert recorded["count"] == expected["count"] == len(valid)
    for name in (monitoring.TOP1_PROBABILITY.name, monitoring.PREDICTION_ENTROPY.name):
        assert recorded[name] == pytest.approx(expected[name], abs=1e-4)
    assert final[contract.BASELINE_TOP1_MEAN_METRIC_NAME] == pytest.approx(
        recorded[monitoring.TOP1_PROBABILITY.name]["mean"], abs=1e-6)
    assert final[contract.BASELINE_COUNT_METRIC_NAME] == len(valid)

    out = opt_ml / "output" / "data"
    history = json.loads((out / "training-history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    expected_keys = {"train_loss", "valid_loss", "test_loss", "test_accuracy", "lr", "epoch_seconds"}
    assert expected_keys <= set(history["epochs"][0])
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert sum(map(sum, evaluation["confusion_matrix"])) == 12 and len(evaluation["per_class_accuracy"]) == 3
    report = json.loads((out / "debugger-report.json").read_text())
    assert {r["rule"] for r in report["rules"]} == {"loss_not_decreasing", "overfit", "overtraining",
                                                    "poor_weight_initialization"}
    assert all(r["status"] in ("NoIssuesFound", "IssuesFound", "Error") for r in report["rules"])
    # Each rule's result is a training metric: its line after every epoch and after the final evaluation,
    # read by the job's own regex; the last value is the report's status (1 = IssuesFound).
    read = job_metrics(proc)
    for rule in report["rules"]:
        values = read[contract.rule_metric_name(rule["sagemaker_rule"])]
        assert len(values) == 3 and set(values) <= {0.0, 1.0}, (rule, values)
        assert values[-1] == contract.RULE_METRIC_VALUES[rule["status"]]
    assert read[contract.OBJECTIVE_METRIC_NAME][-1] == pytest.approx(objective(proc.stdout))
    profile = json.loads((out / "profiler-report.json").read_text())
    assert profile["top_operators"] and profile["step_time"]["steps"] == 6
    assert (out / "profiler-report.html").is_file()

    # TensorBoard: <SM_OUTPUT_DIR>/tensorboard (TensorBoardOutputConfig.LocalPath) holds one run, named after
    # the job, with the per-epoch learning curves and the profiler trace, as the profiler plugin lists runs.
    tensorboard = opt_ml / "output" / contract.TENSORBOARD_FOLDER
    assert Path(profile["tensorboard_dir"]) == tensorboard
    trace = tensorboard / profile["trace_files"][0]
    assert trace.parent == tensorboard / JOB_NAME and PROFILER_TRACE_FILE.match(trace.name)
    assert json.loads(trace.read_text())["traceEvents"]
    curves = tensorboard_scalars(tensorboard / JOB_NAME)
    loss_metrics = {"train": "train loss", "valid": "valid loss", "test": contract.OBJECTIVE_METRIC_NAME}
    for split, loss_metric in loss_metrics.items():
        assert [step for step, _ in curves[f"loss/{split}"]] == [1, 2]
        assert [v for _, v in curves[f"loss/{split}"]] == pytest.approx(read[loss_metric][:2], abs=1e-5)
        assert [v for _, v in curves[f"accuracy/{split}"]] == pytest.approx(
            [e[f"{split}_accuracy"] for e in history["epochs"]], abs=1e-6)
    assert [v for _, v in curves["rules/Overfit"]] == read["rule Overfit"][:2]
    # A checkpoint every epoch in the stand-in for /opt/ml/checkpoints, in this job's own folder.
    assert (opt_ml / "checkpoints" / "jobs" / JOB_NAME / "checkpoint.pt").is_file()


def test_resume_from_checkpoint(tmp_path: Path, dataset_factory) -> None:
    dataset = dataset_factory()
    opt_ml = tmp_path / "opt" / "ml"
    env = sagemaker_env(opt_ml, SM_CHANNEL_TRAINING=str(dataset))
    args = ["--epochs", "1", "--feature-cache", "--no-export", "--patience", "0", *FAST_ARGS]
    first = run_train(args, env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(contract.parse_metrics(first.stdout)["train loss"]) == 1
    # A restarted (e.g. spot) job with more epochs resumes after epoch 1 instead of starting over.
    second = run_train([*args[:1], "2", *args[2:]], env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed after epoch 1 of 2" in second.stderr
    assert "feature cache hit" in second.stderr
    assert len(contract.parse_metrics(second.stdout)["train loss"]) == 1  # only epoch 2 ran
    history = json.loads((opt_ml / "output" / "data" / "training-history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    assert history["epochs"][0]["train_loss"] == pytest.approx(contract.parse_metrics(first.stdout)["train loss"][0],
                                                               abs=1e-6)
    # The checkpoint of another run is refused, clearly, rather than silently mixed in.
    other = run_train([*args, "--lr", "0.05"], env, cwd=tmp_path)
    assert other.returncode == 2
    assert "belongs to a different run (lr: checkpoint 0.001 vs now 0.05)" in other.stderr


def test_tuning_trials_sharing_a_checkpoint_folder_never_resume_each_other(tmp_path: Path, dataset_factory) -> None:
    """A tuning job gives every trial the same CheckpointConfig, so SageMaker copies the S3 prefix, with the
    checkpoints of earlier trials, into each trial's /opt/ml/checkpoints. Trial 2, with the very same
    hyperparameters (its fingerprint matches), must start fresh; trial 1 restarted (managed spot keeps the
    job and its TRAINING_JOB_NAME) must resume."""
    dataset = dataset_factory()
    opt_ml = tmp_path / "opt" / "ml"  # one /opt/ml/checkpoints for every trial: the synced, shared prefix
    args = ["--feature-cache", "--no-export", "--patience", "0", *FAST_ARGS]
    trial = {n: sagemaker_env(opt_ml, SM_CHANNEL_TRAINING=str(dataset), TRAINING_JOB_NAME=f"imgclf-t-00{n}-0a1b2c3d")
             for n in (1, 2)}
    first = run_train(["--epochs", "1", *args], trial[1], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_train(["--epochs", "2", *args], trial[2], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed after epoch" not in second.stderr
    assert len(contract.parse_metrics(second.stdout)["train loss"]) == 2  # both epochs ran
    assert "feature cache hit" in second.stderr  # what is shared on purpose still is
    jobs = opt_ml / "checkpoints" / "jobs"
    assert sorted(p.name for p in jobs.iterdir()) == ["imgclf-t-001-0a1b2c3d", "imgclf-t-002-0a1b2c3d"]
    assert torch.load(jobs / "imgclf-t-001-0a1b2c3d" / "checkpoint.pt", weights_only=False)["epochs_done"] == 1
    restarted = run_train(["--epochs", "2", *args], trial[1], cwd=tmp_path)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert "resumed after epoch 1 of 2" in restarted.stderr
    assert len(contract.parse_metrics(restarted.stdout)["train loss"]) == 1  # only epoch 2 ran


def test_feature_cache_is_shared_and_stop_on_rule(tmp_path: Path, dataset_factory) -> None:
    # valid colours rotated by one class: validation loss far above training loss -> Overfit fires.
    dataset = dataset_factory(swap_valid=True)
    cache = tmp_path / "cache"
    env = sagemaker_env(tmp_path / "opt" / "ml")
    base = ["--data-dir", str(dataset), "--feature-cache", "--feature-cache-dir", str(cache), "--no-export",
            "--epochs", "4", "--lr", "0.01", *FAST_ARGS]
    quiet = run_train(base, env, cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stderr.count("feature cache miss") == 3 and len(list(cache.iterdir())) == 3
    assert "Debugger rule Overfit: 1 (IssuesFound)" in quiet.stdout  # a metric line, on stdout
    stopped = run_train([*base, "--stop-on-rule", "overfit", "--checkpoint-dir", str(tmp_path / "ck")], env,
                        cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert stopped.stderr.count("feature cache hit") == 3  # a second trial pays nothing for features
    assert "StopTraining: rule Overfit fired after epoch 1" in stopped.stderr
    assert len(contract.parse_metrics(stopped.stdout)["train loss"]) == 1
    report = json.loads((tmp_path / "opt/ml/output/data/debugger-report.json").read_text())
    assert report["stopped_training"]["rule"] == "Overfit"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_data_parallel(tmp_path: Path, dataset_factory) -> None:
    dataset = dataset_factory(per_class={"train": 11, "valid": 5, "test": 5})  # odd sizes: no sample twice
    port = str(_free_port())
    procs = []
    for host in ("algo-1", "algo-2"):
        opt_ml = tmp_path / host / "opt" / "ml"
        env = sagemaker_env(opt_ml, SM_CHANNEL_TRAINING=str(dataset), SM_HOSTS='["algo-1","algo-2"]',
                            SM_CURRENT_HOST=host, MASTER_ADDR="127.0.0.1", MASTER_PORT=port, OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, str(TRAIN_PY), "--epochs", "2", "--batch-size", "8",
                                       "--lr", "0.01", "--no-export", *FAST_ARGS], env=env, cwd=tmp_path,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    rank0_out, rank0_err = outputs[0]
    assert "sagemaker rank 0/2" in rank0_err and "sagemaker rank 1/2" in outputs[1][1]
    # Metrics are all-reduced: every line counts every sample of the split exactly once.
    # DistributedSampler pads the train split to a multiple of the world size (33 -> 34); eval splits are exact.
    assert re.findall(r"Train set: .*\((\d+)/(\d+)\)", rank0_out)[0][1] == "34"
    assert re.findall(r"Test set: .*\((\d+)/(\d+)\)", rank0_out)[-1][1] == "15"
    assert outputs[1][0].count("Test set:") == 0  # only rank 0 prints metrics
    assert (tmp_path / "algo-1/opt/ml/model/model.pt").is_file()
    assert not (tmp_path / "algo-2/opt/ml/model/model.pt").exists()  # only rank 0 writes artifacts


def test_bad_data_fails_at_once_with_a_clear_message(tmp_path: Path, dataset_factory) -> None:
    dataset = dataset_factory()
    (dataset / "test" / "002.Class_1").rename(dataset / "test" / "002.Other")
    opt_ml = tmp_path / "opt" / "ml"
    proc = run_train(["--epochs", "1", *FAST_ARGS], sagemaker_env(opt_ml, SM_CHANNEL_TRAINING=str(dataset)),
                     cwd=tmp_path)
    assert proc.returncode == 2
    assert "class folders differ between splits" in proc.stderr and "002.Other" in proc.stderr
    assert "class folders differ" in (opt_ml / "output" / "failure").read_text()
    assert not (opt_ml / "model" / "model.pt").exists()
