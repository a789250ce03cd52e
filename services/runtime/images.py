"""Safe image decoding: size checked from the header before any pixel is decoded."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError
from visioncompare.v1 import common_pb2 as pb

from services.runtime.errors import InvalidArgument, TooLarge

FORMATS = ("JPEG", "PNG", "WEBP", "BMP")


def decode_image(image: pb.Image, max_pixels: int) -> np.ndarray:
    """Decode an Image message to an H x W x 3 uint8 RGB array, orientation applied."""
    source = image.WhichOneof("source")
    if source == "encoded":
        return decode_bytes(image.encoded, max_pixels=max_pixels)
    if source == "raw":
        return decode_raw(image.raw, max_pixels=max_pixels)
    raise InvalidArgument("image is empty: set image.encoded or image.raw", field="image")


def _check_pixels(width: int, height: int, max_pixels: int, field: str) -> None:
    if width <= 0 or height <= 0:
        raise InvalidArgument(f"image has no pixels ({width}x{height})", field=field)
    if width * height > max_pixels:
        raise TooLarge(
            f"image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels}; downscale it before sending",
            field=field,
            metadata={"max_pixels": str(max_pixels)},
        )


def decode_bytes(data: bytes, *, max_pixels: int) -> np.ndarray:
    field = "image.encoded"
    if not data:
        raise InvalidArgument("image.encoded is empty: send the bytes of a JPEG, PNG, WebP or BMP file", field=field)
    try:
        with warnings.catch_warnings():
            # Our own limit is enforced below; silence Pillow's bomb warning.
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            img = PILImage.open(io.BytesIO(data), formats=FORMATS)
            _check_pixels(img.width, img.height, max_pixels, field)  # header only so far
            img.load()
            img = ImageOps.exif_transpose(img) or img
            rgb = img.convert("RGB")
    except PILImage.DecompressionBombError as exc:  # Pillow's own, far higher, limit
        raise TooLarge(
            f"image.encoded is too large ({exc}), over the limit of {max_pixels} pixels; "
            "downscale it before sending",
            field=field,
        ) from None
    except UnidentifiedImageError as exc:
        raise InvalidArgument(
            f"image.encoded is not a readable JPEG, PNG, WebP or BMP image ({exc})", field=field
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidArgument(f"image.encoded is corrupt or truncated: {exc}", field=field) from None
    return np.asarray(rgb, dtype=np.uint8)


def decode_raw(raw: pb.RawImage, *, max_pixels: int) -> np.ndarray:
    field = "image.raw"
    _check_pixels(raw.width, raw.height, max_pixels, field)
    expected = raw.width * raw.height * 3
    if len(raw.rgb) != expected:
        raise InvalidArgument(
            f"image.raw.rgb has {len(raw.rgb)} bytes; {raw.width}x{raw.height} RGB needs {expected}",
            field="image.raw.rgb",
        )
    return np.frombuffer(raw.rgb, dtype=np.uint8).reshape(raw.height, raw.width, 3)
