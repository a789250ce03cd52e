"""Small test images."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def scene(width: int = 64, height: int = 48, box: tuple[int, int, int, int] = (10, 8, 30, 20)) -> np.ndarray:
    """A dark RGB image with one bright rectangle at box = (x1, y1, x2, y2)."""
    image = np.full((height, width, 3), 20, np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 230
    return image


def encode(image: np.ndarray, fmt: str = "PNG", exif_orientation: int | None = None) -> bytes:
    buf = io.BytesIO()
    pil = Image.fromarray(image)
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        pil.save(buf, format=fmt, exif=exif)
    else:
        pil.save(buf, format=fmt)
    return buf.getvalue()


def png_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A PNG whose header claims width x height pixels, in a few hundred bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096)  # far too little data, but the header is what matters
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
