"""One local pipeline run: validate -> tune -> train the best -> gate -> deploy -> invoke -> report.

The same steps as the stack's state machine, on this machine: a thin orchestration over training/
(the entry point, run as SageMaker runs it), the serving server and functions/inference. Every run has a
folder under the runs directory named by its run id; a rerun with the same id resumes there (finished
tuning trials are kept in the Optuna SQLite study; a finished final training is not repeated).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from imgclf import contract, gate
from localmode import endpoint as local_endpoint
from localmode import lambda_bridge, report, tuning
from localmode.training_job import TrainingJob, TrainingJobResult, run_training_job

log = logging.getLogger("localmode")

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DATA = REPO_ROOT / "sample_data" / "fashion-mnist"
SPLITS = ("train", "valid", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass
class RunOptions:
    data_dir: Path = SAMPLE_DATA
    runs_dir: Path = REPO_ROOT / "runs"
    run_id: str | None = None  # default: derived from the data and the settings below
    # tuning
    max_jobs: int = 8  # trials in all
    max_parallel_jobs: int = 2  # trials at once
    tuning_epochs: int = 6
    # the best model's training
    epochs: int = 10
    patience: int = 3
    training_instance_count: int = 1  # processes, data-parallel like instances
    final_feature_cache: bool = True
    # model
    backbone: str = "efficientnet_lite0"
    pretrained: str = "imagenet"
    image_size: int = 224
    precision: str = "auto"
    # gate and endpoint
    # The bundled sample reaches ~0.8 (README); a model under this is not worth serving.
    quality_threshold: float = 0.6
    serve: bool = True
    endpoint_name: str = "image-classifier"
    port: int = 8080
    workers: int = 2
    samples: int = 6
    seed: int = 0

    def static_hyperparameters(self, epochs: int) -> dict[str, str | int]:
        return {"epochs": epochs, "patience": self.patience, "backbone": self.backbone,
                "pretrained": self.pretrained, "image-size": self.image_size,
                "precision": self.precision, "seed": self.seed}


@dataclass
class RunSummary:
    run_id: str
    run_dir: str
    best_hyperparameters: dict[str, str]
    best_objective: float
    metrics: dict[str, float]
    gate: dict[str, Any]
    model_dir: str
    report: str
    endpoint: dict[str, Any] | None = None
    predictions: list[dict[str, Any]] = field(default_factory=list)
    smoke_test: dict[str, Any] | None = None


class SmokeTestFailed(RuntimeError):
    """The new local endpoint did not answer the model's smoke sample as recorded."""


