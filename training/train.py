"""Training entry point: what SageMaker runs (`python train.py --lr 0.0033 --batch-size 512 ...`) for every
tuning trial and the final training job, and what runs unchanged anywhere else (cwd anywhere):

    python training/train.py --data-dir data/dogImages --backbone efficientnet_lite0 --epochs 5

See imgclf/config.py for the arguments and the SM_* environment contract, imgclf/engine.py for the run.
Multi-process: launch with torchrun (RANK/WORLD_SIZE/...) or as a SageMaker multi-instance job
(SM_HOSTS/SM_CURRENT_HOST); MASTER_ADDR/MASTER_PORT override the master's address.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

# `python train.py` puts this file's folder (the source dir, holding imgclf/) first on sys.path, in the
# SageMaker container as anywhere else (https://docs.python.org/3/library/sys.html#sys.path); tests and
# local mode import imgclf through the editable install (pyproject package-dir). No path set-up here.
from imgclf.checkpoint import CheckpointMismatchError
from imgclf.config import parse_config
from imgclf.data import DatasetError
from imgclf.engine import run_training
from imgclf.features import FeatureSetError
from imgclf.models import PretrainedWeightsError


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = parse_config(argv)
    try:
        run_training(config)
    except (DatasetError, PretrainedWeightsError, CheckpointMismatchError, FeatureSetError) as error:
        # Problems with the inputs: one clear line, and SageMaker's failure reason file.
        logging.getLogger("train").error("%s: %s", type(error).__name__, error)
        _write_failure(str(error))
        return 2
    return 0


def _write_failure(message: str) -> None:
    """SageMaker shows /opt/ml/output/failure as the job's FailureReason."""
    import os

    output_dir = os.environ.get("SM_OUTPUT_DIR")
    if output_dir and Path(output_dir).is_dir():
        (Path(output_dir) / "failure").write_text(message[:1024])


if __name__ == "__main__":
    sys.exit(main())
