"""schemathesis hooks (SCHEMATHESIS_HOOKS) for the gateway's /openapi.json: how to make the
values the schema declares that schemathesis has no generator for. Nothing here relaxes a check.

- `format: image-base64` (the JSON body's image): the base64 of a real image file;
- `format: binary` (the multipart image, whose part names the media types it takes): a real file
  of each of those types.

The files are tiny images of every format the gateway reads, drawn with Pillow.
"""

from __future__ import annotations

import base64
import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image
from schemathesis.transport.serialization import Binary  # how schemathesis carries bytes

FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP", "image/bmp": "BMP", "image/gif": "GIF"}
FORMATS["image/tiff"] = "TIFF"


def image_file(media_type: str, size: tuple[int, int] = (24, 16)) -> bytes:
    image = Image.new("RGB", size, (20, 20, 20))
    image.paste((230, 230, 230), (4, 4, 12, 10))
    buffer = io.BytesIO()
    image.save(buffer, format=FORMATS[media_type])
    return buffer.getvalue()


FILES = {media_type: image_file(media_type) for media_type in FORMATS}

schemathesis.openapi.format(
    "image-base64", st.sampled_from([base64.b64encode(data).decode() for data in FILES.values()])
)
# The API's one binary field is the multipart image, whose part names these media types
# (encoding.contentType); schemathesis would draw any bytes for it (and PDFs, ZIPs).
schemathesis.openapi.format("binary", st.sampled_from([Binary(data) for data in FILES.values()]))
