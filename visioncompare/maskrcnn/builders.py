"""One builder per architecture, as torchvision builds it when it loads trained weights.

torchvision's public builders switch to plain BatchNorm when called without weights;
the trained checkpoints of v1 and Keypoint R-CNN belong to a FrozenBatchNorm backbone.
These builders always build the trained structure, so a checkpoint in torchvision's
layout loads strictly, and "random" weights run the very network that trained ones do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn
from torchvision.models import WeightsEnum
from torchvision.models.detection import (
    KeypointRCNN,
    KeypointRCNN_ResNet50_FPN_Weights,
    MaskRCNN,
    MaskRCNN_ResNet50_FPN_V2_Weights,
    MaskRCNN_ResNet50_FPN_Weights,
    maskrcnn_resnet50_fpn_v2,
)
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

from visioncompare.maskrcnn.categories import COCO_KEYPOINT_NAMES, SHAPES_KEYPOINT_NAMES
from visioncompare.shapes_models.facts import SHAPES

TRAINABLE_LAYERS = 3  # torchvision's default when it builds with trained weights


def _frozen_resnet50_fpn() -> nn.Module:
    return resnet_fpn_backbone(
        backbone_name="resnet50",
        weights=None,
        norm_layer=FrozenBatchNorm2d,
        trainable_layers=TRAINABLE_LAYERS,
    )


def build_maskrcnn_v1(*, num_classes: int, **kwargs: Any) -> MaskRCNN:
    """`maskrcnn_resnet50_fpn` (He et al. 2017; box AP 37.9, mask AP 34.6)."""
    return MaskRCNN(_frozen_resnet50_fpn(), num_classes=num_classes, **kwargs)


def build_maskrcnn_v2(*, num_classes: int, **kwargs: Any) -> MaskRCNN:
    """`maskrcnn_resnet50_fpn_v2` (Li et al. 2021; box AP 47.4, mask AP 41.8).

    torchvision's builder gives v2 the same (BatchNorm) structure with or without weights.
    """
    return maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)


def build_keypointrcnn(*, num_classes: int, **kwargs: Any) -> KeypointRCNN:
    """`keypointrcnn_resnet50_fpn` with the 17 COCO keypoints."""
    return KeypointRCNN(
        _frozen_resnet50_fpn(),
        num_classes=num_classes,
        num_keypoints=len(COCO_KEYPOINT_NAMES),
        **kwargs,
    )


def build_shapes(*, num_classes: int, **kwargs: Any) -> MaskRCNN:
    """The shapes reference model: torchvision's MaskRCNN on a narrow ResNet-style FPN."""
    from visioncompare.shapes_models.maskrcnn import build_shapes_maskrcnn

    return build_shapes_maskrcnn(num_classes=num_classes, **kwargs)


def build_shapes_keypoints(*, num_classes: int, **kwargs: Any) -> KeypointRCNN:
    """The shapes reference keypoint model: KeypointRCNN for triangle corners on the same FPN."""
    from visioncompare.shapes_models.maskrcnn import build_shapes_keypointrcnn

    return build_shapes_keypointrcnn(num_classes=num_classes, num_keypoints=len(SHAPES_KEYPOINT_NAMES), **kwargs)


@dataclass(frozen=True)
class ArchSpec:
    """An architecture: its builder, torchvision weights enum and quirks."""

    name: str  # torchvision's builder name, e.g. "maskrcnn_resnet50_fpn"
    build: Callable[..., nn.Module]
    weights_enum: type[WeightsEnum] | None  # None: no torchvision checkpoints
    # torchvision sets FrozenBatchNorm eps to 0 for these weights (pytorch/vision#2933).
    eps_zero_weights: frozenset[str] = frozenset()
    title: str = ""  # for the model card, e.g. "ResNet-50-FPN v2"
    keypoint_names: tuple[str, ...] = ()  # a keypoint network's keypoints, in output order
    shipped_weights: str | None = None  # its file in shapes_models/weights/ (weights=shapes), without .pth


ARCHS: dict[str, ArchSpec] = {
    "v1": ArchSpec(
        "maskrcnn_resnet50_fpn",
        build_maskrcnn_v1,
        MaskRCNN_ResNet50_FPN_Weights,
        frozenset({"COCO_V1"}),
        "ResNet-50-FPN v1 (the paper's recipe)",
    ),
    "v2": ArchSpec(
        "maskrcnn_resnet50_fpn_v2",
        build_maskrcnn_v2,
        MaskRCNN_ResNet50_FPN_V2_Weights,
        title="ResNet-50-FPN v2 (Li et al. 2021 recipe)",
    ),
    SHAPES: ArchSpec(
        "shapes_maskrcnn",
        build_shapes,
        None,
        title="narrow ResNet-FPN (shapes reference model, 1.7 M parameters)",
        shipped_weights="maskrcnn_shapes",
    ),
    "keypoints": ArchSpec(
        "keypointrcnn_resnet50_fpn",
        build_keypointrcnn,
        KeypointRCNN_ResNet50_FPN_Weights,
        frozenset({"COCO_V1"}),
        "Keypoint R-CNN ResNet-50-FPN",
        keypoint_names=COCO_KEYPOINT_NAMES,
    ),
    "shapes_keypoints": ArchSpec(
        "shapes_keypointrcnn",
        build_shapes_keypoints,
        None,
        title="narrow ResNet-FPN Keypoint R-CNN (shapes reference model: triangle corners)",
        keypoint_names=SHAPES_KEYPOINT_NAMES,
        shipped_weights="keypointrcnn_shapes",
    ),
}


def set_frozen_bn_eps(model: nn.Module, eps: float) -> None:
    for module in model.modules():
        if isinstance(module, FrozenBatchNorm2d):
            module.eps = eps


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
