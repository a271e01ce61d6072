"""Small generated datasets in the dogImages layout for the training tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

COLORS = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40)]


def make_dataset(root: Path, num_classes: int = 3, per_class: dict[str, int] | None = None, size: int = 40,
                 seed: int = 0, swap_valid: bool = False) -> Path:
    """`root/{train,valid,test}/00k.Class_k/*.png`: each class a noisy colour (learnable in one epoch).
    swap_valid: the valid split's colours are rotated by one class (a crafted train/valid mismatch)."""
    per_class = per_class or {"train": 12, "valid": 4, "test": 4}
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for c in range(num_classes):
            folder = root / split / f"{c + 1:03d}.Class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            color = COLORS[((c + 1) % num_classes) if (swap_valid and split == "valid") else c]
            for i in range(count):
                pixels = np.clip(rng.normal(0, 35, (size, size, 3)) + np.array(color), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"img_{i}.png")
    return root


@pytest.fixture
def dataset_factory(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(1000))

    def factory(**kwargs) -> Path:
        return make_dataset(tmp_path / f"data{next(counter)}" / "dogImages", **kwargs)

    return factory
