"""Preprocessing: load_rgb (EXIF, modes, broken files) and the train / eval transforms."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from imgclf import presets


def _png_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **kwargs)
    return buffer.getvalue()


def test_load_rgb_applies_exif_orientation() -> None:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 20))  # blue strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=95)
    loaded = presets.load_rgb(buffer.getvalue())
    assert loaded.size == (20, 40) and loaded.mode == "RGB"
    top = np.asarray(loaded)[2, 10]
    assert top[2] > 200 and top[0] < 60  # the blue strip is now on top


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "1", "LA", "RGBA", "I;16"])
def test_load_rgb_converts_every_mode_to_rgb(tmp_path, mode: str) -> None:
    if mode == "I;16":
        image = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
        assert image.mode.startswith("I;16")
    elif mode == "CMYK":
        image = Image.new("CMYK", (8, 8), (0, 0, 0, 0))
    else:
        image = Image.new(mode, (8, 8))
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    image.save(path)
    loaded = presets.load_rgb(path)
    assert loaded.mode == "RGB" and loaded.size == (8, 8)
    if mode == "I;16":
        assert np.asarray(loaded).min() == 255  # 16-bit white stays white


def test_transparent_pixels_become_white() -> None:
    image = Image.new("RGBA", (4, 4), (10, 200, 30, 0))  # fully transparent green
    assert np.asarray(presets.load_rgb(_png_bytes(image))).min() == 255


def test_unreadable_input_raises_a_clear_error(tmp_path) -> None:
    with pytest.raises(presets.UnreadableImageError, match="cannot decode"):
        presets.load_rgb(b"this is not an image")
    data = _png_bytes(Image.new("RGB", (64, 64), (1, 2, 3)))
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(presets.UnreadableImageError, match=r"cut\.png"):
        presets.load_rgb(tmp_path / "cut.png")


def test_eval_transform_resizes_crops_and_normalizes() -> None:
    pre = presets.Preprocessing.for_backbone("efficientnet_lite0", input_size=64)
    assert (pre.input_size, pre.resize_size) == (64, 73)
    image = Image.new("RGB", (300, 150), (127, 127, 127))
    tensor = pre.eval_transform()(image)
    assert tensor.shape == (3, 64, 64) and tensor.dtype == torch.float32
    assert torch.allclose(tensor, torch.zeros_like(tensor), atol=1e-6)  # (127 - 127) / 128
    resnet = presets.Preprocessing.for_backbone("resnet18")
    assert (resnet.input_size, resnet.resize_size) == (224, 256)
    white = resnet.eval_transform()(Image.new("RGB", (256, 256), (255, 255, 255)))
    expected = (1 - torch.tensor(presets.IMAGENET_MEAN)) / torch.tensor(presets.IMAGENET_STD)
    assert torch.allclose(white[:, 0, 0], expected, atol=1e-5)


def test_eval_transform_center_crop_matches_torchvision_convention() -> None:
    # A 4x8 image (w x h) resized to shorter side 4 stays; center crop 4 takes rows 2..5.
    array = np.arange(32, dtype=np.uint8).reshape(8, 4, 1).repeat(3, axis=2)
    pre = presets.Preprocessing(input_size=4, resize_size=4, mean=(0, 0, 0), std=(1, 1, 1))
    out = pre.eval_transform()(Image.fromarray(array))
    assert torch.allclose(out[0] * 255, torch.from_numpy(array[2:6, :, 0].astype(np.float32)))


def test_metadata_round_trip() -> None:
    pre = presets.Preprocessing.for_backbone("resnet50", 96)
    metadata = pre.to_metadata()
    assert set(metadata) == {"input_size", "resize_size", "normalization"}
    assert presets.Preprocessing.from_metadata(metadata) == pre


def test_train_transform_is_random_but_seeded() -> None:
    pre = presets.Preprocessing.for_backbone("resnet18", 32)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))
    transform = pre.train_transform()
    torch.manual_seed(1)
    a = transform(image)
    torch.manual_seed(1)
    b = transform(image)
    c = transform(image)
    assert a.shape == (3, 32, 32) and torch.equal(a, b) and not torch.equal(b, c)
