"""Datasets in the ImageFolder / dogImages layout: `<split>/<class folder>/<image>`.

- Where the splits are: `--data-dir` (holding train/ valid/ test/), SageMaker's per-split channels
  SM_CHANNEL_TRAIN / SM_CHANNEL_VALID / SM_CHANNEL_TEST, or one channel SM_CHANNEL_TRAINING holding
  train/ valid/ test/ (as the dogImages archive does).
- Classes come from the folder names, sorted: "001.Affenpinscher" -> label "Affenpinscher" (a leading
  number and one separator are dropped), class id = position in the sorted folder list.
- Files that are not readable images are skipped and counted (reported per split with examples).
- Fails at once, naming the problem: a missing split, an empty class, class sets that differ between
  splits, a split with no class folders.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from imgclf.presets import load_rgb

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "valid", "test")
# Folder names accepted for each split (first match wins).
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "valid": ("valid", "validation", "val"),
    "test": ("test", "testing"),
}
SPLIT_CHANNELS: dict[str, str] = {"train": "SM_CHANNEL_TRAIN", "valid": "SM_CHANNEL_VALID",
                                  "test": "SM_CHANNEL_TEST"}
SINGLE_CHANNEL = "SM_CHANNEL_TRAINING"

_CLASS_PREFIX = re.compile(r"^\d+[._\- ]+(?=.)")


class DatasetError(ValueError):
    """The dataset's layout or content cannot be trained on; the message names the problem."""


def class_name_from_folder(folder: str) -> str:
    """'001.Affenpinscher' -> 'Affenpinscher'; a folder without a numeric prefix keeps its name."""
    return _CLASS_PREFIX.sub("", folder)


def _find_split_dir(root: Path, split: str) -> Path | None:
    for alias in SPLIT_ALIASES[split]:
        candidate = root / alias
        if candidate.is_dir():
            return candidate
    return None


def resolve_split_dirs(data_dir: str | os.PathLike[str] | None = None,
                       env: Mapping[str, str] | None = None) -> dict[str, Path]:
    """{split: directory} for train / valid / test. `data_dir` wins over the SageMaker channels."""
    env = os.environ if env is None else env
    if data_dir is not None:
        root = Path(data_dir)
        if not root.is_dir():
            raise DatasetError(f"data directory {root} does not exist")
        source = f"--data-dir {root}"
        dirs = {split: _find_split_dir(root, split) for split in SPLITS}
    elif any(env.get(SPLIT_CHANNELS[s]) for s in SPLITS):
        source = "the SageMaker channels " + "/".join(SPLIT_CHANNELS[s] for s in SPLITS)
        dirs = {split: Path(env[SPLIT_CHANNELS[split]]) if env.get(SPLIT_CHANNELS[split]) else None
                for split in SPLITS}
        if dirs["train"] is None and env.get(SINGLE_CHANNEL):  # train/ valid/ test/ in one channel
            dirs["train"] = _find_split_dir(Path(env[SINGLE_CHANNEL]), "train")
    elif env.get(SINGLE_CHANNEL):
        root = Path(env[SINGLE_CHANNEL])
        source = f"the SageMaker channel {SINGLE_CHANNEL}={root}"
        dirs = {split: _find_split_dir(root, split) for split in SPLITS}
    else:
        raise DatasetError(
            "no data: pass --data-dir (holding train/ valid/ test/) or set SageMaker's SM_CHANNEL_TRAIN/"
            "SM_CHANNEL_VALID/SM_CHANNEL_TEST or SM_CHANNEL_TRAINING")
    missing = [s for s, d in dirs.items() if d is None or not d.is_dir()]
    if missing:
        raise DatasetError(
            f"missing split(s) {missing} in {source}: expected folders "
            + ", ".join("/".join(SPLIT_ALIASES[s]) for s in missing))
    return {split: d for split, d in dirs.items() if d is not None}


