"""Command-line arguments of the training entry point, as SageMaker passes them, with the SM_* env contract.

SageMaker passes every hyperparameter as `--name value` (`--lr 0.0033 --batch-size 512 --epochs 5`);
values set by a tuning job can arrive JSON-quoted (`--batch-size "64"`); booleans arrive as text
("True"/"false"). All of that parses here. Unknown arguments (SageMaker adds some of its own, such as
`_tuning_objective_metric`) are logged and ignored.

Directories: `--model-dir` (SM_MODEL_DIR), `--output-data-dir` (SM_OUTPUT_DATA_DIR), `--data-dir`
(else the SageMaker channels, see imgclf.data), `--checkpoint-dir` (default: on SageMaker the
`checkpoints` folder beside SM_MODEL_DIR, i.e. /opt/ml/checkpoints; elsewhere none), `--tensorboard-dir`
(default: <SM_OUTPUT_DIR>/tensorboard on SageMaker, i.e. /opt/ml/output/tensorboard, the training job's
TensorBoardOutputConfig.LocalPath; elsewhere <output-data-dir>/tensorboard).

The job's identity is TRAINING_JOB_NAME, which SageMaker sets in the container (one per tuning trial):
checkpoints are kept per job (imgclf.checkpoint), and the TensorBoard run is named after it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgclf import contract
from imgclf.contract import check_job_name

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")


def unquote(value: str) -> str:
    """'"64"' -> '64' (tuning jobs JSON-quote categorical values); anything else unchanged."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return value
        return str(decoded)
    return value


def _typed(convert: Callable[[str], Any], kind: str) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        try:
            return convert(unquote(value))
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {kind}, got {value!r}") from None
    parse.__name__ = kind
    return parse


def parse_bool(value: str) -> bool:
    text = unquote(str(value)).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {value!r}")


def _positive_int(text: str) -> int:
    value = int(float(text)) if "." in text or "e" in text.lower() else int(text)
    if value <= 0:
        raise ValueError
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError
    return value


POSITIVE_INT = _typed(_positive_int, "a positive integer")
NON_NEGATIVE_INT = _typed(_non_negative_int, "a non-negative integer")
INT = _typed(int, "an integer")
POSITIVE_FLOAT = _typed(_positive_float, "a positive number")
FLOAT = _typed(float, "a number")
TEXT = _typed(str, "text")


