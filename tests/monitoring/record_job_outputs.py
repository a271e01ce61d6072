"""Record the report fixtures: one real final training job of this project's train.py on the bundled
fashion-mnist sample, its output-data files, metadata.json and log copied to fixtures/final-job/ (what
the AWS pipeline finds in the job's output.tar.gz and model.tar.gz, and local mode in its job folder).

Run by hand when train.py's outputs change: .venv/bin/python tests/monitoring/record_job_outputs.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "final-job"
KEPT = ("training-history.json", "evaluation.json", "debugger-report.json", "profiler-report.json")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        opt_ml = Path(tmp) / "opt" / "ml"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "TRAINING_JOB_"))}
        env.update(TRAINING_JOB_NAME="imgclf-fashion-mnist-0123abcd-final", SM_MODEL_DIR=str(opt_ml / "model"),
                   SM_OUTPUT_DIR=str(opt_ml / "output"), SM_OUTPUT_DATA_DIR=str(opt_ml / "output" / "data"),
                   SM_HOSTS='["algo-1"]', SM_CURRENT_HOST="algo-1",
                   SM_CHANNEL_TRAINING=str(REPO / "sample_data" / "fashion-mnist"), PYTHONUNBUFFERED="1")
        proc = subprocess.run([sys.executable, str(REPO / "training" / "train.py"), "--epochs", "4", "--lr", "0.01",
                               "--batch-size", "32", "--backbone", "efficientnet_lite0", "--image-size", "64",
                               "--profile-steps", "2", "--no-export"],
                              env=env, cwd=tmp, capture_output=True, text=True, timeout=900)
        if proc.returncode:
            sys.stderr.write(proc.stderr[-3000:])
            return proc.returncode
        shutil.rmtree(FIXTURES, ignore_errors=True)
        (FIXTURES / "output" / "data").mkdir(parents=True)
        (FIXTURES / "model").mkdir()
        for name in KEPT:
            shutil.copy(opt_ml / "output" / "data" / name, FIXTURES / "output" / "data" / name)
        shutil.copy(opt_ml / "model" / "metadata.json", FIXTURES / "model" / "metadata.json")
        (FIXTURES / "training.log").write_text(proc.stdout)
    print(f"recorded {FIXTURES}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
