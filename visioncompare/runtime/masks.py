"""Binary masks <-> COCO RLE, through pycocotools."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pycocotools import mask as mask_utils

from visioncompare.runtime.types import Box, Mask, RleMask

if TYPE_CHECKING:
    from pycocotools import _EncodedRLE  # the RLE dict pycocotools reads and writes (types-pycocotools)


def coco_rle(rle: RleMask) -> _EncodedRLE:
    """`rle` as the dict pycocotools takes."""
    return {"size": [rle.height, rle.width], "counts": rle.counts}


def encode_mask(mask: np.ndarray) -> Mask:
    """Encode an H x W boolean mask as RLE with its tight box and area."""
    binary = np.asfortranarray(mask.astype(np.uint8, copy=False))
    rle = mask_utils.encode(binary)
    area = int(mask_utils.area(rle))
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    counts = rle["counts"]  # bytes from encode; its stubs allow str, which pycocotools also reads
    return Mask(
        rle=RleMask(
            height=int(rle["size"][0]),
            width=int(rle["size"][1]),
            counts=counts.encode() if isinstance(counts, str) else counts,
        ),
        bbox=Box(x, y, x + w, y + h),
        area=area,
    )


def decode_rle(rle: RleMask) -> np.ndarray:
    """Decode RLE to an H x W boolean array."""
    return mask_utils.decode(coco_rle(rle)).astype(bool)


def mask_iou(a: list[RleMask], b: list[RleMask]) -> np.ndarray:
    """Pairwise IoU matrix (len(a) x len(b)) between two lists of RLE masks."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    ra = [coco_rle(m) for m in a]
    rb = [coco_rle(m) for m in b]
    return np.asarray(mask_utils.iou(ra, rb, [0] * len(rb)), dtype=np.float64).reshape(len(a), len(b))
