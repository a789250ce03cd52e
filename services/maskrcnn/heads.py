"""RoI heads whose top-k cut comes after a per-image class filter.

torchvision's RoIHeads keeps the `detections_per_img` best boxes of any class. A
class filter applied afterwards would lose "cat" boxes ranked below 100 others, and
torchvision's "N/A" placeholder classes would take places in the top k. Box NMS is
per class, so filtering classes after NMS and then cutting to the top k equals
running the detector on the wanted classes alone.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads


class FilteredRoIHeads(RoIHeads):
    """Set `label_filters` (one tensor of allowed label ids per image) around a forward."""

    label_filters: list[Tensor] | None = None

    def postprocess_detections(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        filters = self.label_filters
        if filters is None:
            return super().postprocess_detections(class_logits, box_regression, proposals, image_shapes)
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
            index = torch.nonzero(torch.isin(lab, allowed.to(lab.device))).flatten()[:limit]
            for out, value in zip(kept, (b, s, lab), strict=True):
                out.append(value[index])
        return kept


def use_filtered_heads(net: torch.nn.Module) -> None:
    """Give a built detector the filtering heads (same modules and state, one more method)."""
    heads = net.roi_heads
    if not isinstance(heads, RoIHeads):
        raise TypeError(f"expected torchvision RoIHeads, got {type(heads).__name__}")
    heads.__class__ = FilteredRoIHeads
