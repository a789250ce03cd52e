"""The interface between the SAM-CLIP tasks and the networks that run them.

`SamClipModel` implements every task on top of `SamClipBackend`. Two backends
exist: `ComposedSamOpenClip` (Segment Anything + OpenCLIP, two backbones: CLIP
re-encodes a crop of every mask) and `MergedSamClipBackend` (the paper's merged
model: one backbone, a SAM head and a CLIP head whose patch tokens label masks
and pixels). Backends hold no per-request state: everything a request needs
travels in the arguments and return values below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from visioncompare.runtime.masks import decode_rle
from visioncompare.runtime.types import Mask, ModelComponent


@dataclass(frozen=True)
class ImageEmbedding:
    """The image encoder's output for one image, plus the geometry to map back."""

    features: Any  # torch.Tensor, 1 x C x h x w
    original_size: tuple[int, int]  # (H, W) of the request image
    input_size: tuple[int, int]  # (h, w) after ResizeLongestSide, before padding
    clip_tokens: Any = None  # merged backends: the CLIP head's tokens, 1 x h x w x C

    @property
    def nbytes(self) -> int:
        tensors = [t for t in (self.features, self.clip_tokens) if t is not None]
        return int(sum(t.element_size() * t.nelement() for t in tensors))


@dataclass(frozen=True)
class MaskPrompts:
    """Prompts in original-image pixels. Each box is its own query; points join every query."""

    points: np.ndarray  # N x 2 float (x, y)
    point_labels: np.ndarray  # N int: 1 foreground, 0 background
    boxes: np.ndarray  # B x 4 float (x1, y1, x2, y2)
    multimask_output: bool = False
    mask_threshold: float = 0.0  # on the mask logits; 0.0 is probability 0.5


@dataclass(frozen=True)
class MaskPrediction:
    masks: np.ndarray  # Q x C x H x W bool, original-image size
    iou_predictions: np.ndarray  # Q x C float
    stability_scores: np.ndarray | None = None  # Q x C: IoU of the mask at threshold -1 and +1 (SAM's)


@dataclass(frozen=True)
class AutomaticParams:
    points_per_side: int
    pred_iou_thresh: float
    stability_score_thresh: float
    min_mask_region_area: int
    box_nms_thresh: float
    points_per_batch: int = 64


@dataclass(frozen=True)
class ProposedMask:
    """One automatic mask, kept as RLE: dozens of full-size binary masks would cost gigabytes."""

    mask: Mask  # RLE, tight box, area
    predicted_iou: float
    stability_score: float

    def binary(self) -> np.ndarray:
        """The H x W boolean mask, decoded on demand."""
        return decode_rle(self.mask.rle)


@dataclass(frozen=True)
class BackendDescription:
    """What Capabilities says about the networks."""

    card_name: str
    organization: str
    license: str
    description: str
    components: tuple[ModelComponent, ...]
    warnings: tuple[str, ...] = ()

    @property
    def parameter_count(self) -> int:
        return sum(c.parameter_count for c in self.components)

    @property
    def pretrained(self) -> bool:
        return all(c.pretrained for c in self.components)

    @property
    def weights(self) -> str:
        return " + ".join(f"{c.name.split()[0]}={c.weights}" for c in self.components)


class SamClipBackend(Protocol):
    """SAM-style masks and CLIP-style embeddings. Thread-safe; no per-request state."""

    @property
    def logit_scale(self) -> float:
        """CLIP's learned temperature: logits = logit_scale * cosine similarity."""
        ...

    def describe(self) -> BackendDescription: ...

    def embed_images(self, images: Sequence[np.ndarray], keys: Sequence[str]) -> list[ImageEmbedding]:
        """Image embeddings for mask prediction, served from a cache keyed by `keys`."""
        ...

    def predict_masks(self, embedding: ImageEmbedding, prompts: MaskPrompts) -> MaskPrediction: ...

    def generate_masks(
        self, image: np.ndarray, embedding: ImageEmbedding, params: AutomaticParams
    ) -> list[ProposedMask]:
        """Every mask in the image ("segment everything")."""
        ...

    def embed_texts(self, labels: Sequence[str], templates: Sequence[str]) -> np.ndarray:
        """L x D unit vectors: each label's embedding averaged over the templates."""
        ...

    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """N x D unit vectors for H x W x 3 uint8 images, computed in batches."""
        ...

    def embed_regions(
        self, image: np.ndarray, embedding: ImageEmbedding, proposals: Sequence[ProposedMask]
    ) -> np.ndarray:
        """N x D unit vectors, one per mask of `image`, in the text embeddings' space."""
        ...

    @property
    def text_to_pixel(self) -> bool:
        """Whether `pixel_similarities` works: the backend has per-patch CLIP features."""
        ...

    @property
    def patch_size(self) -> int:
        """Pixels of the resized input per patch side (of `pixel_similarities`' grid)."""
        ...

    def pixel_similarities(self, embedding: ImageEmbedding, text: np.ndarray) -> np.ndarray:
        """L x h x w cosine similarities of each patch with each text vector, over the image's
        patch grid (padding cut off); only when `text_to_pixel`."""
        ...

    def clear_caches(self) -> None: ...
