"""SamClipBackend by composition: Meta's Segment Anything + OpenCLIP, two backbones."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from visioncompare.runtime.device import DevicePlan
from visioncompare.runtime.engines import ExportedFile, ort_runner
from visioncompare.samclip import card, openvocab
from visioncompare.samclip.architectures import build_clip, build_sam
from visioncompare.samclip.attention import use_chunked_mlp, use_sdpa_attention
from visioncompare.samclip.backend import (
    AutomaticParams,
    BackendDescription,
    ImageEmbedding,
    MaskPrediction,
    MaskPrompts,
    ProposedMask,
)
from visioncompare.samclip.parts import ClipImagePart, SamPart, TextPart, sam_part, text_part
from visioncompare.samclip.settings import SamClipSettings
from visioncompare.samclip.weights import (
    WeightSource,
    load_clip_state,
    load_sam_state,
    resolve_clip_weights,
    resolve_sam_weights,
)

log = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_OVERSIZE = 4  # how much longer than CLIP's crop an image may be scaled before it is cut first


@dataclass(frozen=True)
class ClipPreprocess:
    """open_clip's eval transform, as tensor ops that batch."""

    size: tuple[int, int]
    mean: tuple[float, ...] = OPENAI_MEAN
    std: tuple[float, ...] = OPENAI_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"  # shortest side + centre crop; "squash"; "longest" + pad

    @classmethod
    def from_cfg(cls, cfg: dict[str, Any]) -> ClipPreprocess:
        size = cfg.get("size", 224)
        size = (size, size) if isinstance(size, int) else tuple(size)
        known = {k: cfg[k] for k in ("interpolation", "resize_mode") if k in cfg}
        return cls(
            size=size,
            mean=tuple(cfg.get("mean", OPENAI_MEAN)),
            std=tuple(cfg.get("std", OPENAI_STD)),
            **known,
        )

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        th, tw = self.size
        if self.resize_mode == "shortest":
            image = self._centre_part(image)
        x = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1)[None] / 255.0
        h, w = x.shape[-2:]
        mode = "bilinear" if self.interpolation == "bilinear" else "bicubic"
        if self.resize_mode == "squash":
            x = F.interpolate(x, size=(th, tw), mode=mode, antialias=True, align_corners=False)
        else:
            fit = max if self.resize_mode == "shortest" else min
            scale = fit(th / h, tw / w)
            nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
            x = F.interpolate(x, size=(nh, nw), mode=mode, antialias=True, align_corners=False)
            top, left = (nh - th) // 2, (nw - tw) // 2
            if self.resize_mode == "shortest":
                x = x[..., top : top + th, left : left + tw]
            else:
                x = F.pad(x, (-left, tw - nw + left, -top, th - nh + top), value=0.0)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((x.clamp(0.0, 1.0) - mean) / std)[0]

    def _centre_part(self, image: np.ndarray) -> np.ndarray:
        """For "shortest": the centred part of an elongated image that the centre crop keeps.

        Scaled whole, a strip would first become far larger than the crop (1 x 40000 to
        48 x 1.92M px at 48 px, 1.1 GB of floats). Along a side that would be scaled to
        more than MAX_OVERSIZE times the crop, only the centred source pixels that the
        crop keeps are scaled, with a margin for the filter; images less elongated than
        that are scaled whole, as before.
        """
        (th, tw), (h, w) = self.size, image.shape[:2]
        scale = max(th / h, tw / w)
        margin = math.ceil(2 * max(1.0, 1.0 / scale)) + 1  # bicubic reaches 2 px of the coarser grid
        keep = []
        for n, t in ((h, th), (w, tw)):
            k = n if n * scale <= MAX_OVERSIZE * t else min(n, math.ceil(t / scale) + 2 * margin)
            keep.append(k + (n - k) % 2)  # same parity: the part's centre is the image's
        if keep == [h, w]:
            return image
        top, left = (h - keep[0]) // 2, (w - keep[1]) // 2
        return image[top : top + keep[0], left : left + keep[1]]


