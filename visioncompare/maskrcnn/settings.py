"""Settings of the Mask R-CNN service, read from MASKRCNN_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from visioncompare.maskrcnn.categories import COCO_CATEGORIES
from visioncompare.maskrcnn.weights import parse_weights_source, scheme_of
from visioncompare.runtime.settings import ModelServerSettings
from visioncompare.runtime.weights import WeightsSpec
from visioncompare.shapes_models.facts import MASKRCNN_MAX_SIZE, MASKRCNN_MIN_SIZE, SHAPES

# The presets. shapes (the default when no weights are named): the shipped shapes reference
# weights with their own architecture and five classes, the input size they were trained at
# (visioncompare.shapes_models.facts), a score threshold and class-agnostic NMS (one
# object, one label, as SAM-CLIP's open-vocabulary results have), and the shipped keypoint
# model (triangle corners: it is small and local). On 100 held-out scenes with the shipped
# weights (a match: same class, mask IoU >= 0.5), precision / recall at 0.5, 0.6, 0.7, 0.8 are
# 0.835/0.808, 0.876/0.798, 0.919/0.777, 0.951/0.764 (F1 0.821, 0.835, 0.842, 0.847); per-class
# NMS at 0.7 gives 0.895/0.780 (F1 0.833). 0.7 keeps recall for the comparison at almost the
# best F1. coco: torchvision's COCO checkpoints of the variant (`fetch-weights maskrcnn`).
PRESETS: dict[str, dict[str, Any]] = {
    SHAPES: {
        "weights": SHAPES,
        "min_size": MASKRCNN_MIN_SIZE,
        "max_size": MASKRCNN_MAX_SIZE,
        "score_threshold": 0.7,
        "class_agnostic_nms": True,
        "keypoints_enabled": True,
        "keypoint_weights": SHAPES,
    },
    "coco": {"weights": "torchvision:COCO_V1", "keypoint_weights": "torchvision:COCO_V1"},
}


def _default_cache_dir() -> Path:
    """torch.hub's root: TORCH_HOME, else ./models (as `fetch-weights` defaults)."""
    return Path(os.environ.get("TORCH_HOME", "models"))


class MaskRCNNSettings(ModelServerSettings):
    """Everything the Mask R-CNN service can be told; validated once at start-up.

    Presets (`PRESETS`; `preset`, or implied by the weights): "shapes", the default, and
    "coco" (torchvision:COCO_V1). Weights: "shapes" (reference weights shipped in
    visioncompare/shapes_models/weights/, trained on synthetic data, with their own architecture, five classes
    and input size), "torchvision:COCO_V1" (the variant's torchvision checkpoint in
    `cache_dir/hub/checkpoints`, put there by `fetch-weights maskrcnn`),
    "file:/path/to/state_dict.pth", or "random". A fine-tuned checkpoint also needs
    `num_classes` (with background) and/or a `categories_file` of class names.
    """

    model_config = SettingsConfigDict(env_prefix="MASKRCNN_", extra="forbid", frozen=True)
    supported_engines = ("torch", "onnxruntime")
    # engine=auto: ONNX Runtime on CPU, measured faster by bench/engines.py (one run, 2 cores: shapes
    # instance segmentation 1.67x, keypoints 0.97x; R50-FPN at 800/1333 detection 1.22x, instance
    # segmentation 1.43x, Keypoint R-CNN 1.60x); torch on CUDA, where it was not measured.
    measured_engines = {"cpu": "onnxruntime"}
    presets = PRESETS
    preset_identity = ("weights",)

    # --- model and weights -------------------------------------------------------------
    variant: Literal["v1", "v2"] = Field("v1", description="maskrcnn_resnet50_fpn or _v2")
    weights: str = Field(
        "shapes", description="shapes (shipped reference weights) | torchvision:NAME | file:/path | random"
    )
    num_classes: int | None = Field(None, ge=2, le=10_000, description="with background")
    categories_file: Path | None = Field(None, description="JSON list or one name a line")
    cache_dir: Path = Field(default_factory=_default_cache_dir, description="torch.hub root")
    seed: int = Field(0, description="seed of the random init (random weights are reproducible)")
    keypoints_enabled: bool = Field(False, description="also load Keypoint R-CNN (on in the shapes preset)")
    keypoint_weights: str = Field(
        "torchvision:COCO_V1", description="as for weights (shapes: triangle corners, the shapes preset's)"
    )

    # --- defaults of per-request options ------------------------------------------------
    score_threshold: float = Field(0.5, ge=0.0, le=1.0)
    mask_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    nms_iou_threshold: float = Field(0.5, gt=0.0, le=1.0, description="per-class box NMS")
    class_agnostic_nms: bool = Field(
        False, description="also suppress a box overlapping a better box of another class (one object, one label)"
    )
    max_detections: int = Field(100, ge=1, le=1000, description="also the per-request ceiling")
    min_size: int = Field(800, ge=32, le=8192, description="resize: shorter side target")
    max_size: int = Field(1333, ge=32, le=8192, description="resize: longer side cap")

    # --- request limits -------------------------------------------------------------------
    max_request_size: int = Field(2048, ge=32, le=8192, description="largest per-request resize")
    max_labels: int = Field(256, ge=1, le=10_000, description="most names in a class filter")
    batch_mixed_sizes: bool = Field(
        False,
        description="batch images whose padded input shapes differ (more throughput, but "
        "zero padding then shifts results slightly with what else is in the batch)",
    )

    @field_validator("weights", "keypoint_weights")
    @classmethod
    def _check_source(cls, value: str) -> str:
        parse_weights_source(value)
        return value.strip()

    @property
    def weights_source(self) -> WeightsSpec:
        return parse_weights_source(self.weights)

    @property
    def keypoint_weights_source(self) -> WeightsSpec:
        return parse_weights_source(self.keypoint_weights)

    @classmethod
    def implied_preset(cls, given: dict[str, Any]) -> str | None:
        """The preset whose weights are given (shapes when none are); none for other weights."""
        weights = str(given.get("weights", PRESETS[SHAPES]["weights"])).strip()
        return next((name for name, preset in PRESETS.items() if preset["weights"] == weights), None)

    @model_validator(mode="after")
    def _check_model(self) -> Self:
        scheme = scheme_of(self.weights_source)
        if scheme.names_classes or scheme.categories is not None:
            classes = len(scheme.categories or COCO_CATEGORIES)
            if self.num_classes not in (None, classes):
                raise ValueError(
                    f"num_classes={self.num_classes} does not fit weights={self.weights}, which have "
                    f"{classes} classes; use file:/path for a fine-tuned checkpoint"
                )
            if self.categories_file is not None:
                raise ValueError(
                    f"categories_file is for fine-tuned checkpoints; weights={self.weights} "
                    "come with their own class names"
                )
        if self.categories_file is not None and not self.categories_file.is_file():
            raise ValueError(f"categories_file: no such file: {self.categories_file}")
        if self.num_classes not in (None, 91) and self.categories_file is None:
            raise ValueError(f"num_classes={self.num_classes} needs categories_file naming the classes")
        if self.min_size > self.max_request_size or self.max_size > self.max_request_size:
            raise ValueError("min_size and max_size must not exceed max_request_size")
        return self
