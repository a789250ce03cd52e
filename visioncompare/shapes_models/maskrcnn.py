"""The shapes Mask R-CNN: torchvision's MaskRCNN on a narrow ResNet-style backbone with FPN.

About 1.7 M parameters (7 MB in fp32), trained from scratch on the shapes world.
The heads are torchvision's, slimmed to 64 FPN channels.

The shapes Keypoint R-CNN (triangle corners) is torchvision's KeypointRCNN on the same
backbone, RPN and box head, with two classes (background, triangle) and a slim keypoint head.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import Tensor, nn
from torchvision.models.detection import KeypointRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from visioncompare.shapes_models.facts import MASKRCNN_MAX_SIZE, MASKRCNN_MIN_SIZE

FPN_CHANNELS = 64
STAGE_CHANNELS = (32, 48, 96, 128)  # strides 4, 8, 16, 32
MIN_SIZE, MAX_SIZE = MASKRCNN_MIN_SIZE, MASKRCNN_MAX_SIZE
# Fewer proposals and RoI samples than COCO's defaults: scenes hold at most six objects.
SAMPLING = {
    "rpn_pre_nms_top_n_train": 600,
    "rpn_post_nms_top_n_train": 300,
    "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_test": 150,
    "rpn_batch_size_per_image": 128,
    "box_batch_size_per_image": 128,
    "box_detections_per_img": 50,
}


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class NarrowBody(nn.Module):
    """Stem (stride 2) then four stages of two 3x3 convs, each halving the resolution."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 24, 3, 2, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU(inplace=True))
        cin = 24
        for i, cout in enumerate(STAGE_CHANNELS):
            self.add_module(f"layer{i + 1}", _block(cin, cout, 2))
            cin = cout

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        x = self.stem(x)
        out: OrderedDict[str, Tensor] = OrderedDict()
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            out[str(i)] = x
        return out


class NarrowFPNBackbone(nn.Module):
    """`NarrowBody` under a feature pyramid, laid out like torchvision's BackboneWithFPN."""

    def __init__(self) -> None:
        super().__init__()
        self.body = NarrowBody()
        self.fpn = FeaturePyramidNetwork(list(STAGE_CHANNELS), FPN_CHANNELS, extra_blocks=LastLevelMaxPool())
        self.out_channels = FPN_CHANNELS

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return self.fpn(self.body(x))


def _shared_parts(num_classes: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The RPN, box head and settings both models have, so that their weights carry over."""
    return {
        "min_size": MIN_SIZE,
        "max_size": MAX_SIZE,
        **SAMPLING,
        **kwargs,
        "rpn_anchor_generator": AnchorGenerator(
            sizes=((16,), (32,), (64,), (128,), (256,)), aspect_ratios=((0.5, 1.0, 2.0),) * 5
        ),
        "box_head": TwoMLPHead(FPN_CHANNELS * 7 * 7, 256),
        "box_predictor": FastRCNNPredictor(256, num_classes),
    }


def build_shapes_maskrcnn(*, num_classes: int, **kwargs: Any) -> MaskRCNN:
    """MaskRCNN for `num_classes` (background included)."""
    return MaskRCNN(
        NarrowFPNBackbone(),
        num_classes=None,
        **_shared_parts(num_classes, kwargs),
        mask_head=MaskRCNNHeads(FPN_CHANNELS, (64, 64, 64, 64), 1),
        mask_predictor=MaskRCNNPredictor(64, 64, num_classes),
    )


def build_shapes_keypointrcnn(*, num_classes: int, num_keypoints: int, **kwargs: Any) -> KeypointRCNN:
    """KeypointRCNN for `num_classes` (background included) with `num_keypoints` per instance.

    Its backbone, RPN and box head have the Mask R-CNN's layout, so training can start
    from the shapes Mask R-CNN's weights (`shapes.train_keypoints`).
    """
    return KeypointRCNN(
        NarrowFPNBackbone(),
        num_classes=None,
        **_shared_parts(num_classes, kwargs),
        keypoint_head=KeypointRCNNHeads(FPN_CHANNELS, (128,) * 4),
        keypoint_predictor=KeypointRCNNPredictor(128, num_keypoints),
    )
