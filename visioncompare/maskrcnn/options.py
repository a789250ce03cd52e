"""Per-request options of Mask R-CNN: checked once, resolved against the settings."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from visioncompare.maskrcnn.categories import LabelSet
from visioncompare.maskrcnn.settings import MaskRCNNSettings
from visioncompare.runtime.errors import InvalidArgument
from visioncompare.runtime.tasks import Range, accepted, check_range
from visioncompare.runtime.types import InferenceRequest, Task, TaskOption

SIZE_DIVISIBLE = 32  # GeneralizedRCNNTransform pads batches to multiples of this
MIN_RESIZE = 32


@dataclass(frozen=True)
class ResolvedOptions:
    score_threshold: float
    max_results: int
    label_ids: frozenset[int] | None  # None: every label
    mask_threshold: float
    min_size: int
    max_size: int
    nms_iou_threshold: float


#: Options the task table applies to Mask R-CNN's tasks that it does not read: its
#: vocabulary is fixed (no prompt templates) and it proposes no masks automatically.
NOT_READ = frozenset({TaskOption.PROMPT_TEMPLATES, TaskOption.AUTOMATIC})


def accepted_options(task: Task) -> tuple[TaskOption, ...]:
    """TaskCapability.accepted_options of `task`; the runtime refuses any other set option."""
    return accepted(task, without=NOT_READ)


def check_image(request: InferenceRequest) -> None:
    image = request.image
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidArgument(f"image must be H x W x 3 uint8 RGB, got {image.shape} {image.dtype}", field="image")
    if min(image.shape[:2]) < 1:
        raise InvalidArgument(f"image has no pixels ({image.shape[1]}x{image.shape[0]})", field="image")


def resolve_options(request: InferenceRequest, settings: MaskRCNNSettings, labels: LabelSet) -> ResolvedOptions:
    """Check a request's option values (raising InvalidArgument) and fill in the defaults.

    Which options the task takes, and the API's ranges, are checked before, by the runtime
    (`accepted_options`, `tasks.check_ranges`); these are Mask R-CNN's own limits."""
    check_image(request)
    o = request.options
    check_range("options.max_results", o.max_results, Range(1, settings.max_detections), " (max_detections)")
    sizes = Range(MIN_RESIZE, settings.max_request_size)
    check_range("options.resize.min_size", o.min_size, sizes)
    check_range("options.resize.max_size", o.max_size, sizes)
    score = settings.score_threshold if o.score_threshold is None else float(o.score_threshold)
    max_results = settings.max_detections if o.max_results is None else int(o.max_results)
    mask = settings.mask_threshold if o.mask_threshold is None else float(o.mask_threshold)
    nms = settings.nms_iou_threshold if o.nms_iou_threshold is None else float(o.nms_iou_threshold)
    min_size = o.min_size or settings.min_size
    max_size = o.max_size or settings.max_size
    return ResolvedOptions(
        score_threshold=score,
        max_results=max_results,
        label_ids=_label_ids(o.labels, labels, settings.max_labels, request.task),
        mask_threshold=mask,
        min_size=int(min_size),
        max_size=int(max_size),
        nms_iou_threshold=nms,
    )


def _label_ids(names: tuple[str, ...], labels: LabelSet, max_labels: int, task: Task) -> frozenset[int] | None:
    if not names:
        return None
    if len(names) > max_labels:
        raise InvalidArgument(
            f"options.labels has {len(names)} names, more than the limit of {max_labels}",
            field="options.labels",
        )
    vocabulary = set(labels.vocabulary)
    unknown = [n for n in dict.fromkeys(names) if n not in vocabulary]
    if unknown:
        raise InvalidArgument(
            f"unknown label(s) {', '.join(map(repr, unknown))} for {task.name}; "
            f"valid labels: {', '.join(labels.vocabulary)}",
            field="options.labels",
            metadata={"valid_labels": ",".join(labels.vocabulary)},
        )
    return labels.ids_of(set(names))


def input_shape(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """The resized (not yet padded) size GeneralizedRCNNTransform gives an image, but at
    least 1 px a side: torchvision's gives 0 px to images more elongated than
    max_size : 1 (`visioncompare.maskrcnn.transform` resizes to this size)."""
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return max(1, math.floor(float(height * scale))), max(1, math.floor(float(width * scale)))


def padded_shape(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    h, w = input_shape(height, width, min_size, max_size)
    return (-(-h // SIZE_DIVISIBLE) * SIZE_DIVISIBLE, -(-w // SIZE_DIVISIBLE) * SIZE_DIVISIBLE)
