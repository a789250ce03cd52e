"""RoI heads whose top-k cut comes after a per-image class filter, with an optional
class-agnostic NMS.

torchvision's RoIHeads keeps the `detections_per_img` best boxes of any class. A
class filter applied afterwards would lose "cat" boxes ranked below 100 others, and
torchvision's "N/A" placeholder classes would take places in the top k. Box NMS is
per class, so filtering classes after NMS and then cutting to the top k equals
running the detector on the wanted classes alone. Class-agnostic NMS runs on the
filtered boxes, so a box of an unwanted class never suppresses a wanted one.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import nms


class FilteredRoIHeads(RoIHeads):
    """Set `label_filters` (one tensor of allowed label ids per image) around a forward."""

    label_filters: list[Tensor] | None = None
    #: Also suppress boxes that overlap a better box of another class (IoU > nms_thresh):
    #: one object, one label, as torchvision's per-class NMS does not ensure.
    class_agnostic_nms: bool = False
    detections_per_img: int  # RoIHeads' (torchvision ships no types)

    def postprocess_detections(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        if self.label_filters is None and not self.class_agnostic_nms:
            return super().postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        filters: list[Tensor | None] = [None] * len(proposals)
        if self.label_filters is not None:
            filters = list(self.label_filters)
        limit = self.detections_per_img
        self.detections_per_img = sys.maxsize
        try:
            boxes, scores, labels = super().postprocess_detections(
                class_logits, box_regression, proposals, image_shapes
            )
        finally:
            self.detections_per_img = limit
        kept: tuple[list[Tensor], list[Tensor], list[Tensor]] = ([], [], [])
        for b, s, lab, allowed in zip(boxes, scores, labels, filters, strict=True):
            index = torch.arange(len(lab), device=lab.device)  # best first, as torchvision returns them
            if allowed is not None:
                index = index[torch.isin(lab, allowed.to(lab.device))]
            if self.class_agnostic_nms:
                index = index[nms(b[index], s[index], self.nms_thresh)]
            index = index[:limit]
            for out, value in zip(kept, (b, s, lab), strict=True):
                out.append(value[index])
        return kept


def use_filtered_heads(net: torch.nn.Module) -> FilteredRoIHeads:
    """Give a built detector the filtering heads (same modules and state, one more method);
    returns them."""
    heads = net.roi_heads
    if not isinstance(heads, RoIHeads):
        raise TypeError(f"expected torchvision RoIHeads, got {type(heads).__name__}")
    heads.__class__ = FilteredRoIHeads
    return heads
