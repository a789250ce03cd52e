"""Mask R-CNN and Keypoint R-CNN on ONNX Runtime (`MASKRCNN_ENGINE=onnxruntime`).

The networks' compute runs in ONNX Runtime; torchvision's own code keeps the steps
between them. Each built detector is exported, part by part, through torch.onnx's
TorchScript path (`dynamo=False`, the path torchvision's detection models export on):

- `backbone`: the ResNet-FPN, normalized padded images (N x 3 x H x W, every axis
  dynamic) to the FPN's feature maps;
- `rpn_head`: the RPN's conv head, feature maps to objectness and box deltas per level;
- `box`: the RoI box head and predictor, pooled RoIs (K x C x 7 x 7) to class logits and
  box regression;
- `mask`: the mask head and predictor (K x C x 14 x 14 to K x classes x 28 x 28);
- `keypoint`: the keypoint head and predictor (K x C x 14 x 14 to K x keypoints x 56 x 56).

The parts are put back into the torchvision network as modules that call ONNX Runtime
(`install`), so resizing, anchors, proposal NMS, RoIAlign, per-request score, label and
NMS options and mask pasting are the very code the torch engine runs: every request
option works the same on both engines, and so does batching (the batch axis is dynamic).

The files are cached in `cache_dir/onnx/<SHA-256 of the weights>/` and verified when
loaded (`visioncompare.runtime.engines.cached_export`); a service whose files are missing
exports them at start and logs it. `export-onnx maskrcnn` does the same ahead of time.
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

from visioncompare.runtime.engines import (
    OPSET,
    ExportedFile,
    OrtRunner,
    cached_export,
    state_dict_sha256,
    torch_export,
    weights_sha256,
)

log = logging.getLogger(__name__)

SERVICE = "maskrcnn"


# --- what is exported ------------------------------------------------------------------


class _Backbone(nn.Module):
    def __init__(self, backbone: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.backbone, self.names = backbone, list(names)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        features = self.backbone(images)
        return tuple(features[n] for n in self.names)


class _RpnHead(nn.Module):
    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, *features: Tensor) -> tuple[Tensor, ...]:
        objectness, deltas = self.head(list(features))
        return (*objectness, *deltas)


class _HeadAndPredictor(nn.Module):
    def __init__(self, head: nn.Module, predictor: nn.Module) -> None:
        super().__init__()
        self.head, self.predictor = head, predictor

    def forward(self, x: Tensor) -> Any:
        return self.predictor(self.head(x))


@dataclass(frozen=True)
class Part:
    """One exported piece of a detector: the module, example inputs and the axes that vary."""

    name: str
    module: nn.Module
    inputs: tuple[Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]


def _feature_names(net: GeneralizedRCNN) -> list[str]:
    with torch.inference_mode():
        features = net.backbone(torch.zeros(1, 3, 64, 64))
    return list(features.keys()) if isinstance(features, dict) else ["0"]


def parts(net: GeneralizedRCNN) -> list[Part]:
    """The parts of a built (eval, CPU) detector that run in ONNX Runtime."""
    heads = net.roi_heads
    channels = int(net.backbone.out_channels)
    names = _feature_names(net)
    generator = torch.Generator().manual_seed(0)  # example inputs: torch's global random state untouched
    image = torch.rand(1, 3, 160, 224, generator=generator)
    with torch.inference_mode():
        features = _Backbone(net.backbone, names)(image)
    features = tuple(f.clone() for f in features)
    feature_names = [f"feature_{n}" for n in names]
    levels = range(len(names))
    out: list[Part] = [
        Part(
            "backbone",
            _Backbone(net.backbone, names),
            (image,),
            ["images"],
            feature_names,
            {"images": {0: "batch", 2: "height", 3: "width"}}
            | {f: {0: "batch", 2: f"h{i}", 3: f"w{i}"} for i, f in enumerate(feature_names)},
        ),
        Part(
            "rpn_head",
            _RpnHead(net.rpn.head),
            features,
            feature_names,
            [f"objectness_{i}" for i in levels] + [f"deltas_{i}" for i in levels],
            {f: {0: "batch", 2: f"h{i}", 3: f"w{i}"} for i, f in enumerate(feature_names)}
            | {f"objectness_{i}": {0: "batch", 2: f"h{i}", 3: f"w{i}"} for i in levels}
            | {f"deltas_{i}": {0: "batch", 2: f"h{i}", 3: f"w{i}"} for i in levels},
        ),
    ]

    def roi_part(name: str, head: nn.Module, predictor: nn.Module, pool: Any, outputs: list[str]) -> Part:
        size = pool.output_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        rois = torch.rand(3, channels, *size, generator=generator)
        return Part(
            name,
            _HeadAndPredictor(head, predictor),
            (rois,),
            ["rois"],
            outputs,
            {"rois": {0: "rois"}} | {o: {0: "rois"} for o in outputs},
        )

    box_outputs = ["class_logits", "box_regression"]
    out.append(roi_part("box", heads.box_head, heads.box_predictor, heads.box_roi_pool, box_outputs))
    if heads.mask_head is not None and heads.mask_predictor is not None:
        out.append(roi_part("mask", heads.mask_head, heads.mask_predictor, heads.mask_roi_pool, ["mask_logits"]))
    if heads.keypoint_head is not None and heads.keypoint_predictor is not None:
        head, predictor, pool = heads.keypoint_head, heads.keypoint_predictor, heads.keypoint_roi_pool
        out.append(roi_part("keypoint", head, predictor, pool, ["keypoint_logits"]))
    return out


def export_part(part: Part, path: Path) -> None:
    """torch.onnx's TorchScript exporter (dynamo=False), as torchvision's detection models export."""
    torch_export(
        part.module,
        part.inputs,
        path,
        input_names=part.input_names,
        output_names=part.output_names,
        dynamic_axes=part.dynamic_axes,
        opset=OPSET,
    )


# --- what runs ---------------------------------------------------------------------------


class OrtPart(nn.Module):
    """Runs one exported part in an ONNX Runtime session, taking and giving torch tensors.

    Tensors go through host memory (numpy; no copy on CPU). An empty RoI batch (no
    proposal, no detection) is answered without calling ONNX Runtime, with the shapes
    a one-RoI batch gives.
    """

    def __init__(self, session: Any, name: str) -> None:
        super().__init__()
        self.session, self.part = session, name
        self.input_names = [i.name for i in session.get_inputs()]

    def run(self, *inputs: Tensor) -> list[Tensor]:
        device = inputs[0].device
        if inputs[0].shape[0] == 0:
            one = [torch.zeros((1, *x.shape[1:]), dtype=torch.float32) for x in inputs]
            return [o[:0].to(device) for o in self.run(*one)]
        feeds = {
            name: np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
            for name, x in zip(self.input_names, inputs, strict=True)
        }
        outputs = self.session.run(None, feeds)
        return [torch.from_numpy(o).to(device) for o in outputs]

    def extra_repr(self) -> str:
        return f"part={self.part!r}, onnxruntime"


class OrtBackbone(OrtPart):
    def __init__(self, session: Any, names: Sequence[str], out_channels: int) -> None:
        super().__init__(session, "backbone")
        self.names, self.out_channels = list(names), out_channels

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        return OrderedDict(zip(self.names, self.run(images), strict=True))


class OrtRpnHead(OrtPart):
    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        outputs = self.run(*features)
        n = len(features)
        return outputs[:n], outputs[n:]


class OrtBoxPredictor(OrtPart):
    def forward(self, rois: Tensor) -> tuple[Tensor, Tensor]:
        logits, regression = self.run(rois)
        return logits, regression


class OrtHeadPredictor(OrtPart):
    def forward(self, rois: Tensor) -> Tensor:
        return self.run(rois)[0]


# --- export, cache, install ----------------------------------------------------------------


@dataclass(frozen=True)
class Installed:
    files: tuple[ExportedFile, ...]
    weights_sha256: str


def export_config(arch_name: str, source: str, part: str, net: GeneralizedRCNN) -> dict[str, Any]:
    """What an exported file depends on besides the weights' bytes (its cache key)."""
    return {
        "service": SERVICE,
        "arch": arch_name,
        "weights_source": source,  # e.g. torchvision:COCO_V1 sets FrozenBatchNorm's eps
        "part": part,
        "num_classes": int(net.roi_heads.box_predictor.cls_score.out_features),
        "opset": OPSET,
        "torch": torch.__version__,
    }


