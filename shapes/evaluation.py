"""COCO evaluation of predictions on shapes scenes (pycocotools' COCOeval)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from services.runtime.masks import encode_mask
from shapes.scenes import Scene, coco_dataset


def binary_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two H x W boolean masks (0 when both are empty)."""
    return float((a & b).sum() / max((a | b).sum(), 1))


def ground_truth(scenes: Sequence[Scene]) -> COCO:
    coco = COCO()
    coco.dataset = coco_dataset(scenes)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def detections(scenes: Sequence[Scene], outputs: Sequence[dict[str, Any]], mask_threshold: float = 0.5) -> list[dict]:
    """torchvision-style outputs (boxes, labels, scores, masks N x 1 x H x W) as COCO results."""
    results = []
    for scene, out in zip(scenes, outputs, strict=True):
        for i in range(len(out["scores"])):
            x1, y1, x2, y2 = (float(v) for v in out["boxes"][i])
            det = {"image_id": scene.seed, "category_id": int(out["labels"][i]), "score": float(out["scores"][i]),
                   "bbox": [x1, y1, x2 - x1, y2 - y1]}
            if "masks" in out:
                mask = np.asarray(out["masks"][i][0] > mask_threshold)
                det["segmentation"] = {"size": list(mask.shape), "counts": encode_mask(mask).rle.counts.decode()}
            results.append(det)
    return results


def evaluate(gt: COCO, results: list[dict], iou_type: str) -> float:
    """AP@[.5:.95] for `iou_type` ("bbox" or "segm"); 0 when there are no results."""
    if not results:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def coco_ap(scenes: Sequence[Scene], outputs: Sequence[dict[str, Any]]) -> dict[str, float]:
    gt = ground_truth(scenes)
    results = detections(scenes, outputs)
    return {"box_ap": round(evaluate(gt, results, "bbox"), 4), "mask_ap": round(evaluate(gt, results, "segm"), 4)}
