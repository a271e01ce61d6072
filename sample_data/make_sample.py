"""Rebuild the bundled sample dataset (sample_data/fashion-mnist) from Debian's dataset-fashion-mnist.

    apt-get install dataset-fashion-mnist
    python sample_data/make_sample.py

Provenance, not part of any run: local mode reads the PNGs committed next to this file. The selection is
deterministic (the first images of each class, in file order), so rerunning reproduces the same files.
Images stay what they are in the dataset: 28x28 grayscale, which also exercises the grayscale -> RGB path.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

SOURCE = Path("/usr/share/datasets/fashion-mnist")
# The dataset's own class names, index = label; folder names follow dogImages' "001.Name" layout.
CLASS_NAMES = ("T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot")


def read_idx(images_gz: Path, labels_gz: Path) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(labels_gz, "rb") as f:
        labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
    with gzip.open(images_gz, "rb") as f:
        images = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(len(labels), 28, 28)
    return images, labels


def write_split(out: Path, split: str, images: np.ndarray, labels: np.ndarray,
                per_class: int, skip_per_class: int = 0) -> None:
    for class_id, name in enumerate(CLASS_NAMES):
        folder = out / split / f"{class_id + 1:03d}.{name}"
        folder.mkdir(parents=True, exist_ok=True)
        indices = np.flatnonzero(labels == class_id)[skip_per_class:skip_per_class + per_class]
        for index in indices:
            Image.fromarray(images[index], mode="L").save(folder / f"{name}_{index:05d}.png", optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "fashion-mnist")
    parser.add_argument("--train", type=int, default=60, help="training images per class")
    parser.add_argument("--valid", type=int, default=15, help="validation images per class")
    parser.add_argument("--test", type=int, default=15, help="test images per class")
    args = parser.parse_args()

    for split in ("train", "valid", "test"):
        shutil.rmtree(args.out / split, ignore_errors=True)
    train_images, train_labels = read_idx(SOURCE / "train-images-idx3-ubyte.gz",
                                          SOURCE / "train-labels-idx1-ubyte.gz")
    test_images, test_labels = read_idx(SOURCE / "t10k-images-idx3-ubyte.gz", SOURCE / "t10k-labels-idx1-ubyte.gz")
    write_split(args.out, "train", train_images, train_labels, args.train)
    # Validation comes from the training file too, disjoint from the images above.
    write_split(args.out, "valid", train_images, train_labels, args.valid, skip_per_class=args.train)
    write_split(args.out, "test", test_images, test_labels, args.test)


if __name__ == "__main__":
    main()
