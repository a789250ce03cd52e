"""Accuracy of the shapes reference models, measured through the real services.

Shared by `bench/accuracy.py` (which prints every figure) and the CI floor tests.
Every function takes live clients, so what it measures is the service path:
decoding, resizing, prompts, label maps and RLE masks included.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from shapes.evaluation import TRIANGLE_ID, binary_iou, evaluate, ground_truth, keypoint_metrics
from shapes.scenes import CLASSES, EVAL_SEEDS, TRIANGLE_KEYPOINTS, Scene, box_of, generate_scene, interior_point
from visioncompare.maskrcnn.settings import PRESETS
from visioncompare.runtime.client import Result, VisionModelClient
from visioncompare.runtime.masks import decode_rle
from visioncompare.runtime.types import Box, InferenceRequest, Point, Task, TaskOptions
from visioncompare.samclip.openvocab import mask_crop
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import comparison_service_pb2 as cs

MIN_OBJECT_PIXELS = 60  # objects hidden down to slivers are not prompted or classified
AP_OPTIONS = TaskOptions(score_threshold=0.05, max_results=50)  # AP ranks low-scoring guesses too
KEYPOINT_SCORE_THRESHOLD = float(PRESETS["shapes"]["score_threshold"])  # as served


def eval_scenes(count: int, start: int = 0) -> list[Scene]:
    return [generate_scene(s) for s in EVAL_SEEDS[start : start + count]]


def coco_results(scene: Scene, result: Result, category_of: dict[str, int]) -> list[dict[str, Any]]:
    out = []
    for i in result.instances:
        if i.label is None or i.label.name not in category_of:
            continue
        det: dict[str, Any] = {
            "image_id": scene.seed,
            "category_id": category_of[i.label.name],
            "score": i.score,
            "bbox": [i.box.x1, i.box.y1, i.box.x2 - i.box.x1, i.box.y2 - i.box.y1],
        }
        if i.mask is not None:
            det["segmentation"] = {"size": [i.mask.rle.height, i.mask.rle.width], "counts": i.mask.rle.counts.decode()}
        out.append(det)
    return out


def instance_ap(scenes: Sequence[Scene], results: Sequence[Result]) -> dict[str, float]:
    """COCO box and mask AP@[.5:.95] of instance results named by shape class."""
    category_of = {name: k + 1 for k, name in enumerate(CLASSES)}
    dets = [d for s, r in zip(scenes, results, strict=True) for d in coco_results(s, r, category_of)]
    gt = ground_truth(scenes)
    return {"box_ap": round(evaluate(gt, dets, "bbox"), 4), "mask_ap": round(evaluate(gt, dets, "segm"), 4)}


def keypoint_figures(scenes: Sequence[Scene], results: Sequence[Result]) -> dict[str, float | None]:
    """Triangle corners (`shapes.evaluation.keypoint_metrics`) of keypoint detection results;
    corner errors count the detections at or above KEYPOINT_SCORE_THRESHOLD."""
    dets = []
    for scene, result in zip(scenes, results, strict=True):
        for i in result.instances:
            if i.label is None or i.label.name != "triangle":
                continue
            corner = {k.name: k for k in i.keypoints}
            dets.append(
                {
                    "image_id": scene.seed,
                    "category_id": TRIANGLE_ID,
                    "score": i.score,
                    "bbox": [i.box.x1, i.box.y1, i.box.x2 - i.box.x1, i.box.y2 - i.box.y1],
                    "keypoints": [v for name in TRIANGLE_KEYPOINTS for v in (corner[name].x, corner[name].y, 1)],
                }
            )
    return keypoint_metrics(scenes, dets, KEYPOINT_SCORE_THRESHOLD)


class SegmentClient(Protocol):
    """What the functions below call: `VisionModelClient`, or `InProcessClient` for a loaded model."""

    def segment(self, image: Any, task: Task, options: TaskOptions | None = None) -> Result: ...

    def detect(self, image: Any, task: Task = ..., options: TaskOptions | None = None) -> Result: ...

    def classify(self, image: Any, labels: list[str], options: TaskOptions | None = None) -> Result: ...


class InProcessClient:
    """A loaded model behind `VisionModelClient`'s segment/classify/detect: the functions
    below measure it without transport (training cards, in-process figures)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def _run(self, image: np.ndarray, task: Task, options: TaskOptions) -> Result:
        [p] = self.model.predict([InferenceRequest(task, image, options)])
        if not hasattr(p, "instances"):
            raise RuntimeError(f"{task.name} failed: {p}")
        h, w = image.shape[:2]
        return Result(
            "", "", w, h, True, "", [], p.timing, 1, instances=p.instances, label_map=p.label_map, scores=p.scores
        )

    def segment(self, image: np.ndarray, task: Task, options: TaskOptions | None = None) -> Result:
        return self._run(image, task, options or TaskOptions())

    def detect(
        self, image: np.ndarray, task: Task = Task.OBJECT_DETECTION, options: TaskOptions | None = None
    ) -> Result:
        return self._run(image, task, options or TaskOptions())

    def classify(self, image: np.ndarray, labels: list[str], options: TaskOptions | None = None) -> Result:
        return self._run(image, Task.ZERO_SHOT_CLASSIFICATION, TaskOptions(labels=tuple(labels)))


def maskrcnn_service_ap(client: VisionModelClient, scenes: Sequence[Scene]) -> dict[str, float]:
    return instance_ap(scenes, [client.segment(s.image, Task.INSTANCE_SEGMENTATION, AP_OPTIONS) for s in scenes])


