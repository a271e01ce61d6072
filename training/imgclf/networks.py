"""The networks: the head (`make_head`: features→128→ReLU→N), what every backbone offers training and serving
(`ClassifierMixin`: pooled features, the head, freezing), the ResNets and the EfficientNet-Lite0 wrapper.
imgclf.models names them as backbones and loads their weights.

The ResNets are written here after torchvision.models.resnet (BSD-3-Clause), because torchvision cannot be
imported on this platform and timm depends on it, with torchvision's state-dict keys and shapes, so its
ImageNet files load as they are. EfficientNet-Lite0's model code comes from PyPI `efficientnet-lite-pytorch`.

The head replaces the backbone's own classifier under the backbone's own name for it (`fc` for the
ResNets, as `model.fc = nn.Sequential(...)` in torchvision's transfer-learning recipe; `_fc` for
EfficientNet), so a state dict saved here loads into torchvision's ResNet with the same head and vice versa.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

HEAD_HIDDEN_UNITS = 128


# --------------------------------------------------------------------------------------------------
# ResNet, written after torchvision.models.resnet (BSD-3-Clause) so the state-dict keys and shapes are
# identical: conv1, bn1, layer1..layer4 (blocks with conv/bn pairs and `downsample.0/1`), fc.


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    # torchvision's v1.5 bottleneck: the stride sits on the 3x3 convolution.
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def make_head(in_features: int, num_classes: int) -> nn.Sequential:
    """Linear(in_features, 128) - ReLU - Linear(128, num_classes)."""
    return nn.Sequential(
        nn.Linear(in_features, HEAD_HIDDEN_UNITS),
        nn.ReLU(inplace=True),
        nn.Linear(HEAD_HIDDEN_UNITS, num_classes),
    )


class ClassifierMixin:
    """What training and serving need from any backbone: pooled features, the head, freezing.

    `forward_features(x)` returns the pooled, flattened backbone output (what the feature cache stores);
    `head` maps it to logits. With a frozen backbone, `train()` keeps every backbone module in eval mode
    so BatchNorm running statistics never drift (requires_grad=False alone does not stop that).
    """

    head_attr: str
    feature_dim: int
    frozen_backbone: bool = False
    # Each backbone class defines it: its pooled, flattened features.
    forward_features: Callable[[torch.Tensor], torch.Tensor]

    @property
    def head(self) -> nn.Module:
        return getattr(self, self.head_attr)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def backbone_modules(self) -> Iterator[nn.Module]:
        for name, child in self.named_children():  # type: ignore[attr-defined]
            if name != self.head_attr:
                yield child

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        for module in self.backbone_modules():
            yield from module.parameters()

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        prefix = self.head_attr + "."
        return {k: v for k, v in self.state_dict().items() if not k.startswith(prefix)}  # type: ignore[attr-defined]

    def train(self, mode: bool = True):  # type: ignore[override]
        super().train(mode)  # type: ignore[misc]
        if mode and self.frozen_backbone:
            for module in self.backbone_modules():
                module.eval()
        return self


class ResNet(ClassifierMixin, nn.Module):
    head_attr = "fc"

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: list[int], num_classes: int):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.feature_dim = 512 * block.expansion
        # torchvision's initialisation (matters only for pretrained="none").
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        self.fc = make_head(self.feature_dim, num_classes)

    def _make_layer(self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers: list[nn.Module] = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def efficientnet_lite0(num_classes: int, input_size: int) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite_pytorch.utils import get_model_params

    class EfficientNetLite0(ClassifierMixin, EfficientNet):
        head_attr = "_fc"

        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return torch.flatten(self._avg_pooling(self.extract_features(x)), 1)

    # image_size fixes the static "same" padding of the TF-style convolutions (ONNX-exportable).
    blocks_args, global_params = get_model_params("efficientnet-lite0", {"image_size": input_size})
    model = EfficientNetLite0(blocks_args, global_params)
    model.feature_dim = model._fc.in_features
    model._fc = make_head(model.feature_dim, num_classes)
    return model
