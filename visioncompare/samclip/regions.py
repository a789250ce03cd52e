"""Removal of small islands and holes in masks (SAM's min_mask_region_area).

segment-anything does this with OpenCV; OpenCV is used when installed, and
otherwise a vectorised NumPy connected-components labelling (8-connectivity,
as SAM uses) gives the same result.
"""

from __future__ import annotations

from typing import Literal

import numpy as np


def label_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of a boolean mask.

    Returns (labels, sizes): labels is H x W int with 0 outside the mask and
    1..n inside; sizes[k - 1] is the pixel count of component k.
    """
    try:
        import cv2
    except ImportError:
        return _label_components_numpy(mask)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    return labels, stats[1:, cv2.CC_STAT_AREA]


def _label_components_numpy(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = mask.shape
    none = h * w  # larger than every pixel index
    labels = np.where(mask, np.arange(h * w).reshape(h, w), none)
    while True:
        # Each pixel takes the smallest label among its 8 neighbours...
        padded = np.pad(labels, 1, constant_values=none)
        smallest = labels.copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                np.minimum(smallest, padded[dy : dy + h, dx : dx + w], out=smallest)
        smallest[~mask] = none
        # ...then labels jump to their label's label until they settle.
        flat = smallest.ravel()
        inside = flat < none
        while True:
            jumped = flat.copy()
            jumped[inside] = flat[flat[inside]]
            if np.array_equal(jumped, flat):
                break
            flat = jumped
        smallest = flat.reshape(h, w)
        if np.array_equal(smallest, labels):
            break
        labels = smallest
    roots, dense = np.unique(labels, return_inverse=True)
    dense = dense.reshape(h, w)
    if roots.size and roots[-1] == none:  # the background took the last dense index
        dense = np.where(labels == none, 0, dense + 1)
        sizes = np.bincount(dense.ravel(), minlength=roots.size)[1:]
    else:
        dense = dense + 1
        sizes = np.bincount(dense.ravel())[1:]
    return dense, sizes


def remove_small_regions(
    mask: np.ndarray, area_thresh: float, mode: Literal["holes", "islands"]
) -> tuple[np.ndarray, bool]:
    """segment_anything.utils.amg.remove_small_regions, without the hard OpenCV dependency."""
    correct_holes = mode == "holes"
    working = np.logical_xor(correct_holes, mask)
    labels, sizes = label_components(working)
    small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
    if not small:
        return mask, False
    fill = [0, *small]
    if not correct_holes:
        fill = [i for i in range(len(sizes) + 1) if i not in fill]
        if not fill:  # every island is small: keep the largest
            fill = [int(np.argmax(sizes)) + 1]
    return np.isin(labels, fill), True
