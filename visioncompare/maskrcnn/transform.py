"""torchvision's GeneralizedRCNNTransform with a resize that never makes a side 0 px.

torchvision scales an image by min(min_size / shorter side, max_size / longer side)
and floors each side. An image more elongated than max_size : 1 (a 1 x 289 strip
with max_size 288, or 4000 x 1) then gets a side of 0 px and interpolation fails.
Here each side is at least 1 px; every other size is the one torchvision computes,
and the interpolation is the same call, so results are unchanged. Boxes, masks and
keypoints go back to image pixels by the actual resized size, as before.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from visioncompare.maskrcnn.options import input_shape


class AnyAspectTransform(GeneralizedRCNNTransform):
    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor] | None]:
        if self.training or target is not None or self.fixed_size is not None:
            return super().resize(image, target)  # training keeps torchvision's own path
        height, width = (int(n) for n in image.shape[-2:])
        size = input_shape(height, width, self.min_size[-1], self.max_size)
        resized = torch.nn.functional.interpolate(image[None], size=size, mode="bilinear", align_corners=False)
        return resized[0], None


def use_any_aspect_transform(net: torch.nn.Module) -> None:
    """Give a built detector the safe resize (same module and settings, one method changed)."""
    transform = net.transform
    if not isinstance(transform, GeneralizedRCNNTransform):
        raise TypeError(f"expected torchvision GeneralizedRCNNTransform, got {type(transform).__name__}")
    transform.__class__ = AnyAspectTransform