class ComposedSamOpenClip:
    """segment-anything for masks and image embeddings, OpenCLIP for text and crops: a SAM
    part, a text part and CLIP's image tower (`parts.py`).

    Shared state is read-only networks and two thread-safe caches: SAM image embeddings by
    image digest (LRU, bytes-bounded) and CLIP text embeddings by (label, template).
    """

    def __init__(self, *, sam: SamPart, text: TextPart, image: ClipImagePart, description: BackendDescription) -> None:
        self.sam_part = sam
        self.text_part = text
        self.image_part = image
        self._description = description
        self.onnx_files: list[ExportedFile] = []  # engine=onnxruntime: the files its networks run from

    @property
    def sam(self) -> Any:
        """segment-anything's network."""
        return self.sam_part.sam

    @property
    def clip(self) -> Any:
        """OpenCLIP's network (both towers)."""
        return self.image_part.clip

    @property
    def tokenizer(self) -> Callable[[Sequence[str]], torch.Tensor]:
        return self.text_part.tokenizer

    @property
    def preprocess(self) -> Callable[[np.ndarray], torch.Tensor]:
        """CLIP's image preprocessing."""
        return self.image_part.preprocess

    @property
    def logit_scale(self) -> float:
        return self.text_part.logit_scale

    def describe(self) -> BackendDescription:
        return self._description

    def clear_caches(self) -> None:
        self.sam_part.cache.clear()
        self.text_part.cache.clear()

    def embed_images(self, images: Sequence[np.ndarray], keys: Sequence[str]) -> list[ImageEmbedding]:
        return self.sam_part.embed(images, keys, self.sam_part.encode)

    def predict_masks(self, embedding: ImageEmbedding, prompts: MaskPrompts) -> MaskPrediction:
        return self.sam_part.predict_masks(embedding, prompts)

    def generate_masks(
        self, image: np.ndarray, embedding: ImageEmbedding, params: AutomaticParams
    ) -> list[ProposedMask]:
        return self.sam_part.generate_masks(image, embedding, params)

    def embed_texts(self, labels: Sequence[str], templates: Sequence[str]) -> np.ndarray:
        return self.text_part.embed(labels, templates)

    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        return self.image_part.embed(crops)

    def embed_regions(
        self, image: np.ndarray, embedding: ImageEmbedding, proposals: Sequence[ProposedMask]
    ) -> np.ndarray:
        """CLIP re-encodes each mask's crop: one CLIP image forward per mask."""
        return self.embed_crops([openvocab.mask_crop(image, p.binary()) for p in proposals])

    @property
    def text_to_pixel(self) -> bool:
        return False  # CLIP's pooled image embedding has no per-patch counterpart

    @property
    def patch_size(self) -> int:
        return self.sam_part.patch_size

    def pixel_similarities(self, embedding: ImageEmbedding, text: np.ndarray) -> np.ndarray:
        raise NotImplementedError("the composed backend has no per-patch CLIP features")


def resolve_weights(settings: SamClipSettings) -> tuple[WeightSource, WeightSource]:
    """Resolve both weight specs and fail, saying what to fetch, if a file is missing."""
    sam = resolve_sam_weights(settings.sam_weights, settings.sam_variant, settings.cache_dir)
    clip = resolve_clip_weights(settings.clip_pretrained, settings.clip_model, settings.cache_dir)
    sam.check("SAM")
    clip.check("CLIP")
    return sam, clip


def build_composed(
    settings: SamClipSettings,
    plan: DevicePlan,
    *,
    sam_builder: Callable[[str], Any] = build_sam,
    clip_builder: Callable[..., tuple[Any, Any]] = build_clip,
) -> ComposedSamOpenClip:
    """Build both networks, load their weights and wrap them as a backend."""
    import open_clip

    sam_source, clip_source = resolve_weights(settings)
    sam = sam_builder(settings.sam_variant)
    if sam_source.path is not None:
        load_sam_state(sam, sam_source.path)
    if settings.sam_attention == "sdpa":
        use_sdpa_attention(sam)
        use_chunked_mlp(sam)
    clip, tokenizer = clip_builder(settings.clip_model, quick_gelu=clip_source.quick_gelu)
    if clip_source.path is not None:
        load_clip_state(clip, clip_source.path)
    preprocess = ClipPreprocess.from_cfg({**open_clip.get_model_preprocess_cfg(clip), **(clip_source.preprocess or {})})
    sam_component = card.component(f"segment-anything {settings.sam_variant}", sam_source, sam)
    clip_component = card.component(f"open_clip {settings.clip_model}", clip_source, clip)
    warnings = card.weight_warnings(
        [card.Part(sam_component, sam_source, "sam"), card.Part(clip_component, clip_source, "clip")]
    )
    exporter = None
    if settings.engine == "onnxruntime":
        from visioncompare.samclip.onnx_engine import Exporter, install_clip, install_sam

        runner = ort_runner(str(plan.device), settings, torch.get_num_threads())
        exporter = Exporter(settings.cache_dir, runner, f"{sam_source.label} + {clip_source.label}")
        install_sam(sam, exporter, sam_source.path, f"sam_{settings.sam_variant}")
        install_clip(clip, exporter, clip_source.path, f"clip_{settings.clip_model}", image=True)
        warnings += runner.warnings
    description = BackendDescription(
        card_name=card.COMPOSED.card_name,
        organization=card.composed_organization(sam_source, clip_source),
        license=card.COMPOSED.license,
        description=card.composed_description(settings, sam_source, clip_source),
        components=(sam_component, clip_component),
        warnings=tuple(warnings),
    )
    log.info("built %s: %s", description.card_name, description.weights)
    backend = ComposedSamOpenClip(
        sam=sam_part(sam, settings, plan),
        text=text_part(clip, tokenizer, settings, plan),
        image=ClipImagePart(clip, preprocess, plan, batch_size=settings.crop_batch_size),
        description=description,
    )
    if exporter is not None:
        backend.onnx_files = exporter.files
    return backend
