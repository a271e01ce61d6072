"""The model artifact directory (SM_MODEL_DIR), written by rank 0 at the end of training.

SageMaker tars it into model.tar.gz; its PyTorch inference container expects this layout:

    model.pt                the classifier's state dict (backbone + head)
    metadata.json           backbone, classes, preprocessing, hyperparameters, metrics, serving variants
    model.onnx, ...         serving variants (imgclf.export, when --export)
    code/inference.py       the serving entry point (training/inference.py)
    code/imgclf/            this package
    code/requirements.txt   installed by the container before inference.py is imported (on every instance)
    code/.wheels/           with bundle_serving_wheels: every serving dependency as a wheel for the inference
                            image, which code/requirements.txt then installs with no index (imgclf.wheelhouse)
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imgclf import wheelhouse

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
TRAINING_DIR = Path(__file__).resolve().parent.parent  # training/ (SageMaker's source dir)
PACKAGE_DIR = Path(__file__).resolve().parent


def build_metadata(*, backbone: str, class_names: list[str], class_folders: list[str],
                   preprocessing: dict[str, Any], hyperparameters: dict[str, Any], metrics: dict[str, float],
                   best_epoch: int, weights: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "backbone": backbone,
        "num_classes": len(class_names),
        "class_names": class_names,
        "class_folders": class_folders,
        **preprocessing,  # input_size, resize_size, normalization
        "hyperparameters": hyperparameters,
        "metrics": metrics,
        "best_epoch": best_epoch,
        "pretrained_weights": weights,
        **(extra or {}),
    }


def write_code_dir(model_dir: Path, bundle_serving_wheels: bool = False) -> wheelhouse.ServingRequirements:
    """code/: inference.py (training/inference.py), the imgclf package, requirements.txt (and the
    wheels it installs from, when bundle_serving_wheels). Returns where requirements.txt installs from."""
    code = model_dir / "code"
    if code.exists():
        shutil.rmtree(code)
    code.mkdir(parents=True)
    inference = TRAINING_DIR / "inference.py"
    if inference.is_file():
        shutil.copy2(inference, code / "inference.py")
    else:
        logger.warning("no %s yet: code/ has no inference.py", inference)
    shutil.copytree(PACKAGE_DIR, code / "imgclf", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    requirements = TRAINING_DIR / wheelhouse.REQUIREMENTS_FILE
    if not requirements.is_file():
        logger.warning("no %s: code/ has no requirements.txt", requirements)
        return wheelhouse.ServingRequirements(source="pypi", reason=f"no {requirements}")
    return wheelhouse.write_serving_requirements(code, requirements, bundle=bundle_serving_wheels)


def write_model_artifacts(model_dir: Path, model: nn.Module, metadata: dict[str, Any], export: bool = True,
                          validation_samples: Any = None, calibration_samples: Any = None,
                          bundle_serving_wheels: bool = False) -> dict[str, Any]:
    """model.pt, the serving exports (recorded in metadata["serving"]), code/ (where its requirements install
    from: metadata["serving_requirements"]) and metadata.json."""
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, model_dir / "model.pt")
    if export:
        try:
            from imgclf.export import export_for_serving
        except ModuleNotFoundError as exc:
            if exc.name != "imgclf.export":
                raise
            logger.warning("imgclf.export is not available: skipping the serving exports")
        else:
            export_model = _plain_copy(model)
            export_for_serving(export_model, metadata, model_dir, validation_samples, calibration_samples)
    metadata["serving_requirements"] = write_code_dir(model_dir, bundle_serving_wheels).as_metadata()
    (model_dir / "metadata.json").write_text(json.dumps(metadata, indent=2))
    return metadata


def _plain_copy(model: nn.Module) -> nn.Module:
    """An fp32, contiguous-format, eval-mode copy for export (training may have made it channels_last)."""
    import copy

    clone = copy.deepcopy(model).cpu().float().eval()
    return clone.to(memory_format=torch.contiguous_format)


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