@dataclass
class SplitScan:
    """One split after discovery: the readable samples and what was skipped."""

    name: str
    root: Path
    class_folders: list[str]
    samples: list[tuple[Path, int]]
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, why)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def class_counts(self) -> list[int]:
        counts = [0] * len(self.class_folders)
        for _, label in self.samples:
            counts[label] += 1
        return counts

    def fingerprint(self) -> list[tuple[str, int, int]]:
        """(relative path, size, mtime_ns) per sample: what a feature cache must match."""
        rows = []
        for path, _ in self.samples:
            stat = path.stat()
            rows.append((str(path.relative_to(self.root)), stat.st_size, stat.st_mtime_ns))
        return rows


def _is_readable_image(path: Path) -> str | None:
    """None if PIL can read the whole file, else why not. verify() checks the structure (for PNG every
    chunk's CRC) without decoding; it passes a truncated JPEG, so JPEGs are also decoded, in draft mode
    at 1/8 scale (every entropy-coded byte is still read; about a millisecond each)."""
    if path.name.startswith("."):
        return "hidden file"
    try:
        with Image.open(path) as image:
            image_format = image.format
            image.verify()
        if image_format == "JPEG":
            with Image.open(path) as image:
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()
    except Exception as exc:  # PIL raises many types for bad files; every one means "skip"
        return f"{type(exc).__name__}: {exc}"
    return None


def scan_split(name: str, root: Path, verify: Callable[[Path], str | None] = _is_readable_image) -> SplitScan:
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(f"split '{name}' ({root}) has no class folders")
    candidates = [(path, label) for label, folder in enumerate(folders)
                  for path in sorted((root / folder).rglob("*")) if path.is_file()]
    # PIL releases the GIL while decoding: threads check files in parallel, results stay in order.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        verdicts = list(pool.map(verify, [path for path, _ in candidates]))
    samples: list[tuple[Path, int]] = []
    skipped: list[tuple[Path, str]] = []
    for (path, label), why in zip(candidates, verdicts, strict=True):
        if why is None:
            samples.append((path, label))
        else:
            skipped.append((path, why))
    scan = SplitScan(name, root, folders, samples, skipped)
    empty = [folders[i] for i, n in enumerate(scan.class_counts()) if n == 0]
    if empty:
        raise DatasetError(f"split '{name}' ({root}): class folder(s) with no readable image: {empty}")
    return scan


@dataclass
class DatasetSplits:
    """The three scanned splits and the class list they share."""

    splits: dict[str, SplitScan]
    class_folders: list[str]

    @property
    def class_names(self) -> list[str]:
        return [class_name_from_folder(f) for f in self.class_folders]

    @property
    def num_classes(self) -> int:
        return len(self.class_folders)

    def summary(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "splits": {name: {"images": len(s.samples), "skipped": s.num_skipped,
                              "skipped_examples": [f"{p.relative_to(s.root)}: {why}" for p, why in s.skipped[:5]]}
                       for name, s in self.splits.items()},
        }


def discover(data_dir: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
             ) -> DatasetSplits:
    """Find, scan and cross-check the three splits (see the module docstring)."""
    dirs = resolve_split_dirs(data_dir, env)
    scans = {split: scan_split(split, path) for split, path in dirs.items()}
    reference = scans["train"].class_folders
    problems = []
    for split in ("valid", "test"):
        folders = scans[split].class_folders
        if folders != reference:
            only_train = sorted(set(reference) - set(folders))
            extra = sorted(set(folders) - set(reference))
            problems.append(f"'{split}' lacks {only_train[:10]}" if only_train else "")
            if extra:
                problems.append(f"'{split}' has classes not in 'train': {extra[:10]}")
    problems = [p for p in problems if p]
    if problems:
        raise DatasetError("class folders differ between splits: " + "; ".join(problems))
    names = [class_name_from_folder(f) for f in reference]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DatasetError(f"several class folders map to the same class name: {duplicates}")
    for scan in scans.values():
        if scan.skipped:
            logger.warning("split %s: skipped %d unreadable or non-image file(s), e.g. %s", scan.name,
                           scan.num_skipped, [f"{p.relative_to(scan.root)} ({why})" for p, why in scan.skipped[:3]])
    return DatasetSplits(scans, list(reference))


class ImageFolderDataset(Dataset):
    """(image tensor, label) for every readable sample of a split, through `transform`."""

    def __init__(self, samples: list[tuple[Path, int]], transform: Callable[[Image.Image], torch.Tensor]):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(load_rgb(path)), label