def _add_bool(parser: argparse.ArgumentParser, name: str, default: bool, help: str) -> None:
    """--name, --name true/false (SageMaker's form) and --no-name."""
    dest = name.replace("-", "_")
    parser.add_argument(f"--{name}", dest=dest, nargs="?", const=True, default=default, type=parse_bool,
                        help=f"{help} (default: {default})")
    parser.add_argument(f"--no-{name}", dest=dest, action="store_false", help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", description="Transfer-learning image classifier training "
                                "(SageMaker entry point; runs the same anywhere).")
    hp = p.add_argument_group("hyperparameters")
    hp.add_argument("--lr", type=POSITIVE_FLOAT, default=0.001, help="Adam learning rate (default 0.001)")
    hp.add_argument("--batch-size", type=POSITIVE_INT, default=64, help="global batch size (default 64)")
    hp.add_argument("--epochs", type=POSITIVE_INT, default=5, help="maximum epochs (default 5)")
    hp.add_argument("--patience", type=NON_NEGATIVE_INT, default=3,
                    help="early stopping: epochs without a better validation loss (0 = off; default 3)")
    hp.add_argument("--min-delta", type=FLOAT, default=0.0, help="early stopping: minimum improvement")
    hp.add_argument("--seed", type=INT, default=42)
    hp.add_argument("--backbone", type=TEXT, default=contract.DEFAULT_BACKBONE, choices=contract.BACKBONE_NAMES)
    hp.add_argument("--pretrained", type=TEXT, default="imagenet",
                    help="imagenet | channel | none | a weights file path (default imagenet)")
    _add_bool(hp, "freeze-backbone", True, "train only the head; the backbone stays frozen in eval mode")
    hp.add_argument("--image-size", type=POSITIVE_INT, default=224,
                    help="input size (default 224; resize = round(size * 256 / 224))")
    perf = p.add_argument_group("speed")
    perf.add_argument("--precision", type=TEXT, default="auto", choices=PRECISIONS,
                      help="auto: bf16 autocast + channels_last where supported; fp32: full precision")
    _add_bool(perf, "feature-cache", False, "frozen backbone only: compute backbone features once per image "
              "(no random augmentation) and train the head on them")
    perf.add_argument("--feature-cache-dir", type=TEXT, default=None,
                      help="where cached features live (default <checkpoint-dir>/feature-cache, else "
                           "~/.cache/imgclf/feature-cache); shareable between concurrent trials")
    _add_bool(perf, contract.EXTRACT_FEATURES_HYPERPARAMETER, False,
              "frozen backbone only: compute the features of train, valid and test into the feature cache "
              "directory, write its manifest, and stop (the pipeline's extraction job; no training)")
    perf.add_argument("--features-dir", type=TEXT, default=None,
                      help="an extracted feature set to train the head on, without images (default: the "
                           f"SageMaker channel SM_CHANNEL_{contract.FEATURES_CHANNEL.upper()}, if set)")
    perf.add_argument("--num-workers", type=_typed(lambda s: s if s == "auto" else str(_non_negative_int(s)),
                                                   "'auto' or a non-negative integer"), default="auto")
    dbg = p.add_argument_group("debugging and profiling")
    dbg.add_argument("--stop-on-rule", type=TEXT, default="none",
                     help="stop training when one of these debugger rules fires: comma list, 'any' or 'none'")
    dbg.add_argument("--profile-steps", type=NON_NEGATIVE_INT, default=10,
                     help="torch.profiler steps to trace (0 = off; default 10)")
    dbg.add_argument("--system-monitor-interval-ms", type=POSITIVE_INT, default=500)
    out = p.add_argument_group("artifacts and directories")
    _add_bool(out, "export", True, "export ONNX/OpenVINO variants for serving (imgclf.export)")
    _add_bool(out, contract.BUNDLE_SERVING_WHEELS_HYPERPARAMETER, False,
              "download the serving dependencies' wheels for the inference image into code/.wheels/ "
              "(needs PyPI; falls back to a PyPI code/requirements.txt)")
    out.add_argument("--model-dir", type=TEXT, default=None, help="default SM_MODEL_DIR, else ./model")
    out.add_argument("--output-data-dir", type=TEXT, default=None,
                     help="default SM_OUTPUT_DATA_DIR, else ./output")
    out.add_argument("--checkpoint-dir", type=TEXT, default=None,
                     help="default /opt/ml/checkpoints on SageMaker (beside SM_MODEL_DIR), else none")
    out.add_argument("--data-dir", type=TEXT, default=None,
                     help="holding train/ valid/ test/ (default: the SageMaker channels)")
    out.add_argument("--tensorboard-dir", type=TEXT, default=None,
                     help="TensorBoard logdir: learning curves and the profiler trace in <dir>/<run>/ (default "
                          "<SM_OUTPUT_DIR>/tensorboard on SageMaker, else <output-data-dir>/tensorboard)")
    return p


@dataclass(frozen=True)
class TrainConfig:
    lr: float
    batch_size: int
    epochs: int
    patience: int
    min_delta: float
    seed: int
    backbone: str
    pretrained: str
    freeze_backbone: bool
    image_size: int
    precision: str
    feature_cache: bool
    feature_cache_dir: Path
    num_workers: str
    stop_on_rule: str
    profile_steps: int
    system_monitor_interval_ms: int
    export: bool
    model_dir: Path
    output_data_dir: Path
    checkpoint_dir: Path | None
    data_dir: Path | None
    tensorboard_dir: Path
    extract_features_only: bool = False
    features_dir: Path | None = None  # a feature set (the `features` channel): head only, no images
    job_name: str | None = None  # TRAINING_JOB_NAME: this job's checkpoint identity (imgclf.checkpoint)
    unknown_args: tuple[str, ...] = ()
    bundle_serving_wheels: bool = False

    @property
    def tensorboard_run(self) -> str:
        """The TensorBoard run (a folder of the logdir): the job's name, or "train" outside SageMaker."""
        return self.job_name or "train"

    def hyperparameters(self) -> dict[str, Any]:
        """What goes into metadata.json."""
        return {"lr": self.lr, "batch-size": self.batch_size, "epochs": self.epochs, "patience": self.patience,
                "seed": self.seed, "backbone": self.backbone, "pretrained": self.pretrained,
                "freeze-backbone": self.freeze_backbone, "image-size": self.image_size,
                "precision": self.precision, "feature-cache": self.feature_cache}


