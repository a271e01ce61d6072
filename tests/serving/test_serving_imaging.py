"""Request validation and decoding (imgclf.imaging): every input the issue lists, good and bad."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sagemaker_inference.errors import BaseInferenceToolkitError

from imgclf import contract, imaging, presets

from .conftest import encode


def _gradient(size: tuple[int, int] = (40, 30)) -> Image.Image:
    x = np.linspace(0, 255, size[0], dtype=np.uint8)
    pixels = np.stack([np.tile(x, (size[1], 1))] * 3, axis=-1)
    pixels[..., 1] = 30
    return Image.fromarray(pixels, "RGB")


@pytest.mark.parametrize("content_type", [*contract.IMAGE_CONTENT_TYPES, "IMAGE/JPEG; charset=binary"])
def test_every_accepted_content_type_decodes_jpeg_to_rgb(content_type: str) -> None:
    image = imaging.decode_request(encode(_gradient(), "JPEG"), content_type)
    assert image.mode == "RGB" and image.size == (40, 30)


def test_png_sent_as_octet_stream_is_sniffed() -> None:
    image = imaging.decode_request(encode(_gradient(), "PNG"), "application/octet-stream")
    assert image.size == (40, 30)
    assert np.array_equal(np.asarray(image), np.asarray(_gradient()))  # lossless


def test_exif_orientation_is_honoured() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a portrait phone photo stored landscape
    data = encode(_gradient((40, 30)), "JPEG", exif=exif.tobytes())
    assert imaging.decode_request(data, "image/jpeg").size == (30, 40)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "I;16", "1"])
def test_png_modes_become_rgb(mode: str) -> None:
    source = _gradient()
    if mode == "RGBA":
        source = source.convert("RGBA")
        source.putalpha(0)  # fully transparent: composited over white, as training reads it
    elif mode == "I;16":
        source = Image.fromarray(np.asarray(source.convert("L"), dtype=np.uint16) * 257).convert("I;16")
    else:
        source = source.convert(mode)
    data = encode(source, "PNG")
    image = imaging.decode_request(data, "image/png")
    assert image.mode == "RGB" and image.size == (40, 30)
    # The same conversion training applies to files on disk.
    assert np.array_equal(np.asarray(image), np.asarray(presets.load_rgb(data)))
    if mode == "RGBA":
        assert np.all(np.asarray(image) == 255)


def test_cmyk_jpeg_becomes_rgb() -> None:
    data = encode(_gradient().convert("CMYK"), "JPEG")
    image = imaging.decode_request(data, "image/jpeg")
    assert image.mode == "RGB"
    assert np.abs(np.asarray(image, dtype=int) - np.asarray(_gradient(), dtype=int)).mean() < 20


def _status(body: bytes, content_type: str | None) -> int:
    with pytest.raises(imaging.InferenceRequestError) as caught:
        imaging.decode_request(body, content_type)
    error = caught.value
    # The toolkit's error kind: SageMaker's container answers with its status code, not a 500.
    assert isinstance(error, BaseInferenceToolkitError)
    assert error.status_code == error.args[0] and error.message and str(error) == error.message
    return error.status_code


def test_bad_inputs_get_the_right_4xx() -> None:
    jpeg = encode(_gradient(), "JPEG")
    assert _status(b"", "image/jpeg") == 400
    assert _status(jpeg[: len(jpeg) // 2], "image/jpeg") == 400  # truncated
    assert _status(encode(_gradient(), "PNG")[:60], "image/png") == 400  # truncated PNG
    assert _status(b"\xff\xd8\xff" + b"\x00" * 64, "image/jpeg") == 400  # JPEG magic, garbage after
    assert _status(b"GIF89a" + b"\x00" * 64, "application/x-image") == 415  # not JPEG/PNG
    assert _status(b"hello, world", "application/octet-stream") == 415
    assert _status(jpeg, "text/plain") == 415
    assert _status(jpeg, "application/json") == 415
    assert _status(jpeg, None) == 415
    assert _status(b"\xff\xd8\xff" + b"\x00" * contract.MAX_IMAGE_BYTES, "image/jpeg") == 413


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # 8000 x 6000 = 48 Mpx of one colour: a ~60 kB PNG that would decode to 144 MB of RGB.
    bomb = encode(Image.new("1", (8000, 6000)), "PNG", optimize=True)
    assert len(bomb) < contract.MAX_IMAGE_BYTES
    assert _status(bomb, "image/png") == 413
    with pytest.raises(imaging.PayloadTooLargeError):
        imaging.decode_request(encode(_gradient((200, 100)), "PNG"), "image/png", max_pixels=10_000)


def test_random_bytes_never_escape_as_anything_but_a_request_error() -> None:
    rng = np.random.default_rng(0)
    jpeg = bytearray(encode(_gradient((64, 48)), "JPEG"))
    for _ in range(200):
        corrupted = bytearray(jpeg)
        for position in rng.integers(3, len(corrupted), size=8):
            corrupted[position] = int(rng.integers(0, 256))
        try:
            image = imaging.decode_request(bytes(corrupted), "image/jpeg")
        except imaging.InferenceRequestError as error:
            assert 400 <= error.status_code < 500
        else:
            assert image.mode == "RGB"


def test_pil_global_for_truncated_images_is_never_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError):
        imaging.open_image(encode(_gradient(), "JPEG"), "image/jpeg")


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (1024, 683), (300, 300), (97, 233)])
def test_fused_resize_and_crop_is_the_two_step_eval_transform(size: tuple[int, int]) -> None:
    """presets.resize_and_center_crop (what the eval transform runs) = resize shorter side + center crop."""
    rng = np.random.default_rng(size[0])
    smooth = Image.fromarray(rng.integers(0, 256, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8))
    image = smooth.resize(size, Image.Resampling.BICUBIC)
    for resize_size, crop_size in ((256, 224), (73, 64)):
        fused = np.asarray(presets.resize_and_center_crop(image, resize_size, crop_size), dtype=int)
        two_step = np.asarray(presets.center_crop(presets.resize_shorter_side(image, resize_size), crop_size),
                              dtype=int)
        assert fused.shape == two_step.shape == (crop_size, crop_size, 3)
        difference = np.abs(fused - two_step)
        assert difference.max() <= 1  # 1/255: float rounding of the filter positions, nothing more
        if min(size) > resize_size:  # downscaling, the usual case: rare
            assert (difference > 0).mean() < 0.01
