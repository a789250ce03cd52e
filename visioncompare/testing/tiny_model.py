"""A tiny, deterministic test model: finds the bright pixels of an image.

It serves OBJECT_DETECTION and INSTANCE_SEGMENTATION with one instance, the box
and mask of pixels whose mean channel value exceeds 127, labelled "bright".
Knobs let tests block loading, slow inference and count batches.
"""

from __future__ import annotations

import threading
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
    InferenceRequest,
    Instance,
    Label,
    ModelCard,
    Prediction,
    PromptKind,
    RuntimeInfo,
    Task,
    Vocabulary,
)


class BrightSpotModel(VisionModel):
    name = "bright"

    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        load_gate: threading.Event | None = None,
        name: str = "bright",
        tasks: tuple[Task, ...] = (Task.OBJECT_DETECTION, Task.INSTANCE_SEGMENTATION),
    ) -> None:
        self.name = name
        self.tasks = tasks
        self.delay_s = delay_s
        self.load_gate = load_gate
        self.batches: list[int] = []  # sizes of the batches predict() saw
        self.seen_request_ids: list[str] = []
        self.warmed_up = False
        self.loaded = False

    def load(self) -> None:
        if self.load_gate is not None:
            self.load_gate.wait(30)
        self.loaded = True

    def warmup(self) -> None:
        self.predict([InferenceRequest(Task.OBJECT_DETECTION, np.zeros((8, 8, 3), np.uint8))])
        self.batches.clear()
        self.seen_request_ids.clear()
        self.warmed_up = True

    def capabilities(self) -> Capabilities:
        return Capabilities(
            card=ModelCard(
                f"Bright spot ({self.name})", "tests", "open", "vision", "2026-11", 0, "MIT", "", "test model"
            ),
            tasks=tuple(
                task_capability(t, Vocabulary.NONE, prompt_kinds=(PromptKind.POINT,))
                if t == Task.PROMPTED_SEGMENTATION
                else task_capability(t, Vocabulary.FIXED, ("bright",))
                for t in self.tasks
            ),
            runtime=RuntimeInfo("cpu", "torch", "fp32", "random", False, 8, "test", warnings=("random weights",)),
        )

    def validate(self, request: InferenceRequest) -> None:
        super().validate(request)
        if request.task == Task.PROMPTED_SEGMENTATION and not request.options.points:
            raise InvalidArgument("prompted segmentation needs a point prompt", field="options.prompts.points")
        for label in request.options.labels:
            if label != "bright":
                raise InvalidArgument(f"unknown label {label!r}; valid labels: bright", field="options.labels")

    @staticmethod
    def _square_at_prompt(request: InferenceRequest) -> Instance:
        """A 9x9 mask centred on the first point prompt: lets tests check coordinates."""
        point = request.options.points[0]
        mask = np.zeros((request.height, request.width), bool)
        x, y = int(point.x), int(point.y)
        mask[max(y - 4, 0) : y + 5, max(x - 4, 0) : x + 5] = True
        encoded = encode_mask(mask)
        return Instance(box=encoded.bbox, score=0.9, mask=encoded, predicted_iou=0.9)

    def predict(self, requests: Sequence[InferenceRequest]) -> list[Prediction | ServiceError]:
        self.batches.append(len(requests))
        self.seen_request_ids.extend(r.request_id for r in requests)
        if self.delay_s:
            time.sleep(self.delay_s)
        out: list[Prediction | ServiceError] = []
        for request in requests:
            timer = StageTimer()
            with timer.stage("inference_ms"):
                bright = request.image.mean(axis=2) > 127
            instances = []
            if request.task == Task.PROMPTED_SEGMENTATION:
                instances = [self._square_at_prompt(request)]
            elif bright.any():
                ys, xs = np.nonzero(bright)
                instance = Instance(
                    box=Box(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)),
                    score=1.0,
                    label=Label(0, "bright", 1.0),
                )
                if request.task == Task.INSTANCE_SEGMENTATION:
                    instance.mask = encode_mask(bright)
                instances.append(instance)
            out.append(Prediction(instances=instances, timing=timer.timing))
        return out
