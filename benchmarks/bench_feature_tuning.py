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
and TrainingEndTime; instance provisioning before it is not billed). The start-up overhead per job is an
ASSUMPTION, reported in two variants (STARTUP_VARIANTS):
- "flat": 120 s for every job of both paths (the image pull and the channel download; the README's cost
  table assumed ~3 min), which favours neither path;
- "by image": the GPU training image's download as SageMaker's own logs show it, 2 min 29 s ("Downloading
  the training image" -> "Training image download completed", huggingface/blog#96) and 2 min 51 s
  (NVIDIA-Merlin/Transformers4Rec#794), so 150 s, plus 10 s for the toolkit's `pip install -r
  requirements.txt`: 160 s for (a)'s trials and the extraction job; a cached trial pulls the CPU image,
  6,200 MB against the GPU image's 21,500 MB by AWS's build size checks (aws/deep-learning-containers,
  pytorch/training/buildspec-2-6-sm.yml, image_size_baseline): 150 s x 6,200 / 21,500 + 10 s = 53 s.
Prices: us-east-1 SageMaker training on-demand, https://aws.amazon.com/sagemaker/pricing/ (the README's
cost table uses the same figures).

Every run saves its raw measurements (each job's wall time and objective, the final accuracies) to
benchmarks/bench_feature_tuning.measured.json (--save), and the report is computed from that file;
`--report FILE` prints the report of a saved run without training anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imgclf import contract

REPO = Path(__file__).resolve().parents[1]
TRAIN_PY = REPO / "training" / "train.py"

# Start-up overhead per job, in seconds, by variant (the stated assumptions above): (GPU image, CPU image).
STARTUP_VARIANTS: dict[str, dict[str, float]] = {
    "flat": {"gpu": 120.0, "cpu": 120.0},
    "by image": {"gpu": 160.0, "cpu": 53.0},
}
DEFAULT_SAVE = Path(__file__).with_name("bench_feature_tuning.measured.json")
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


def billable(seconds: float, instance: str, variant: str) -> float:
    device = "gpu" if instance.startswith(("ml.g", "ml.p")) else "cpu"
    return seconds + STARTUP_VARIANTS[variant][device]


def cost(seconds: float, instance: str, variant: str) -> float:
    return billable(seconds, instance, variant) / 3600 * PRICE_PER_HOUR[instance]


def report(measured: dict) -> None:
    """The table of a saved run, for every start-up variant (computed from the raw measurements only)."""
    trials_per_tuning = measured["trials_per_tuning"]
    extraction_seconds = measured["extraction_seconds"]
    print(f"data {measured['data_dir']}, backbone {measured['backbone']}, measured {measured['measured_at']} on "
          f"{measured['machine']}; prices {PRICE_PER_HOUR}")
    for variant, startup in STARTUP_VARIANTS.items():
        rows = {}
        for name, trials, instance in (("(a) today", measured["today"], TODAY_TRIAL_INSTANCE),
                                       ("(b) cached", measured["cached"], CACHED_TRIAL_INSTANCE)):
            compute = sum(t["seconds"] for t in trials) / len(trials)
            best = min(trials, key=lambda t: t["objective"])
            per_tuning = trials_per_tuning * cost(compute, instance, variant)
            if name == "(b) cached":
                per_tuning += cost(extraction_seconds, EXTRACTION_INSTANCE, variant)
            choice = f"{best['lr']},{best['batch_size']}"
            rows[name] = {"compute": compute, "billable": billable(compute, instance, variant),
                          "cost": cost(compute, instance, variant), "per_tuning": per_tuning, "best": choice,
                          "accuracy": measured["final_accuracy"][choice], "instance": instance}
        print(f"\nstart-up variant {variant!r}: {startup['gpu']:.0f} s per GPU-image job, {startup['cpu']:.0f} s per "
              "CPU-image job (billed)")
        print(f"{'path':12} {'instance':15} {'trial compute s':>15} {'billable s':>10} {'$/trial':>9} "
              f"{'$/tuning':>9} {'best lr,batch':>14} {'final test acc':>14}")
        for name, row in rows.items():
            print(f"{name:12} {row['instance']:15} {row['compute']:15.1f} {row['billable']:10.1f} "
                  f"{row['cost']:9.5f} {row['per_tuning']:9.4f} {row['best']:>14} {row['accuracy']:14.4f}")
        a, b = rows["(a) today"], rows["(b) cached"]
        print(f"(b) extraction job once per feature set: {extraction_seconds:.1f} s compute on "
              f"{EXTRACTION_INSTANCE}, ${cost(extraction_seconds, EXTRACTION_INSTANCE, variant):.5f}; included in "
              f"(b)'s $/tuning ({trials_per_tuning} trials)")
        print(f"ratio (a)/(b): trial compute {a['compute'] / b['compute']:.1f}x, "
              f"billable {a['billable'] / b['billable']:.2f}x, cost per trial {a['cost'] / b['cost']:.1f}x, "
              f"cost per tuning {a['per_tuning'] / b['per_tuning']:.1f}x; "
              f"final test accuracy {100 * (b['accuracy'] - a['accuracy']):+.1f} points")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO / "sample_data" / "fashion-mnist")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--tuning-epochs", type=int, default=3)
    parser.add_argument("--final-epochs", type=int, default=5)
    parser.add_argument("--trials", type=int, default=8, help="trials per tuning job, for the per-run cost "
                        "(the pipeline's MaxTuningJobs default)")
    parser.add_argument("--save", type=Path, default=DEFAULT_SAVE, help="where the raw measurements go")
    parser.add_argument("--report", type=Path, default=None, help="only print the report of a saved run")
    options = parser.parse_args()
    if options.report is not None:
        report(json.loads(options.report.read_text()))
        return
    common = ["--backbone", options.backbone, "--no-export", "--profile-steps", "0", "--patience", "0"]
    work = Path(tempfile.mkdtemp(prefix="bench-features-"))
    data = ["--data-dir", str(options.data_dir)]

    print(f"data {options.data_dir}, backbone {options.backbone}, {options.tuning_epochs} tuning epochs, "
          f"{len(CANDIDATES)} candidates, final {options.final_epochs} epochs; work dir {work}")
    today: list[dict] = []
    for lr, batch in CANDIDATES:
        seconds, out = run([*data, *common, "--epochs", str(options.tuning_epochs), "--lr", lr,
                            "--batch-size", batch, "--model-dir", str(work / "a-model"),
                            "--output-data-dir", str(work / "a-out")])
        today.append({"lr": lr, "batch_size": batch, "seconds": round(seconds, 2),
                      "objective": last(contract.OBJECTIVE_METRIC_NAME, out)})
        print(f"  (a) trial lr={lr} batch={batch}: {seconds:.1f} s, objective {today[-1]['objective']:.4f}")

    feature_set = work / "feature-set"
    extraction_seconds, _ = run([*data, *common, f"--{contract.EXTRACT_FEATURES_HYPERPARAMETER}",
                                 "--feature-cache-dir", str(feature_set), "--model-dir", str(work / "x-model"),
                                 "--output-data-dir", str(work / "x-out")])
    print(f"  (b) extraction job: {extraction_seconds:.1f} s")
    cached: list[dict] = []
    for lr, batch in CANDIDATES:
        seconds, out = run(["--features-dir", str(feature_set), *common, "--epochs", str(options.tuning_epochs),
                            "--lr", lr, "--batch-size", batch, "--model-dir", str(work / "b-model"),
                            "--output-data-dir", str(work / "b-out")])
        cached.append({"lr": lr, "batch_size": batch, "seconds": round(seconds, 2),
                       "objective": last(contract.OBJECTIVE_METRIC_NAME, out)})
        print(f"  (b) trial lr={lr} batch={batch}: {seconds:.1f} s, objective {cached[-1]['objective']:.4f}")

    finals: dict[str, float] = {}
    for trials in (today, cached):  # the final job is the same for both paths when they pick the same point
        best = min(trials, key=lambda t: t["objective"])
        choice = f"{best['lr']},{best['batch_size']}"
        if choice not in finals:
            _, out = run([*data, *common, "--epochs", str(options.final_epochs), "--lr", best["lr"],
                          "--batch-size", best["batch_size"], "--model-dir", str(work / "final-model"),
                          "--output-data-dir", str(work / "final-out")])
            finals[choice] = last(contract.TEST_ACCURACY_METRIC_NAME, out)
    measured = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()}",
                "data_dir": str(options.data_dir), "backbone": options.backbone,
                "tuning_epochs": options.tuning_epochs, "final_epochs": options.final_epochs,
                "trials_per_tuning": options.trials, "today": today, "cached": cached,
                "extraction_seconds": round(extraction_seconds, 2), "final_accuracy": finals}
    options.save.write_text(json.dumps(measured, indent=2) + "\n")
    print(f"raw measurements saved to {options.save}")
    report(measured)


if __name__ == "__main__":
    main()
