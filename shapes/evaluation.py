"""COCO evaluation of predictions on shapes scenes (pycocotools' COCOeval)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from shapes.scenes import CLASSES, TRIANGLE_KEYPOINTS, Scene, ShapeObject, coco_dataset
from visioncompare.runtime.masks import encode_mask

TRIANGLE_ID = CLASSES.index("triangle") + 1
# OKS constant of each triangle corner: with the object scale s = sqrt(area), a corner off by
# 2 x 0.05 x s (about 2.3 px on a triangle of radius 20 px) scores e^-0.5 = 0.61.
CORNER_OKS_SIGMA = 0.05


def binary_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two H x W boolean masks (0 when both are empty)."""
    return float((a & b).sum() / max((a | b).sum(), 1))


def best_match(mask: np.ndarray, objects: Sequence[ShapeObject]) -> tuple[float, ShapeObject | None]:
    """The object `mask` overlaps most by IoU, with that IoU; (0.0, None) when there are none."""
    return max(((binary_iou(mask, o.mask), o) for o in objects), key=lambda pair: pair[0], default=(0.0, None))


def ground_truth(scenes: Sequence[Scene]) -> COCO:
    coco = COCO()
    # types-pycocotools types the dataset without keypoints (annotations' keypoints and num_keypoints,
    # categories' keypoints and skeleton), which COCO and COCOeval read
    coco.dataset = coco_dataset(scenes)  # type: ignore[assignment]
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def detections(
    scenes: Sequence[Scene],
    outputs: Sequence[dict[str, Any]],
    mask_threshold: float = 0.5,
    category_ids: Sequence[int] | None = None,
) -> list[dict]:
    """torchvision-style outputs (boxes, labels, scores, masks N x 1 x H x W, keypoints N x K x 3)
    as COCO results; `category_ids[label]` maps a model's labels to the shapes category ids."""
    results = []
    for scene, out in zip(scenes, outputs, strict=True):
        for i in range(len(out["scores"])):
            x1, y1, x2, y2 = (float(v) for v in out["boxes"][i])
            label = int(out["labels"][i])
            det = {
                "image_id": scene.seed,
                "category_id": category_ids[label] if category_ids else label,
                "score": float(out["scores"][i]),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
            }
            if "masks" in out:
                mask = np.asarray(out["masks"][i][0] > mask_threshold)
                det["segmentation"] = {"size": list(mask.shape), "counts": encode_mask(mask).rle.counts.decode()}
            if "keypoints" in out:
                det["keypoints"] = [float(v) for x, y, _ in out["keypoints"][i] for v in (x, y, 1)]
            results.append(det)
    return results


def evaluate(
    gt: COCO,
    results: list[dict],
    iou_type: Literal["bbox", "segm", "keypoints"],
    category_ids: Sequence[int] | None = None,
) -> float:
    """AP@[.5:.95] for `iou_type` ("bbox", "segm" or "keypoints", the last with the triangle
    corners' OKS constants), over `category_ids` (default: all); 0 when there are no results."""
    if not results:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iou_type)
        if category_ids is not None:
            ev.params.catIds = list(category_ids)
        if iou_type == "keypoints":
            ev.params.kpt_oks_sigmas = np.full(len(TRIANGLE_KEYPOINTS), CORNER_OKS_SIGMA)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def coco_ap(scenes: Sequence[Scene], outputs: Sequence[dict[str, Any]]) -> dict[str, float]:
    gt = ground_truth(scenes)
    results = detections(scenes, outputs)
    return {"box_ap": round(evaluate(gt, results, "bbox"), 4), "mask_ap": round(evaluate(gt, results, "segm"), 4)}


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two COCO [x, y, w, h] boxes."""
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / max(a[2] * a[3] + b[2] * b[3] - inter, 1e-9)


def corner_errors(gt: COCO, results: list[dict], score_threshold: float) -> dict[str, float | None]:
    """Mean pixel distance of triangle corners, over ground-truth triangles whose best-scoring
    detection (at or above `score_threshold`) overlaps them at box IoU >= 0.5: in the canonical
    order, and order-free (each true corner to the nearest predicted one). `triangle_recall` is the share
    of triangles that had such a detection. Errors are None when no triangle was found."""
    ordered, unordered, found, total = [], [], 0, 0
    for ann in gt.loadAnns(gt.getAnnIds(catIds=[TRIANGLE_ID])):
        total += 1
        candidates = [
            d
            for d in results
            if d["image_id"] == ann["image_id"]
            and d["category_id"] == TRIANGLE_ID
            and d["score"] >= score_threshold
            and box_iou(d["bbox"], ann["bbox"]) >= 0.5
        ]
        if not candidates:
            continue
        found += 1
        best = max(candidates, key=lambda d: d["score"])
        corners = ann["keypoints"]  # type: ignore[typeddict-item]  # not in the stubs: see ground_truth
        truth = np.asarray(corners, dtype=np.float64).reshape(-1, 3)[:, :2]
        guess = np.asarray(best["keypoints"], dtype=np.float64).reshape(-1, 3)[:, :2]
        distances = np.linalg.norm(truth[:, None] - guess[None], axis=2)
        ordered.append(float(np.diag(distances).mean()))
        unordered.append(float(distances.min(axis=1).mean()))
    return {
        "corner_error_px": round(float(np.mean(unordered)), 3) if unordered else None,
        "corner_error_ordered_px": round(float(np.mean(ordered)), 3) if ordered else None,
        "triangle_recall": round(found / max(total, 1), 4),
    }


def keypoint_metrics(scenes: Sequence[Scene], results: list[dict], score_threshold: float) -> dict[str, float | None]:
    """Triangle corners: COCO keypoint AP (OKS), triangle box AP and `corner_errors`."""
    gt = ground_truth(scenes)
    return {
        "keypoint_ap": round(evaluate(gt, results, "keypoints", [TRIANGLE_ID]), 4),
        "triangle_box_ap": round(evaluate(gt, results, "bbox", [TRIANGLE_ID]), 4),
        **corner_errors(gt, results, score_threshold),
    }
