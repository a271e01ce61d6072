"""Tuning cost benchmark (run by hand): today's per-trial path against the cached-features path, measured in
one run on the same data, and priced at SageMaker's on-demand prices.

(a) today: every tuning trial runs train.py on the images, through the frozen backbone, with random
    augmentation, on the tuning instance type (default ml.g4dn.xlarge);
(b) cached: one extraction job (train.py --extract-features-only, on the training instance type) computes
    the eval-transform features of train/valid/test once; every trial then runs train.py on the `features`
    channel (--features-dir) and trains only the head, on ml.m5.large.

For each path the same small tuning (the same fixed points of the search space, in the same order) picks
the trial with the lowest objective ("average test loss", read with the tuning job's regex); the final
model is then trained as the pipeline trains it (images, augmentation, the training instance type) with
that trial's lr and batch size, and its test accuracy is printed.

    .venv/bin/python benchmarks/bench_feature_tuning.py [--data-dir sample_data/fashion-mnist]

Compute time is measured on this machine for both paths. That is not the T4 of ml.g4dn.xlarge: on a GPU
(a)'s compute would be shorter (so would the extraction's), which is why the billable time below adds the
start-up overhead separately and the README reports the figures as measured here.

Billable time: SageMaker bills a training job from TrainingStartTime to TrainingEndTime, which includes
downloading the training data and the container image, and uploading the artifacts
(https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DescribeTrainingJob.html, TrainingStartTime
and TrainingEndTime; instance provisioning before it is not billed). ASSUMPTION: that overhead is
STARTUP_OVERHEAD_SECONDS per job (the PyTorch training container image pull and the channel download; the
README's cost table assumed ~3 min, we take 2 min for both paths, which favours neither).
Prices: us-east-1 SageMaker training on-demand, https://aws.amazon.com/sagemaker/pricing/ (the README's
cost table uses the same figures).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imgclf import contract

REPO = Path(__file__).resolve().parents[1]
TRAIN_PY = REPO / "training" / "train.py"

STARTUP_OVERHEAD_SECONDS = 120.0  # the stated assumption above
PRICE_PER_HOUR = {"ml.g4dn.xlarge": 0.736, "ml.m5.large": 0.115}  # us-east-1 training, on demand
TODAY_TRIAL_INSTANCE = "ml.g4dn.xlarge"  # template.yaml TuningInstanceType's default before features
CACHED_TRIAL_INSTANCE = "ml.m5.large"
EXTRACTION_INSTANCE = "ml.g4dn.xlarge"  # TrainingInstanceType's default

# Fixed points of contract.SEARCH_SPACE (lr within its range, batch sizes among its values): both paths
# tune over exactly the same candidates, so differences in the final model come from the path alone.
CANDIDATES = (("0.003", "64"), ("0.01", "32"), ("0.03", "128"))


def run(args: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(TRAIN_PY), *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"train.py {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def last(metric: str, stdout: str) -> float:
    return [float(v) for v in re.findall(contract.METRIC_REGEXES[metric], stdout)][-1]


def billable(seconds: float) -> float:
    return seconds + STARTUP_OVERHEAD_SECONDS


def cost(seconds: float, instance: str) -> float:
    return billable(seconds) / 3600 * PRICE_PER_HOUR[instance]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO / "sample_data" / "fashion-mnist")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--tuning-epochs", type=int, default=3)
    parser.add_argument("--final-epochs", type=int, default=5)
    parser.add_argument("--trials", type=int, default=8, help="trials per tuning job, for the per-run cost "
                        "(the pipeline's MaxTuningJobs default)")
    options = parser.parse_args()
    common = ["--backbone", options.backbone, "--no-export", "--profile-steps", "0", "--patience", "0"]
    work = Path(tempfile.mkdtemp(prefix="bench-features-"))
    data = ["--data-dir", str(options.data_dir)]

    print(f"data {options.data_dir}, backbone {options.backbone}, {options.tuning_epochs} tuning epochs, "
          f"{len(CANDIDATES)} candidates, final {options.final_epochs} epochs; work dir {work}")
    today: list[tuple[float, float, tuple[str, str]]] = []
    for lr, batch in CANDIDATES:
        seconds, out = run([*data, *common, "--epochs", str(options.tuning_epochs), "--lr", lr,
                            "--batch-size", batch, "--model-dir", str(work / "a-model"),
                            "--output-data-dir", str(work / "a-out")])
        today.append((seconds, last(contract.OBJECTIVE_METRIC_NAME, out), (lr, batch)))
        print(f"  (a) trial lr={lr} batch={batch}: {seconds:.1f} s, objective {today[-1][1]:.4f}")

    feature_set = work / "feature-set"
    extraction_seconds, _ = run([*data, *common, f"--{contract.EXTRACT_FEATURES_HYPERPARAMETER}",
                                 "--feature-cache-dir", str(feature_set), "--model-dir", str(work / "x-model"),
                                 "--output-data-dir", str(work / "x-out")])
    print(f"  (b) extraction job: {extraction_seconds:.1f} s")
    cached: list[tuple[float, float, tuple[str, str]]] = []
    for lr, batch in CANDIDATES:
        seconds, out = run(["--features-dir", str(feature_set), *common, "--epochs", str(options.tuning_epochs),
                            "--lr", lr, "--batch-size", batch, "--model-dir", str(work / "b-model"),
                            "--output-data-dir", str(work / "b-out")])
        cached.append((seconds, last(contract.OBJECTIVE_METRIC_NAME, out), (lr, batch)))
        print(f"  (b) trial lr={lr} batch={batch}: {seconds:.1f} s, objective {cached[-1][1]:.4f}")

    finals: dict[tuple[str, str], float] = {}

    def final_accuracy(choice: tuple[str, str]) -> float:
        if choice not in finals:  # the final job is the same for both paths when they pick the same point
            _, out = run([*data, *common, "--epochs", str(options.final_epochs), "--lr", choice[0],
                          "--batch-size", choice[1], "--model-dir", str(work / "final-model"),
                          "--output-data-dir", str(work / "final-out")])
            finals[choice] = last(contract.TEST_ACCURACY_METRIC_NAME, out)
        return finals[choice]

    rows = {}
    for name, trials, instance in (("(a) today", today, TODAY_TRIAL_INSTANCE),
                                   ("(b) cached", cached, CACHED_TRIAL_INSTANCE)):
        trial_seconds = sum(t[0] for t in trials) / len(trials)
        best = min(trials, key=lambda t: t[1])[2]
        per_run = options.trials * cost(trial_seconds, instance)
        if trials is cached:
            per_run += cost(extraction_seconds, EXTRACTION_INSTANCE)
        rows[name] = {"compute": trial_seconds, "billable": billable(trial_seconds),
                      "cost": cost(trial_seconds, instance), "per_run": per_run, "best": best,
                      "accuracy": final_accuracy(best), "instance": instance}

    print(f"\nassumed start-up overhead per job: {STARTUP_OVERHEAD_SECONDS:.0f} s (billed); prices {PRICE_PER_HOUR}")
    print(f"{'path':12} {'instance':15} {'trial compute s':>15} {'billable s':>10} {'$/trial':>9} "
          f"{'$/tuning':>9} {'best lr,batch':>14} {'final test acc':>14}")
    for name, row in rows.items():
        print(f"{name:12} {row['instance']:15} {row['compute']:15.1f} {row['billable']:10.1f} {row['cost']:9.5f} "
              f"{row['per_run']:9.4f} {','.join(row['best']):>14} {row['accuracy']:14.4f}")
    a, b = rows["(a) today"], rows["(b) cached"]
    print(f"(b) extraction job once per dataset version: {extraction_seconds:.1f} s compute on {EXTRACTION_INSTANCE},"
          f" ${cost(extraction_seconds, EXTRACTION_INSTANCE):.5f}; included in (b)'s $/tuning "
          f"({options.trials} trials)")
    print(f"ratio (a)/(b): trial compute {a['compute'] / b['compute']:.1f}x, "
          f"billable {a['billable'] / b['billable']:.2f}x, "
          f"cost per trial {a['cost'] / b['cost']:.1f}x, cost per tuning {a['per_run'] / b['per_run']:.1f}x; "
          f"final test accuracy {100 * (b['accuracy'] - a['accuracy']):+.1f} points")


if __name__ == "__main__":
    main()
