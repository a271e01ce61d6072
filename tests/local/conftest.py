"""Local-mode tests: a tiny, learnable dataset in the dogImages layout and fast run settings."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from localmode.pipeline import RunOptions

CLASSES = ("001.Red_thing", "002.Green_thing", "003.Blue_thing")
COUNTS = {"train": 8, "valid": 4, "test": 4}


def make_dataset(root: Path, seed: int = 0) -> Path:
    """Three classes told apart by colour, with noise; PNG and JPEG mixed, some grayscale-free RGB."""
    rng = np.random.default_rng(seed)
    for split, count in COUNTS.items():
        for class_index, folder in enumerate(CLASSES):
            target = root / split / folder
            target.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 60, size=(40, 48, 3))
                pixels[..., class_index] += 180
                image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
                suffix = "png" if i % 2 else "jpg"
                image.save(target / f"{folder.split('.')[1]}_{i:02d}.{suffix}")
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tiny") / "tiny-dataset")


def _fast_options(data_dir: Path, runs_dir: Path, **changes: object) -> RunOptions:
    """The real defaults (efficientnet_lite0 with its offline ImageNet weights) made small and quick."""
    options = RunOptions(data_dir=data_dir, runs_dir=runs_dir, max_jobs=2, max_parallel_jobs=1, tuning_epochs=1,
                         epochs=1, patience=1, image_size=64, quality_threshold=0.0, port=free_port(), workers=1,
                         samples=2)
    return dataclasses.replace(options, **changes)


@pytest.fixture
def fast_options() -> Callable[..., RunOptions]:
    return _fast_options
