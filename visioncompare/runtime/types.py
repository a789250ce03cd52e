"""Domain types: what models take and return, free of protobuf.

The servicer converts protobuf to these and back (`visioncompare.runtime.convert`).
Coordinates are pixels of the original (EXIF-corrected) image.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


class Task(enum.IntEnum):
    """Mirrors visioncompare.v1.Task value for value."""

    OBJECT_DETECTION = 1
    INSTANCE_SEGMENTATION = 2
    KEYPOINT_DETECTION = 3
    ZERO_SHOT_CLASSIFICATION = 4
    PROMPTED_SEGMENTATION = 5
    AUTOMATIC_SEGMENTATION = 6
    SEMANTIC_SEGMENTATION = 7


class Vocabulary(enum.IntEnum):
    NONE = 1
    FIXED = 2
    OPEN = 3


class PromptKind(enum.IntEnum):
    POINT = 1
    BOX = 2
    TEXT = 3


class TaskOption(enum.IntEnum):
    """The fields of visioncompare.v1.TaskOptions; values are their field numbers
    (mirrors visioncompare.v1.TaskOption value for value)."""

    SCORE_THRESHOLD = 1
    MAX_RESULTS = 2
    LABELS = 3
    PROMPT_TEMPLATES = 4
    MASK_THRESHOLD = 5
    RESIZE = 6
    PROMPTS = 7
    AUTOMATIC = 8
    NMS_IOU_THRESHOLD = 9

    @property
    def field(self) -> str:
        """The field's path in a request, as error messages and field violations name it."""
        return f"options.{self.name.lower()}"


@dataclass(frozen=True)
class Box:
    x1: float
    y1: float
    x2: float
    y2: float

    def as_list(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    positive: bool = True


@dataclass(frozen=True)
class AutomaticOptions:
    points_per_side: int | None = None
    pred_iou_thresh: float | None = None
    stability_score_thresh: float | None = None
    min_mask_region_area: int | None = None


@dataclass(frozen=True)
class TaskOptions:
    """Per-request options; None means the model's default."""

    score_threshold: float | None = None
    max_results: int | None = None
    labels: tuple[str, ...] = ()
    prompt_templates: tuple[str, ...] = ()
    mask_threshold: float | None = None
    min_size: int | None = None
    max_size: int | None = None
    points: tuple[Point, ...] = ()
    boxes: tuple[Box, ...] = ()
    multimask_output: bool = False
    automatic: AutomaticOptions = field(default_factory=AutomaticOptions)
    nms_iou_threshold: float | None = None

    def given(self) -> tuple[TaskOption, ...]:
        """The options this request sets, in field order."""
        return self._given

    @cached_property
    def _given(self) -> tuple[TaskOption, ...]:  # once per instance: requests that set none share one
        is_set = (
            self.score_threshold is not None,
            self.max_results is not None,
            bool(self.labels),
            bool(self.prompt_templates),
            self.mask_threshold is not None,
            self.min_size is not None or self.max_size is not None,
            bool(self.points or self.boxes or self.multimask_output),
            self.automatic != _NO_AUTOMATIC,
            self.nms_iou_threshold is not None,
        )
        return tuple(option for option, flag in zip(_OPTION_ORDER, is_set, strict=True) if flag)


_NO_AUTOMATIC = AutomaticOptions()
#: TaskOption in the order of TaskOptions._given's flags.
_OPTION_ORDER = (
    TaskOption.SCORE_THRESHOLD,
    TaskOption.MAX_RESULTS,
    TaskOption.LABELS,
    TaskOption.PROMPT_TEMPLATES,
    TaskOption.MASK_THRESHOLD,
    TaskOption.RESIZE,
    TaskOption.PROMPTS,
    TaskOption.AUTOMATIC,
    TaskOption.NMS_IOU_THRESHOLD,
)


@dataclass
class InferenceRequest:
    """One decoded request as a model sees it."""

    task: Task
    image: np.ndarray  # H x W x 3, uint8, RGB
    options: TaskOptions = field(default_factory=TaskOptions)
    request_id: str = ""

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @cached_property
    def image_digest(self) -> str:
        """SHA-256 of the decoded pixels and their shape: a content key for caches."""
        h = hashlib.sha256(repr(self.image.shape).encode())
        h.update(np.ascontiguousarray(self.image).data)
        return h.hexdigest()


@dataclass(frozen=True)
class Label:
    id: int
    name: str
    score: float


@dataclass(frozen=True)
class RleMask:
    """COCO compressed RLE, as pycocotools.mask.encode writes it."""

    height: int
    width: int
    counts: bytes


@dataclass(frozen=True)
class Mask:
    rle: RleMask
    bbox: Box
    area: int


@dataclass(frozen=True)
class Keypoint:
    name: str
    x: float
    y: float
    score: float


@dataclass
class Instance:
    box: Box
    score: float
    label: Label | None = None
    mask: Mask | None = None
    keypoints: list[Keypoint] = field(default_factory=list)
    predicted_iou: float | None = None
    stability_score: float | None = None


@dataclass
class LabelMap:
    class_names: list[str]  # index 0 is "background"
    indices: np.ndarray  # H x W, uint16


@dataclass(frozen=True)
class ClassScore:
    label: Label  # score = softmax probability
    similarity: float  # raw cosine similarity


@dataclass
class Timing:
    queue_ms: float = 0.0
    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0


@dataclass
class Prediction:
    """A model's answer to one InferenceRequest."""

    instances: list[Instance] = field(default_factory=list)
    label_map: LabelMap | None = None
    scores: list[ClassScore] = field(default_factory=list)
    timing: Timing = field(default_factory=Timing)
    warnings: list[str] = field(default_factory=list)
    batch_size: int = 1


# --- Capabilities -----------------------------------------------------------


@dataclass(frozen=True)
class ModelCard:
    name: str
    organization: str
    category: str
    modality: str
    release_date: str  # YYYY-MM
    parameter_count: int
    license: str
    paper_url: str
    description: str
    features: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskCapability:
    task: Task
    vocabulary: Vocabulary
    label_names: tuple[str, ...] = ()
    prompt_kinds: tuple[PromptKind, ...] = ()
    #: The TaskOptions fields the model reads for this task; the runtime refuses any
    #: other (`visioncompare.runtime.tasks.check_options`). `visioncompare.runtime.tasks.task_capability`
    #: makes a capability that reads every option the task table applies to the task.
    accepted_options: tuple[TaskOption, ...] = field(kw_only=True)


@dataclass(frozen=True)
class ModelComponent:
    name: str
    weights: str
    pretrained: bool
    parameter_count: int


@dataclass(frozen=True)
class RuntimeInfo:
    device: str
    engine: str  # "torch" or "onnxruntime"
    precision: str
    weights: str
    pretrained: bool
    max_batch_size: int
    software_version: str
    components: tuple[ModelComponent, ...] = ()
    warnings: tuple[str, ...] = ()
    preset: str = ""  # the settings preset, e.g. "shapes"; "" when none


@dataclass(frozen=True)
class Capabilities:
    card: ModelCard
    tasks: tuple[TaskCapability, ...]
    runtime: RuntimeInfo

    def capability(self, task: Task) -> TaskCapability | None:
        return next((t for t in self.tasks if t.task == task), None)
