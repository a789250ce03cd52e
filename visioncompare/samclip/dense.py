"""Text-to-pixel semantic segmentation on a patch grid: upsampling, class regions, painting.

A grid cell is one backbone patch; `cell` is its side in original-image pixels. Class 0 is
background, class k >= 1 the request's label k - 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from visioncompare.samclip.regions import label_components


def upsampled_argmax(classes: np.ndarray, cell: float, size: tuple[int, int]) -> np.ndarray:
    """K x h x w class probabilities -> H x W uint16 argmax of their bilinear upsampling,
    one class at a time (memory: two H x W planes, whatever K)."""
    k, rows, cols = classes.shape
    height, width = size
    out = (max(height, round(rows * cell)), max(width, round(cols * cell)))
    best = torch.full(size, -1.0)
    index = torch.zeros(size, dtype=torch.int32)
    grid = torch.as_tensor(classes, dtype=torch.float32)
    for c in range(k):
        plane = F.interpolate(grid[c][None, None], size=out, mode="bilinear", align_corners=False)[0, 0]
        plane = plane[:height, :width]
        better = plane > best
        best = torch.where(better, plane, best)
        index[better] = c
    return index.numpy().astype(np.uint16)


@dataclass(frozen=True)
class ClassGrid:
    """K x h x w class probabilities over the patch grid (0 is background) and the side of a
    cell in original-image pixels."""

    classes: np.ndarray
    cell: float


@dataclass(frozen=True)
class ClassRegion:
    """A connected region of one class on the grid, as a SAM prompt."""

    label: int  # 1.. (0 is background)
    point: tuple[float, float]  # (x, y) of the region's most confident cell's centre, original px
    box: tuple[float, float, float, float]  # the region's cells, original px
    confidence: float  # the class's mean probability over the region


def class_regions(classes: np.ndarray, cell: float, size: tuple[int, int]) -> list[ClassRegion]:
    """The 8-connected regions of each non-background class of the grid's argmax."""
    height, width = size
    coarse = classes.argmax(axis=0)
    regions = []
    for label in np.unique(coarse):
        if label == 0:
            continue
        components, counts = label_components(coarse == label)
        for k in range(1, len(counts) + 1):
            ys, xs = np.nonzero(components == k)
            probs = classes[label, ys, xs]
            peak = int(np.argmax(probs))
            point = (min((xs[peak] + 0.5) * cell, width - 0.5), min((ys[peak] + 0.5) * cell, height - 0.5))
            box = (
                float(xs.min() * cell),
                float(ys.min() * cell),
                float(min((xs.max() + 1) * cell, width)),
                float(min((ys.max() + 1) * cell, height)),
            )
            regions.append(ClassRegion(int(label), (float(point[0]), float(point[1])), box, float(probs.mean())))
    return regions


def paint_regions(regions: list[ClassRegion], masks: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """H x W uint16: each region's SAM mask painted with its class, the more confident
    regions over the less; pixels no mask covers are background."""
    indices = np.zeros(size, dtype=np.uint16)
    for region, mask in sorted(zip(regions, masks, strict=True), key=lambda pair: pair[0].confidence):
        indices[mask] = region.label
    return indices
