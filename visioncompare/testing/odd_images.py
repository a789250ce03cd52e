"""Corrupt, truncated and unusual image files, for the decoding and message-hygiene tests."""

from __future__ import annotations

import io
import re
import struct
import zlib

import numpy as np
from PIL import Image

from visioncompare.testing.images import encode, png_bomb, scene


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def _noise(width: int = 96, height: int = 64) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 255, (height, width, 3), dtype=np.uint8)


def bad_files() -> dict[str, bytes]:
    """Bytes no model can read: each must be INVALID_ARGUMENT with a clean message."""
    jpeg, png = encode(_noise(), "JPEG"), encode(_noise())
    zero = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0)) + _chunk(b"IEND", b"")
    return {
        "empty": b"",
        "random bytes": np.random.default_rng(1).bytes(600),
        "text file": b"name,score\ncircle,0.9\n" * 20,
        "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="30"><rect width="9" height="9"/></svg>',
        "png 0x0": zero,
        "png bomb header": png_bomb(60_000, 60_000),
        "truncated png": png[: len(png) // 2],
        "truncated jpeg": jpeg[: len(jpeg) // 2],
        "jpeg header only": jpeg[:100],
        "truncated tiff": encode(_noise(), "TIFF")[:3000],
        "truncated gif": _save(Image.fromarray(_noise()).convert("P"), "GIF")[:400],
        "icon (unsupported format)": _save(Image.fromarray(scene()), "ICO"),
    }


def odd_but_valid_files() -> dict[str, bytes]:
    """Unusual files Pillow reads: each must decode to RGB with the bright box where it is drawn.

    All show `scene()`'s bright block at (10, 8)-(30, 20) on 64 x 48, except the
    EXIF-rotated one (see `EXIF_ROTATED_BOX`).
    """
    frames = [Image.fromarray(scene(64, 48, (10, 8, 30, 20)))] + [
        Image.fromarray(scene(64, 48, (40, 30, 60, 44))) for _ in range(2)
    ]
    palette = Image.fromarray(scene()).convert("P")
    grey16 = (scene().mean(axis=2) * 257).astype(np.uint16)  # 16-bit: bright is 59110, dark 5140
    return {
        "gif": encode(scene(), "GIF"),
        "animated gif (first frame)": _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80),
        "tiff": encode(scene(), "TIFF"),
        "cmyk jpeg": _save(Image.fromarray(scene()).convert("CMYK"), "JPEG", quality=95),
        "16-bit grey png": _save(Image.fromarray(grey16), "PNG"),
        "palette png with alpha": _save(palette, "PNG", transparency=0),
        "exif rotated jpeg": encode(scene(64, 32, (0, 0, 8, 4)), "JPEG", exif_orientation=6),
    }


#: Where the bright block of "exif rotated jpeg" lands once the orientation is applied (32 x 64).
EXIF_ROTATED_BOX = (28, 0, 32, 8)

# A message fit for clients: no Python repr, memory address or server path.
_LEAKS = re.compile(r"0x[0-9a-fA-F]|<|>|object at|(?<![\w:/.])/[\w.-]+/")


def assert_clean_message(message: str) -> None:
    assert message, "an error needs a message"
    leak = _LEAKS.search(message)
    assert leak is None, f"message leaks internals ({leak[0]!r}): {message}"