def parse_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> TrainConfig:
    env = os.environ if env is None else env
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        logger.warning("ignoring unknown arguments: %s", unknown)
    if args.feature_cache and not args.freeze_backbone:
        parser.error("--feature-cache needs a frozen backbone (features change while the backbone trains)")
    features_dir = args.features_dir or env.get(f"SM_CHANNEL_{contract.FEATURES_CHANNEL.upper()}") or None
    extract_only = getattr(args, contract.EXTRACT_FEATURES_HYPERPARAMETER.replace("-", "_"))
    if (extract_only or features_dir) and not args.freeze_backbone:
        parser.error("cached features (--extract-features-only, --features-dir or a features channel) need a "
                     "frozen backbone")
    if extract_only and features_dir:
        parser.error("--extract-features-only computes a feature set; it does not read one (--features-dir)")
    model_dir = Path(args.model_dir or env.get("SM_MODEL_DIR") or "model")
    output_data_dir = Path(args.output_data_dir or env.get("SM_OUTPUT_DATA_DIR") or "output")
    if args.checkpoint_dir:
        checkpoint_dir: Path | None = Path(args.checkpoint_dir)
    elif env.get("SM_MODEL_DIR"):
        # On SageMaker SM_MODEL_DIR is /opt/ml/model and checkpoints live in /opt/ml/checkpoints.
        checkpoint_dir = Path(env["SM_MODEL_DIR"]).parent / "checkpoints"
    else:
        checkpoint_dir = None
    job_name = env.get("TRAINING_JOB_NAME") or None
    if job_name is not None:
        try:
            check_job_name(job_name)
        except ValueError as error:
            parser.error(str(error))
    if args.tensorboard_dir:
        tensorboard_dir = Path(args.tensorboard_dir)
    elif env.get("SM_OUTPUT_DIR"):
        tensorboard_dir = Path(env["SM_OUTPUT_DIR"]) / contract.TENSORBOARD_FOLDER
    else:
        tensorboard_dir = output_data_dir / contract.TENSORBOARD_FOLDER
    if args.feature_cache_dir:
        cache_dir = Path(args.feature_cache_dir)
    elif checkpoint_dir is not None:
        cache_dir = checkpoint_dir / contract.FEATURE_CACHE_FOLDER
    else:
        cache_dir = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imgclf" / "feature-cache"
    return TrainConfig(
        lr=args.lr, batch_size=args.batch_size, epochs=args.epochs, patience=args.patience,
        min_delta=args.min_delta, seed=args.seed, backbone=args.backbone, pretrained=args.pretrained,
        freeze_backbone=args.freeze_backbone, image_size=args.image_size, precision=args.precision,
        feature_cache=args.feature_cache or bool(features_dir) or extract_only, feature_cache_dir=cache_dir,
        extract_features_only=extract_only, features_dir=Path(features_dir) if features_dir else None,
        num_workers=args.num_workers,
        stop_on_rule=args.stop_on_rule, profile_steps=args.profile_steps,
        system_monitor_interval_ms=args.system_monitor_interval_ms, export=args.export, model_dir=model_dir,
        output_data_dir=output_data_dir, checkpoint_dir=checkpoint_dir,
        data_dir=Path(args.data_dir) if args.data_dir else None, tensorboard_dir=tensorboard_dir,
        job_name=job_name, unknown_args=tuple(unknown), bundle_serving_wheels=args.bundle_serving_wheels)