def dataset_fingerprint(data_dir: Path) -> str:
    """A short hash of the dataset's file names and sizes: same data, same run id, so a rerun resumes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(data_dir)}\0{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:10]


def default_run_id(options: RunOptions) -> str:
    settings = json.dumps([options.backbone, options.pretrained, options.image_size, options.tuning_epochs,
                           options.epochs, options.training_instance_count, options.final_feature_cache, options.seed])
    digest = hashlib.sha256((dataset_fingerprint(options.data_dir) + settings).encode()).hexdigest()[:10]
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in options.data_dir.resolve().name)
    return f"{name}-{digest}"


def check_dataset(data_dir: Path) -> None:
    """Fail before any training starts when the layout is wrong (the training entry point checks again,
    more deeply, and names the problem as well)."""
    if not data_dir.is_dir():
        raise FileNotFoundError(f"dataset folder {data_dir} does not exist")
    missing = [split for split in SPLITS if not (data_dir / split).is_dir()]
    if missing:
        raise ValueError(f"dataset {data_dir} lacks the split folder(s) {', '.join(missing)}: "
                         "expected train/ valid/ test/ each holding one folder per class")
    class_sets = {split: sorted(p.name for p in (data_dir / split).iterdir() if p.is_dir()) for split in SPLITS}
    if not class_sets["train"]:
        raise ValueError(f"{data_dir / 'train'} has no class folders")
    for split in SPLITS[1:]:
        if class_sets[split] != class_sets["train"]:
            differing = sorted(set(class_sets[split]) ^ set(class_sets["train"]))
            raise ValueError(f"the classes of {split}/ differ from train/: {', '.join(differing[:10])}")


def sample_images(data_dir: Path, count: int) -> list[Path]:
    """A few test images, one per class in turn, to show the endpoint answering."""
    per_class = [sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                 for folder in sorted((data_dir / "test").iterdir()) if folder.is_dir()]
    chosen: list[Path] = []
    for index in range(count):
        images = per_class[index % len(per_class)] if per_class else []
        if len(images) > index // len(per_class):
            chosen.append(images[index // len(per_class)])
    return chosen


def run(options: RunOptions) -> RunSummary:
    check_dataset(options.data_dir)
    run_id = options.run_id or default_run_id(options)
    run_dir = options.runs_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("run %s in %s", run_id, run_dir)
    threads = max(1, (os.cpu_count() or 1) // max(1, options.max_parallel_jobs))

    # 1. Feature extraction, as the AWS pipeline's extraction job: train.py --extract-features-only writes
    # the feature set every trial reads (cache hits when an earlier run extracted the same data, backbone
    # and preprocessing), in the format an AWS extraction job writes to the data bucket.
    feature_set = extract_features(options, run_dir)

    # 2. Tuning (resumes from the SQLite study of an interrupted run): head-only trials on the feature set.
    study = tuning.open_study(run_dir / "tuning.db", study_name=run_id, seed=options.seed)
    done = tuning.finished_trial_count(study)
    with tqdm(total=options.max_jobs, initial=min(done, options.max_jobs), desc="tuning trials", unit="trial") as bar:
        def on_trial_done(trial: Any) -> None:
            bar.update(1)
            value = "pruned" if trial.value is None else f"{trial.value:.4f}"
            bar.set_postfix_str(f"#{trial.number} {trial.params} -> {value}")

        result = tuning.tune(
            study=study, trials_dir=run_dir / "trials", data_dir=options.data_dir,
            static_hyperparameters={**options.static_hyperparameters(options.tuning_epochs),
                                    "features-dir": str(feature_set),
                                    "export": "false", "profile-steps": 0},
            n_trials=options.max_jobs, parallel=options.max_parallel_jobs, threads_per_trial=threads,
            on_trial_done=on_trial_done)
    log.info("best trial #%d: %s (%s %.4f)", result.best_trial_number, result.best_hyperparameters,
             contract.OBJECTIVE_METRIC_NAME, result.best_objective)

    # 3. The best model's training (skipped when a previous run of this id finished it).
    final = train_best(options, run_dir, result.best_hyperparameters)
    metrics = final.final_metrics

    # 4. Quality gate against the threshold and the model deployed now.
    live = read_live_model(options.runs_dir)
    decision = gate.decide(metrics.get(contract.TEST_ACCURACY_METRIC_NAME), options.quality_threshold,
                           live.get("test_accuracy") if live else None)
    summary = RunSummary(run_id=run_id, run_dir=str(run_dir), best_hyperparameters=result.best_hyperparameters,
                         best_objective=result.best_objective, metrics=metrics, gate=decision.as_dict(),
                         model_dir=str(final.job.model_dir), report=str(run_dir / "report" / "index.html"))

    # 5-6. Deploy (or replace) the local endpoint and call it through the inference Lambda's handler.
    if decision.passed and options.serve:
        started = time.monotonic()
        live_endpoint = local_endpoint.deploy(options.runs_dir, final.job.model_dir, name=options.endpoint_name,
                                              port=options.port, workers=options.workers)
        log.info("endpoint %s answers at %s (%.1f s to start)", live_endpoint.name, live_endpoint.url,
                 time.monotonic() - started)
        summary.smoke_test = check_deployment(options, live_endpoint, final.job.model_dir, live)
        write_live_model(options.runs_dir, run_id, final.job.model_dir, metrics)
        summary.endpoint = asdict(live_endpoint)
        summary.predictions = invoke_samples(live_endpoint, sample_images(options.data_dir, options.samples))

    # 7. The report a person opens instead of reading logs.
    report.write_report(run_dir / "report", summary=asdict(summary), study=result.study,
                        final_job_dir=final.job.job_dir)
    (run_dir / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
    return summary


def extract_features(options: RunOptions, run_dir: Path) -> Path:
    """The extraction job; returns the feature set folder (the trials' `features` channel)."""
    feature_set = run_dir / "feature-cache"
    job = TrainingJob(
        name="extract-features", job_dir=run_dir / "extract-features", data_dir=options.data_dir,
        hyperparameters={**options.static_hyperparameters(1), contract.EXTRACT_FEATURES_HYPERPARAMETER: "true",
                         "feature-cache-dir": str(feature_set)})
    started = time.monotonic()
    run_training_job(job)
    log.info("feature set ready in %.1f s: %s", time.monotonic() - started, feature_set)
    return feature_set


def train_best(options: RunOptions, run_dir: Path, best: dict[str, str]) -> TrainingJobResult:
    job = TrainingJob(
        name="final", job_dir=run_dir / "final", data_dir=options.data_dir,
        hyperparameters={**options.static_hyperparameters(options.epochs), **best,
                         "feature-cache": str(options.final_feature_cache).lower(),
                         "feature-cache-dir": str(run_dir / "feature-cache")},
        quoted_hyperparameters=frozenset(best), instance_count=options.training_instance_count)
    done_marker = job.job_dir / "COMPLETED"
    if done_marker.exists() and json.loads(done_marker.read_text()) == job.hyperparameters:
        log.info("the best model was already trained in %s: reusing it", job.job_dir)
        return TrainingJobResult(job=job, log_text=job.log_path.read_text())
    shutil.rmtree(job.model_dir, ignore_errors=True)
    with tqdm(total=options.epochs, desc=f"training the best model ({options.training_instance_count} process"
              f"{'es' if options.training_instance_count > 1 else ''})", unit="epoch") as bar:
        def on_line(line: str) -> None:
            if line.startswith("Epoch time:"):
                bar.update(1)
            elif line.startswith("Valid set:"):
                bar.set_postfix_str(line.split(",")[0].replace("Valid set: ", "valid "))
        result = run_training_job(job, on_line=on_line)
    done_marker.write_text(json.dumps(job.hyperparameters))
    return result


def check_deployment(options: RunOptions, live_endpoint: local_endpoint.LocalEndpoint, model_dir: Path,
                     previous: dict[str, Any] | None) -> dict[str, Any]:
    """The stack's SmokeTest state, locally: the same check (localmode.endpoint.smoke_test); on a mismatch
    the endpoint goes back to the model it served before (local mode's UpdateEndpoint) or is stopped when
    there was none, and the run fails with the evidence."""
    report = local_endpoint.smoke_test(live_endpoint, model_dir)
    log.info("%s", report.summary())
    if report.passed:
        return report.as_dict()
    previous_dir = Path(previous["model_dir"]) if previous and previous.get("model_dir") else None
    if previous_dir is not None and previous_dir.is_dir():
        local_endpoint.deploy(options.runs_dir, previous_dir, name=options.endpoint_name, port=options.port,
                              workers=options.workers)
        remedy = f"endpoint {options.endpoint_name} serves the previous model again ({previous_dir})"
    else:
        local_endpoint.stop(options.runs_dir)
        remedy = f"endpoint {options.endpoint_name} was stopped (no earlier model to go back to)"
    raise SmokeTestFailed(f"{report.summary()}; {remedy}")


def read_live_model(runs_dir: Path) -> dict[str, Any] | None:
    path = runs_dir / "live-model.json"
    return json.loads(path.read_text()) if path.exists() else None


def write_live_model(runs_dir: Path, run_id: str, model_dir: Path, metrics: dict[str, float]) -> None:
    """What the stack records as tags on the endpoint: which model is live and how good it was."""
    record = {"run_id": run_id, "model_dir": str(model_dir),
              "test_accuracy": metrics.get(contract.TEST_ACCURACY_METRIC_NAME)}
    (runs_dir / "live-model.json").write_text(json.dumps(record, indent=2))


def invoke_samples(live_endpoint: local_endpoint.LocalEndpoint, images: list[Path]) -> list[dict[str, Any]]:
    handler = lambda_bridge.load_handler(live_endpoint.name, live_endpoint.url)
    answers = []
    for image in images:
        started = time.perf_counter()
        status, body = lambda_bridge.invoke(handler, image, top_k=3)
        answers.append({"image": str(image), "true_class": image.parent.name, "status": status,
                        "latency_ms": round((time.perf_counter() - started) * 1000, 1), "answer": body})
    return answers
