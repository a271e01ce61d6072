"""The feature cache: keyed on everything the features depend on, atomic files, damaged files recomputed."""

from __future__ import annotations

import os

import torch

from imgclf import data, features
from imgclf.precision import resolve_precision
from imgclf.presets import Preprocessing


class MeanColour:
    """A stand-in backbone that is cheap but real: per-channel means of the image (features of size 3)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return images.mean(dim=(2, 3))


def test_miss_then_hit_and_invalidation(tmp_path, dataset_factory) -> None:
    root = dataset_factory()
    split = data.scan_split("train", root / "train")
    pre = Preprocessing.for_backbone("resnet18", 32)
    plan = resolve_precision("fp32", torch.device("cpu"))
    backbone = MeanColour()
    cache = tmp_path / "cache"

    def load(weights: str = "w1", preprocessing: Preprocessing = pre):
        return features.load_or_extract(cache, backbone, "resnet18", weights, split, preprocessing, plan, 16, 0,
                                        torch.device("cpu"))

    feats, labels, meta = load()
    assert not meta["hit"] and feats.shape == (36, 3) and labels.tolist() == [lbl for _, lbl in split.samples]
    calls = backbone.calls
    again, _, meta = load()
    assert meta["hit"] and backbone.calls == calls and torch.equal(again, feats)
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]  # temp file renamed into place

    assert not load(weights="w2")[2]["hit"]  # other backbone weights
    assert not load(preprocessing=Preprocessing.for_backbone("resnet18", 48))[2]["hit"]  # other preprocessing
    path, _ = split.samples[0]
    # A copy of the same bytes with a new mtime (as SageMaker's download of the dataset) is the same data...
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert load()[2]["hit"]
    # ...a file whose content changed is not.
    content = bytearray(path.read_bytes())
    content[-1] ^= 0xFF
    path.write_bytes(bytes(content))
    assert not load()[2]["hit"]
    path.write_bytes(bytes(content[:-1]) + bytes([content[-1] ^ 0xFF]))

    for file in cache.iterdir():  # damaged files (e.g. a disk filled up) are recomputed, not trusted
        file.write_bytes(b"garbage")
    feats2, _, meta = load()
    assert not meta["hit"] and torch.equal(feats2, feats)


def test_backbone_digest_tells_weights_apart() -> None:
    from imgclf.models import build_model

    torch.manual_seed(0)
    a = build_model("resnet18", 3)
    torch.manual_seed(1)
    b = build_model("resnet18", 3)
    assert features.backbone_digest(a) != features.backbone_digest(b)
    with torch.no_grad():
        a.fc[0].weight.add_(1.0)  # the head is not part of the backbone's identity
    torch.manual_seed(0)
    assert features.backbone_digest(a) == features.backbone_digest(build_model("resnet18", 3))
