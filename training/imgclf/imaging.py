"""Request bytes -> an RGB PIL image, or a clear client error (never a crash).

Everything that can be wrong with an inference request body is decided here, before any model work:
unsupported content type (415), empty body (400), body too big (413), bytes that are neither JPEG nor PNG
(415), an image whose pixel count could exhaust memory when decoded (413, a "decompression bomb"), and
truncated or corrupt image data (400).

The errors subclass sagemaker_inference's BaseInferenceToolkitError when that package is installed (it is
in SageMaker's PyTorch inference container): its Transformer answers with the status code such an error
carries and turns every other exception into a 500. Our own server (localmode.server) reads the same
`status_code`, so a bad request gets the same answer in both places.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from imgclf import contract, presets

try:  # present in SageMaker's inference containers (and in our dev requirements, for the tests)
    from sagemaker_inference.errors import BaseInferenceToolkitError as _ToolkitErrorBase
except ImportError:  # pragma: no cover - exercised only where the toolkit is absent

    class _ToolkitErrorBase(Exception):  # type: ignore[no-redef]
        """Same constructor and attributes as sagemaker_inference.errors.BaseInferenceToolkitError."""

        def __init__(self, status_code: int, message: str, phrase: str) -> None:
            self.status_code = status_code
            self.message = message
            self.phrase = phrase
            super().__init__(status_code, message, phrase)


# 40 megapixels (e.g. 7300x5500): bigger than any camera photo a user sends for classification, and the
# decoded RGB buffer stays ~120 MB per worker. PIL's own guard (Image.MAX_IMAGE_PIXELS) only warns below
# twice its limit, so we check the header's size ourselves before decoding a single pixel.
MAX_IMAGE_PIXELS = 40_000_000

# PIL format names for the types contract.sniff_image_type recognises: decode only what was sniffed.
_PIL_FORMATS = {contract.JPEG_CONTENT_TYPE: "JPEG", contract.PNG_CONTENT_TYPE: "PNG"}


class InferenceRequestError(_ToolkitErrorBase):
    """A bad request: carries the HTTP status code the client gets (4xx) and a one-line message."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(status_code, message, message)

    def __str__(self) -> str:
        return self.message


class BadImageError(InferenceRequestError):
    """400: empty, truncated or corrupt image data."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 400)


class UnsupportedMediaTypeError(InferenceRequestError):
    """415: a content type or image format the endpoint does not read."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 415)


class PayloadTooLargeError(InferenceRequestError):
    """413: a body over contract.MAX_IMAGE_BYTES or an image over MAX_IMAGE_PIXELS."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 413)


def normalize_content_type(content_type: str | None) -> str:
    """'Image/JPEG; charset=binary' -> 'image/jpeg'; None -> ''."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_request(body: bytes | bytearray | memoryview | None, content_type: str | None) -> tuple[bytes, str]:
    """Validate a request before decoding: returns (body bytes, sniffed image type) or raises a 4xx error."""
    declared = normalize_content_type(content_type)
    if declared not in contract.IMAGE_CONTENT_TYPES:
        raise UnsupportedMediaTypeError(
            f"content type {declared or '(none)'!r} is not supported; send the image bytes with one of "
            f"{', '.join(contract.IMAGE_CONTENT_TYPES)}"
        )
    data = bytes(body or b"")
    if not data:
        raise BadImageError("the request body is empty; send the image bytes")
    if len(data) > contract.MAX_IMAGE_BYTES:
        raise PayloadTooLargeError(
            f"the image is {len(data)} bytes; the limit is {contract.MAX_IMAGE_BYTES} bytes"
        )
    sniffed = contract.sniff_image_type(data)
    if sniffed is None:
        raise UnsupportedMediaTypeError("the body is not a JPEG or PNG image (its leading bytes are neither)")
    # A mislabelled but valid image (PNG bytes sent as image/jpeg) is still classified: the bytes decide,
    # as they do for the two generic types.
    return data, sniffed


def open_image(data: bytes, image_type: str, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode sniffed JPEG/PNG bytes into a fully loaded PIL image (any mode), checking size first."""
    try:
        with warnings.catch_warnings():
            # We enforce our own (stricter) pixel bound below; PIL's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[image_type]])
            width, height = image.size
            if width <= 0 or height <= 0:
                raise BadImageError(f"the image has an invalid size {width}x{height}")
            if width * height > max_pixels:
                raise PayloadTooLargeError(
                    f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
                )
            if ImageFile.LOAD_TRUNCATED_IMAGES:  # a global someone else may have set: we never accept it
                raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False in a server")
            image.load()
            return image
    except InferenceRequestError:
        raise
    except Image.DecompressionBombError as error:
        raise PayloadTooLargeError(f"the image is too large to decode: {error}") from error
    except UnidentifiedImageError as error:
        raise BadImageError(f"the body starts like a {image_type} image but cannot be read") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        # PIL reports truncated data as OSError("image file is truncated ...") and broken headers or
        # chunks as SyntaxError/ValueError.
        raise BadImageError(f"the image data is truncated or corrupt ({error})") from error


def to_rgb(image: Image.Image) -> Image.Image:
    """Honour EXIF orientation, then convert any mode (L, P, RGBA, CMYK, I;16, ...) to RGB exactly as
    training reads its images (imgclf.presets.to_rgb: transparency composited over white)."""
    return presets.to_rgb(ImageOps.exif_transpose(image))


def decode_request(body: bytes | bytearray | memoryview | None, content_type: str | None,
                   max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Request body + Content-Type -> an upright RGB image, or an InferenceRequestError (4xx)."""
    data, image_type = check_request(body, content_type)
    image = open_image(data, image_type, max_pixels)
    try:
        return to_rgb(image)
    except (OSError, ValueError, SyntaxError) as error:  # e.g. a corrupt EXIF block
        raise BadImageError(f"the image cannot be converted to RGB ({error})") from error