def maskrcnn_service_keypoints(client: VisionModelClient, scenes: Sequence[Scene]) -> dict[str, float | None]:
    return keypoint_figures(scenes, [client.detect(s.image, Task.KEYPOINT_DETECTION, AP_OPTIONS) for s in scenes])


def in_process_results(model: Any, task: Task, scenes: Sequence[Scene]) -> list[Result]:
    """A loaded model's answers, called directly: no transport, no conversion."""
    results = []
    for scene in scenes:
        [prediction] = model.predict([InferenceRequest(task, scene.image, AP_OPTIONS)])
        results.append(Result("", "", 0, 0, True, "", [], prediction.timing, 1, instances=prediction.instances))
    return results


def maskrcnn_in_process_ap(model: Any, scenes: Sequence[Scene]) -> dict[str, float]:
    """The same AP from a loaded MaskRCNNModel called directly."""
    return instance_ap(scenes, in_process_results(model, Task.INSTANCE_SEGMENTATION, scenes))


def maskrcnn_in_process_keypoints(model: Any, scenes: Sequence[Scene]) -> dict[str, float | None]:
    """The same triangle-corner figures from a loaded MaskRCNNModel called directly."""
    return keypoint_figures(scenes, in_process_results(model, Task.KEYPOINT_DETECTION, scenes))


def sam_miou(client: SegmentClient, scenes: Sequence[Scene]) -> dict[str, float]:
    """Mean IoU of the single-mask output for one interior point, and for the object's box."""
    ious: dict[str, list[float]] = {"point": [], "box": []}
    for scene in scenes:
        for obj in scene.objects:
            if obj.mask.sum() < MIN_OBJECT_PIXELS:
                continue
            x, y = interior_point(obj.mask)
            prompts = {
                "point": TaskOptions(points=(Point(x, y, True),)),
                "box": TaskOptions(boxes=(Box(*box_of(obj.mask)),)),
            }
            for kind, options in prompts.items():
                result = client.segment(scene.image, Task.PROMPTED_SEGMENTATION, options)
                mask = decode_rle(result.instances[0].mask.rle)  # type: ignore[union-attr]
                ious[kind].append(binary_iou(mask.astype(bool), obj.mask))
    return {f"miou_{k}": round(float(np.mean(v)), 4) for k, v in ious.items()}


def clip_top1(client: SegmentClient, scenes: Sequence[Scene]) -> float:
    """Zero-shot top-1 on object crops, with the service's default prompt templates."""
    correct = total = 0
    for scene in scenes:
        for obj in scene.objects:
            if obj.mask.sum() < MIN_OBJECT_PIXELS:
                continue
            result = client.classify(mask_crop(scene.image, obj.mask), list(CLASSES))
            correct += result.scores[0].label.name == obj.category
            total += 1
    return round(correct / max(total, 1), 4)


def samclip_open_vocabulary_ap(client: SegmentClient, scenes: Sequence[Scene]) -> dict[str, float]:
    options = TaskOptions(labels=CLASSES, score_threshold=0.05)
    return instance_ap(scenes, [client.segment(s.image, Task.INSTANCE_SEGMENTATION, options) for s in scenes])


def semantic_miou(client: SegmentClient, scenes: Sequence[Scene]) -> float:
    """Mean over classes (background included) of IoU accumulated over all scenes."""
    k = len(CLASSES) + 1
    inter, union = np.zeros(k), np.zeros(k)
    for scene in scenes:
        truth = np.zeros(scene.image.shape[:2], np.int64)
        for obj in scene.objects:
            truth[obj.mask] = obj.category_id
        result = client.segment(scene.image, Task.SEMANTIC_SEGMENTATION, TaskOptions(labels=CLASSES))
        assert result.label_map is not None
        names = result.label_map.class_names  # index 0 is background
        lut = np.array([0] + [CLASSES.index(n) + 1 for n in names[1:]])
        pred = lut[result.label_map.indices.astype(np.int64)]
        for c in range(k):
            inter[c] += ((pred == c) & (truth == c)).sum()
            union[c] += ((pred == c) | (truth == c)).sum()
    present = union > 0
    return round(float((inter[present] / union[present]).mean()), 4)


def gateway_agreement(stub: Any, scenes: Sequence[Scene]) -> dict[str, dict[str, float]]:
    """The gateway's agreement figures for every pair of models, averaged over scenes;
    keyed "model_a vs model_b"."""
    from visioncompare.runtime.client import image_to_proto

    rows: dict[str, list[tuple[float, ...]]] = {}
    for scene in scenes:
        response = stub.Compare(
            cs.CompareRequest(image=image_to_proto(scene.image), task=pb.TASK_INSTANCE_SEGMENTATION), timeout=120
        )
        for pair in response.agreements:
            a = pair.instances
            rows.setdefault(f"{pair.model_a} vs {pair.model_b}", []).append(
                (len(a.matches), a.mean_iou, a.label_agreement_rate, a.only_a_count, a.only_b_count)
            )
    return {name: _mean_agreement(np.array(pair_rows, dtype=np.float64)) for name, pair_rows in rows.items()}


def _mean_agreement(m: np.ndarray) -> dict[str, float]:
    matched = m[:, 0] > 0
    return {
        "matched_per_scene": round(float(m[:, 0].mean()), 3),
        "mean_iou": round(float(m[matched, 1].mean()) if matched.any() else 0.0, 4),
        "label_agreement": round(float(m[matched, 2].mean()) if matched.any() else 0.0, 4),
        "only_a_per_scene": round(float(m[:, 3].mean()), 3),
        "only_b_per_scene": round(float(m[:, 4].mean()), 3),
    }