def export_and_install(
    net: GeneralizedRCNN,
    *,
    arch_name: str,
    source: str,
    weights_path: Path | None,
    cache_dir: Path,
    runner: OrtRunner,
) -> Installed:
    """Export (or find cached and verified) every part of `net` and put ONNX Runtime
    sessions in their place. `net` must be in eval mode with its weights loaded; its
    replaced modules (and their parameters) are dropped."""
    digest = weights_sha256(weights_path) if weights_path is not None else state_dict_sha256(net.state_dict())
    device = next(iter(net.parameters())).device
    net.to("cpu")
    files: list[ExportedFile] = []
    sessions: dict[str, Any] = {}
    names = _feature_names(net)
    for part in parts(net):
        config = export_config(arch_name, source, part.name, net)
        exported = cached_export(
            cache_dir, digest, f"{arch_name}.{part.name}", config, functools.partial(export_part, part), service=SERVICE
        )
        files.append(exported)
        sessions[part.name] = runner.session(exported.path, f"{arch_name} {part.name}")
    heads = net.roi_heads
    out_channels = int(net.backbone.out_channels)
    net.backbone = OrtBackbone(sessions["backbone"], names, out_channels)
    net.rpn.head = OrtRpnHead(sessions["rpn_head"], "rpn_head")
    heads.box_head, heads.box_predictor = nn.Identity(), OrtBoxPredictor(sessions["box"], "box")
    if "mask" in sessions:
        heads.mask_head, heads.mask_predictor = nn.Identity(), OrtHeadPredictor(sessions["mask"], "mask")
    if "keypoint" in sessions:
        heads.keypoint_head = nn.Identity()
        heads.keypoint_predictor = OrtHeadPredictor(sessions["keypoint"], "keypoint")
    net.to(device)
    return Installed(tuple(files), digest)
