"""A small, deterministic model for the comparison page's tests: every output the page draws.

Two flavours, as in the real stack:

- "fixed" (like Mask R-CNN): object detection, instance segmentation and keypoint detection
  (the corners of each box) with the fixed vocabulary ("bright", "dark");
- "open" (like SAM-CLIP): zero-shot classification, prompted segmentation (points and
  boxes), semantic segmentation, and open-vocabulary detection and instance segmentation,
  each needing labels.

On an image, class "bright" is the pixels whose mean channel value exceeds 127; class
"dark" the other pixels of the image's top-left quadrant (score `dark_score`, so score
thresholds have something to filter). An open model maps the first label it is given to
"bright" and the second to "dark". Each stage sleeps `stage_ms` so the timing bars differ.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from visioncompare.runtime.errors import InvalidArgument, ServiceError
from visioncompare.runtime.masks import encode_mask
from visioncompare.runtime.model import StageTimer, VisionModel
from visioncompare.runtime.tasks import task_capability
from visioncompare.runtime.types import (
    Box,
    Capabilities,
    ClassScore,
    InferenceRequest,
    Instance,
    Keypoint,
    Label,
    LabelMap,
    ModelCard,
    Prediction,
    PromptKind,
    RuntimeInfo,
    Task,
    Vocabulary,
)

FIXED_LABELS = ("bright", "dark")
OPEN_TASKS = (
    Task.ZERO_SHOT_CLASSIFICATION,
    Task.PROMPTED_SEGMENTATION,
    Task.SEMANTIC_SEGMENTATION,
    Task.OBJECT_DETECTION,
    Task.INSTANCE_SEGMENTATION,
)
FIXED_TASKS = (Task.OBJECT_DETECTION, Task.INSTANCE_SEGMENTATION, Task.KEYPOINT_DETECTION)


def class_masks(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The "bright" and "dark" masks of an image (H x W booleans)."""
    bright = image.mean(axis=2) > 127
    dark = np.zeros_like(bright)
    h, w = bright.shape
    dark[: max(h // 2, 1), : max(w // 2, 1)] = True
    return bright, dark & ~bright


class PlaygroundModel(VisionModel):
    def __init__(
        self,
        *,
        name: str,
        vocabulary: str = "fixed",
        stage_ms: tuple[float, float, float] = (0.0, 0.0, 0.0),
        dark_score: float = 0.4,
    ) -> None:
        self.name = name
        self.open = vocabulary == "open"
        self.stage_ms = stage_ms
        self.dark_score = dark_score

    def load(self) -> None:
        pass

    def warmup(self) -> None:
        pass

    def capabilities(self) -> Capabilities:
        if self.open:
            tasks = tuple(
                task_capability(t, Vocabulary.NONE, prompt_kinds=(PromptKind.POINT, PromptKind.BOX))
                if t == Task.PROMPTED_SEGMENTATION
                else task_capability(t, Vocabulary.OPEN, prompt_kinds=(PromptKind.TEXT,))
                for t in OPEN_TASKS
            )
        else:
            tasks = tuple(task_capability(t, Vocabulary.FIXED, FIXED_LABELS) for t in FIXED_TASKS)
        return Capabilities(
            card=ModelCard(
                f"Playground ({self.name})",
                "tests",
                "test",
                "vision",
                "2026-11",
                1000,
                "MIT",
                "",
                "test model",
                ("Playground",),
            ),
            tasks=tasks,
            runtime=RuntimeInfo(
                "cpu",
                "torch",
                "fp32",
                "playground",
                True,
                8,
                "test",
                warnings=() if self.open else ("playground weights",),
            ),
        )

    def validate(self, request: InferenceRequest) -> None:
        super().validate(request)
        o = request.options
        if request.task == Task.PROMPTED_SEGMENTATION:
            if not o.points and not o.boxes:
                raise InvalidArgument(
                    "PROMPTED_SEGMENTATION needs at least one point or box in options.prompts", field="options.prompts"
                )
        elif self.open and not o.labels:
            raise InvalidArgument(
                f"{request.task.name} needs labels: list the class names to look for in options.labels, "
                'e.g. ["cat", "dog"]',
                field="options.labels",
            )
        elif not self.open:
            for label in o.labels:
                if label not in FIXED_LABELS:
                    raise InvalidArgument(
                        f"unknown label {label!r}; valid labels: bright, dark", field="options.labels"
                    )

    def _sleep(self, timer: StageTimer, stage: str, ms: float) -> None:
        with timer.stage(stage):
            if ms:
                time.sleep(ms / 1000.0)

    def _instances(self, request: InferenceRequest, bright: np.ndarray, dark: np.ndarray) -> list[Instance]:
        o = request.options
        if self.open:  # the first label finds the bright pixels, the second the dark quadrant
            classes = dict(zip(o.labels[:2], ((bright, 0.9), (dark, self.dark_score)), strict=False))
        else:  # a fixed model keeps the labels asked for, if any
            every = {"bright": (bright, 0.9), "dark": (dark, self.dark_score)}
            classes = {n: c for n, c in every.items() if not o.labels or n in o.labels}
        threshold = o.score_threshold if o.score_threshold is not None else 0.0
        out = []
        for k, (name, (mask, score)) in enumerate(classes.items()):
            if not mask.any() or score < threshold:
                continue
            ys, xs = np.nonzero(mask)
            instance = Instance(
                box=Box(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)),
                score=score,
                label=Label(k, name, score),
            )
            if request.task == Task.INSTANCE_SEGMENTATION:
                instance.mask = encode_mask(mask)
            if request.task == Task.KEYPOINT_DETECTION:
                b = instance.box
                corners = (("top-left", b.x1, b.y1), ("top-right", b.x2, b.y1), ("bottom-right", b.x2, b.y2))
                instance.keypoints = [Keypoint(n, x, y, 0.9) for n, x, y in corners]
            out.append(instance)
        return out

    @staticmethod
    def _prompted(request: InferenceRequest) -> list[Instance]:
        """One mask: a 9x9 square at each positive point, and each box filled."""
        mask = np.zeros((request.height, request.width), bool)
        for p in request.options.points:
            if p.positive:
                x, y = int(p.x), int(p.y)
                mask[max(y - 4, 0) : y + 5, max(x - 4, 0) : x + 5] = True
        for b in request.options.boxes:
            mask[int(b.y1) : int(np.ceil(b.y2)), int(b.x1) : int(np.ceil(b.x2))] = True
        if not mask.any():
            return []
        encoded = encode_mask(mask)
        return [Instance(box=encoded.bbox, score=0.9, mask=encoded, predicted_iou=0.9)]

    def predict(self, requests: Sequence[InferenceRequest]) -> list[Prediction | ServiceError]:
        out: list[Prediction | ServiceError] = []
        for request in requests:
            timer = StageTimer()
            pre, inference, post = self.stage_ms
            self._sleep(timer, "preprocess_ms", pre)
            with timer.stage("inference_ms"):
                bright, dark = class_masks(request.image)
                if inference:
                    time.sleep(inference / 1000.0)
            prediction = Prediction(timing=timer.timing)
            labels = request.options.labels
            if request.task == Task.PROMPTED_SEGMENTATION:
                prediction.instances = self._prompted(request)
            elif request.task == Task.SEMANTIC_SEGMENTATION:
                indices = np.zeros(bright.shape, np.uint16)
                indices[bright] = 1
                if len(labels) > 1:
                    indices[dark] = 2
                prediction.label_map = LabelMap(["background", *labels], indices)
            elif request.task == Task.ZERO_SHOT_CLASSIFICATION:
                rest = (0.4 / (len(labels) - 1)) if len(labels) > 1 else 0.0
                probs = [0.6 if i == 0 else rest for i in range(len(labels))] if len(labels) > 1 else [1.0]
                prediction.scores = [
                    ClassScore(Label(i, name, p), 0.3 - 0.01 * i)
                    for i, (name, p) in enumerate(zip(labels, probs, strict=True))
                ]
            else:
                prediction.instances = self._instances(request, bright, dark)
            self._sleep(timer, "postprocess_ms", post)
            out.append(prediction)
        return out
