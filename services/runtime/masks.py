"""Binary masks <-> COCO RLE, through pycocotools."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from services.runtime.types import Box, Mask, RleMask


def encode_mask(mask: np.ndarray) -> Mask:
    """Encode an H x W boolean mask as RLE with its tight box and area."""
    binary = np.asfortranarray(mask.astype(np.uint8, copy=False))
    rle = mask_utils.encode(binary)
    area = int(mask_utils.area(rle))
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    return Mask(
        rle=RleMask(height=int(rle["size"][0]), width=int(rle["size"][1]), counts=rle["counts"]),
        bbox=Box(x, y, x + w, y + h),
        area=area,
    )


def decode_rle(rle: RleMask) -> np.ndarray:
    """Decode RLE to an H x W boolean array."""
    raw = {"size": [rle.height, rle.width], "counts": rle.counts}
    return mask_utils.decode(raw).astype(bool)


def mask_iou(a: list[RleMask], b: list[RleMask]) -> np.ndarray:
    """Pairwise IoU matrix (len(a) x len(b)) between two lists of RLE masks."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    ra = [{"size": [m.height, m.width], "counts": m.counts} for m in a]
    rb = [{"size": [m.height, m.width], "counts": m.counts} for m in b]
    return np.asarray(mask_utils.iou(ra, rb, [0] * len(rb)), dtype=np.float64).reshape(len(a), len(b))
