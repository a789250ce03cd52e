"""Labelling SAM masks with CLIP: crops, scores, NMS and the semantic label map."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.samclip.backend import ProposedMask

#: CLIP's mean colour: what the outside of a mask and the padding are filled with.
FILL = np.array([122, 116, 104], dtype=np.uint8)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def mask_crop(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The mask's bounding-box crop, outside of the mask filled, padded to a square."""
    ys, xs = np.nonzero(mask)
    y1, y2, x1, x2 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = image[y1:y2, x1:x2].copy()
    crop[~mask[y1:y2, x1:x2]] = FILL
    h, w = crop.shape[:2]
    side = max(h, w)
    square = np.empty((side, side, 3), dtype=np.uint8)
    square[:] = FILL
    top, left = (side - h) // 2, (side - w) // 2
    square[top : top + h, left : left + w] = crop
    return square


@dataclass(frozen=True)
class LabelledMask:
    proposal: ProposedMask
    label: int  # index into the request's labels
    score: float  # softmax probability over labels + background prompts
    box: tuple[float, float, float, float]


def label_masks(
    proposals: Sequence[ProposedMask],
    crop_vectors: np.ndarray,
    text_vectors: np.ndarray,
    n_labels: int,
    logit_scale: float,
    threshold: float,
) -> list[LabelledMask]:
    """Keep masks whose best class is a label (not a background prompt) scoring >= threshold."""
    if not proposals:
        return []
    probs = softmax(logit_scale * crop_vectors @ text_vectors.T, axis=1)
    best = probs.argmax(axis=1)
    kept = []
    for proposal, label, row in zip(proposals, best, probs, strict=True):
        if label < n_labels and row[label] >= threshold:
            b = proposal.mask.bbox
            kept.append(LabelledMask(proposal, int(label), float(row[label]), (b.x1, b.y1, b.x2, b.y2)))
    return kept


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) against boxes (N, 4), all (x1, y1, x2, y2)."""
    w = (np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0])).clip(min=0)
    h = (np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1])).clip(min=0)
    inter = w * h
    return inter / np.maximum(_area(a) + _area(b) - inter, 1e-9)


def nms(masks: list[LabelledMask], iou_threshold: float) -> list[LabelledMask]:
    """Greedy per-label box NMS; survivors best first (ties go to SAM's predicted IoU)."""
    order = sorted(masks, key=lambda m: (m.score, m.proposal.predicted_iou), reverse=True)
    kept: list[LabelledMask] = []
    for m in order:
        rivals = [k for k in kept if k.label == m.label]
        if rivals and box_iou(np.array(m.box), np.array([k.box for k in rivals])).max() > iou_threshold:
            continue
        kept.append(m)
    return kept


def paint_label_map(masks: Sequence[LabelledMask], height: int, width: int) -> np.ndarray:
    """H x W uint16: 0 is background, label i is i + 1; higher scores paint over lower."""
    indices = np.zeros((height, width), dtype=np.uint16)
    for m in sorted(masks, key=lambda m: m.score):
        indices[m.proposal.binary()] = m.label + 1
    return indices
