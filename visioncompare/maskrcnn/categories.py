"""Label sets: torchvision's 91-index COCO list, and names files of fine-tuned checkpoints."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from visioncompare.runtime.errors import ConfigurationError
from visioncompare.shapes_models.vocabulary import CLASSES, TRIANGLE_KEYPOINTS

BACKGROUND = "__background__"
PLACEHOLDER = "N/A"  # torchvision's name for the 11 COCO ids without a category

# torchvision.models.detection.MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"],
# copied so that settings and tests need no torchvision import (a test checks they agree).
COCO_CATEGORIES: tuple[str, ...] = (
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train",
    "truck", "boat", "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter",
    "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
    "giraffe", "N/A", "backpack", "umbrella", "N/A", "N/A", "handbag", "tie", "suitcase",
    "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
    "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "N/A",
    "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

# KeypointRCNN_ResNet50_FPN_Weights.COCO_V1.meta["keypoint_names"]
COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip

PERSON_CATEGORIES: tuple[str, ...] = (BACKGROUND, "person")

# The shapes reference weights' classes and keypoints.
SHAPES_CATEGORIES: tuple[str, ...] = (BACKGROUND, *CLASSES)
SHAPES_KEYPOINT_CATEGORIES: tuple[str, ...] = (BACKGROUND, "triangle")
SHAPES_KEYPOINT_NAMES: tuple[str, ...] = TRIANGLE_KEYPOINTS


@dataclass(frozen=True)
class LabelSet:
    """Class names by model output index; index 0 is the background."""

    names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @cached_property
    def vocabulary(self) -> tuple[str, ...]:
        """The names a client can see or ask for: no background, no placeholders."""
        return tuple(dict.fromkeys(n for n in self.names[1:] if n != PLACEHOLDER))

    @cached_property
    def valid_ids(self) -> frozenset[int]:
        return frozenset(i for i, n in enumerate(self.names) if i > 0 and n != PLACEHOLDER)

    def ids_of(self, names: set[str]) -> frozenset[int]:
        return frozenset(i for i in self.valid_ids if self.names[i] in names)


COCO = LabelSet(COCO_CATEGORIES)
PERSON = LabelSet(PERSON_CATEGORIES)


def read_names(path: Path) -> list[str]:
    """A JSON list of strings, or plain text with one name a line (blank lines skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"categories_file {path}: cannot read it: {exc}") from exc
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"categories_file {path}: invalid JSON: {exc}") from exc
        if not all(isinstance(n, str) for n in names):
            raise ConfigurationError(f"categories_file {path}: the JSON list must hold strings only")
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ConfigurationError(f"categories_file {path}: no names in it")
    return [n.strip() for n in names]


def label_set_from_file(path: Path, num_classes: int | None) -> LabelSet:
    """Names for indices 1..num_classes-1; a leading "__background__" entry is optional."""
    names = read_names(path)
    if names[0] in (BACKGROUND, "background"):
        names = names[1:]
    if num_classes is not None and len(names) != num_classes - 1:
        raise ConfigurationError(
            f"categories_file {path} names {len(names)} classes, but num_classes={num_classes} "
            f"needs {num_classes - 1} (one per class, background excluded)"
        )
    return LabelSet((BACKGROUND, *names))
