"""Safe image decoding: format and size checked from the header before any pixel is decoded.

`read_header` is that check on its own: the model services run it as the first
step of `decode_image`, the gateway runs it alone (it never decodes pixels).
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from visioncompare.runtime.errors import InvalidArgument, TooLarge
from visioncompare.v1 import common_pb2 as pb

#: Pillow format names accepted in Image.encoded. GIF and TIFF: the first frame.
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
FORMAT_NAMES = "JPEG, PNG, WebP, BMP, GIF or TIFF"

# What Pillow raises on bytes it cannot parse or decode, besides UnidentifiedImageError.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError, struct.error)


@dataclass(frozen=True)
class ImageHeader:
    """What an encoded image's header says: Pillow's format name and the stored size."""

    format: str
    width: int
    height: int


def decode_image(image: pb.Image, max_pixels: int) -> np.ndarray:
    """Decode an Image message to an H x W x 3 uint8 RGB array, orientation applied."""
    source = image_source(image, max_pixels)
    return source if isinstance(source, np.ndarray) else decode_bytes(source, max_pixels=max_pixels)


def image_source(image: pb.Image, max_pixels: int) -> np.ndarray | bytes:
    """A raw image's pixels (checked against the limit: a reshape, no copy, nothing to decode),
    or an encoded image's file, to decode (`decode_bytes`, on a decoding thread)."""
    source = image.WhichOneof("source")
    if source == "encoded":
        return image.encoded
    if source == "raw":
        return decode_raw(image.raw, max_pixels=max_pixels)
    raise InvalidArgument("image is empty: set image.encoded or image.raw", field="image")


def check_image(image: pb.Image, max_pixels: int) -> ImageHeader | None:
    """Validate an Image message without decoding pixels: the gateway's check.

    Returns the header of an encoded image, None for a (checked) raw one.
    """
    source = image.WhichOneof("source")
    if source == "encoded":
        return read_header(image.encoded, max_pixels=max_pixels)
    if source == "raw":
        check_raw(image.raw, max_pixels=max_pixels)
        return None
    raise InvalidArgument("image is empty: set image.encoded or image.raw", field="image")


def _check_pixels(width: int, height: int, max_pixels: int, field: str) -> None:
    if width <= 0 or height <= 0:
        raise InvalidArgument(f"{field} has no pixels ({width}x{height}); send an image at least 1x1", field=field)
    if width * height > max_pixels:
        raise TooLarge(
            f"{field} is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels}; downscale it before sending",
            field=field,
            metadata={"max_pixels": str(max_pixels)},
        )


def _open(data: bytes, max_pixels: int, field: str) -> PILImage.Image:
    """Open (parse the header of) an encoded image and check its size; no pixel is decoded."""
    if not data:
        raise InvalidArgument(f"{field} is empty: send the bytes of a {FORMAT_NAMES} file", field=field)
    try:
        with warnings.catch_warnings():
            # Our own limit is enforced below; silence Pillow's bomb warning.
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            img = PILImage.open(io.BytesIO(data), formats=FORMATS)
    except PILImage.DecompressionBombError as exc:  # Pillow's own, far higher, limit: only the count is known
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{claimed[1]} pixels" if claimed else "more pixels than Pillow will open"
        raise TooLarge(
            f"{field} is {size}, over the limit of {max_pixels}; downscale it before sending",
            field=field,
            metadata={"max_pixels": str(max_pixels)},
        ) from None
    except (UnidentifiedImageError, *_DECODE_ERRORS):
        # Pillow's message holds a repr of the buffer: say what is wrong instead.
        raise InvalidArgument(
            f"{field} is not a readable {FORMAT_NAMES} image (another format, or a damaged header); "
            "convert it to one of these formats",
            field=field,
        ) from None
    _check_pixels(img.width, img.height, max_pixels, field)
    return img


def read_header(data: bytes, *, max_pixels: int, field: str = "image.encoded") -> ImageHeader:
    """Format and size from an encoded image's header, checked against the pixel limit.

    Raises InvalidArgument (empty, unknown format, damaged header, 0 pixels) or
    TooLarge (over `max_pixels`). Decodes no pixel data, so a header that is fine
    over truncated pixel data passes; decoding finds that.
    """
    img = _open(data, max_pixels, field)
    return ImageHeader(format=str(img.format), width=img.width, height=img.height)


def _to_rgb(img: PILImage.Image) -> np.ndarray:
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):  # 16-bit grey: scale, don't clip at 255
        grey = (np.asarray(img, dtype=np.float64) / 257.0).clip(0, 255).round().astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # what Pillow asks for palette images with transparency
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def decode_bytes(data: bytes, *, max_pixels: int) -> np.ndarray:
    field = "image.encoded"
    img = _open(data, max_pixels, field)  # header only so far
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns on truncated TIFF reads etc.; errors raise below
            img.load()
            img = ImageOps.exif_transpose(img) or img
            return _to_rgb(img)
    except _DECODE_ERRORS:
        raise InvalidArgument(
            f"{field} is corrupt or truncated: its {img.format} header is readable but its pixel data is not; "
            "send the complete file",
            field=field,
        ) from None


def check_raw(raw: pb.RawImage, *, max_pixels: int) -> None:
    _check_pixels(raw.width, raw.height, max_pixels, "image.raw")
    expected = raw.width * raw.height * 3
    if len(raw.rgb) != expected:
        raise InvalidArgument(
            f"image.raw.rgb has {len(raw.rgb)} bytes; {raw.width}x{raw.height} RGB needs {expected}",
            field="image.raw.rgb",
        )


def decode_raw(raw: pb.RawImage, *, max_pixels: int) -> np.ndarray:
    check_raw(raw, max_pixels=max_pixels)
    return np.frombuffer(raw.rgb, dtype=np.uint8).reshape(raw.height, raw.width, 3)
