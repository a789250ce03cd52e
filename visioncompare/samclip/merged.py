"""SamClipBackend by the paper's merge: one backbone, a SAM head and a CLIP head.

One backbone pass per image gives both SAM's image embedding and the CLIP head's patch
tokens (both cached by image digest). Masks come from the SAM head exactly as in the
composition; classification pools the CLIP head over the whole image; a mask is labelled
by pooling the CLIP head's tokens inside it (no crop is re-encoded); semantic segmentation
compares every patch token with the labels' text embeddings. Text goes through the frozen
CLIP teacher's text tower; its image tower is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from visioncompare.runtime.device import DevicePlan
from visioncompare.runtime.engines import ExportedFile, ort_runner
from visioncompare.samclip import card
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
from visioncompare.samclip.merged_arch import MergedSamClip, build_merged, region_weights
from visioncompare.samclip.openvocab import mask_crop
from visioncompare.samclip.parts import SamPart, TextPart, sam_part, text_part
from visioncompare.samclip.settings import SamClipSettings
from visioncompare.samclip.weights import (
    WeightSource,
    load_clip_state,
    load_strict,
    resolve_clip_weights,
    resolve_merged_weights,
)

log = logging.getLogger(__name__)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)


class MergedSamClipBackend:
    """The merged network for images and masks (a SAM part over its SAM head), the CLIP
    teacher's text tower for labels (a text part)."""

    def __init__(
        self,
        *,
        merged: MergedSamClip,
        sam: SamPart,
        text: TextPart,
        description: BackendDescription,
        crop_batch_size: int,
        regions: str = "tokens",
    ) -> None:
        self.sam_part = sam
        self.regions = regions  # "tokens" or "crops": SamClipSettings.merged_regions
        self.text_part = text
        self.device = sam.device
        self.merged = merged.to(self.device).eval()
        self.patch = int(merged.sam.image_encoder.patch_embed.proj.stride[0])  # px of the resized input
        self.img_size = merged.img_size
        self.crop_batch_size = crop_batch_size
        self._description = description
        self.onnx_files: list[ExportedFile] = []  # engine=onnxruntime: the files its networks run from

    @property
    def sam(self) -> Any:
        """The merged network's SAM: the backbone with its neck, prompt encoder, mask decoder."""
        return self.merged.sam

    @property
    def logit_scale(self) -> float:
        """The CLIP teacher's, times the merge's own calibrated factor."""
        return self.text_part.logit_scale * float(self.merged.clip_head.logit_scale_factor)

    def describe(self) -> BackendDescription:
        return self._description

    def clear_caches(self) -> None:
        self.sam_part.cache.clear()
        self.text_part.cache.clear()

    @property
    def text_to_pixel(self) -> bool:
        """Semantic segmentation from the CLIP head's patches, unless masks are named by their crops."""
        return self.regions == "tokens"

    @property
    def patch_size(self) -> int:
        return self.patch

    def _patch_rows(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """How many patch rows and columns the image covers (the rest is padding)."""
        return -(-input_size[0] // self.patch), -(-input_size[1] // self.patch)

    def embed_images(self, images: Sequence[np.ndarray], keys: Sequence[str]) -> list[ImageEmbedding]:
        return self.sam_part.embed(images, keys, self._encode_images)

    @torch.no_grad()
    def _encode_images(self, images: Sequence[np.ndarray]) -> list[ImageEmbedding]:
        """One pass of the merged network: SAM's image embedding and the CLIP head's tokens."""
        prepared = [self.sam_part.prepare(image) for image in images]
        with self.sam_part.autocast():
            features, tokens = self.merged(torch.cat([x for x, _ in prepared]))
        return [
            ImageEmbedding(
                features=features[i : i + 1].float().clone(),
                original_size=(int(image.shape[0]), int(image.shape[1])),
                input_size=prepared[i][1],
                clip_tokens=tokens[i : i + 1].float().clone(),
            )
            for i, image in enumerate(images)
        ]

    def predict_masks(self, embedding: ImageEmbedding, prompts: MaskPrompts) -> MaskPrediction:
        return self.sam_part.predict_masks(embedding, prompts)

    def generate_masks(
        self, image: np.ndarray, embedding: ImageEmbedding, params: AutomaticParams
    ) -> list[ProposedMask]:
        return self.sam_part.generate_masks(image, embedding, params)

    def embed_texts(self, labels: Sequence[str], templates: Sequence[str]) -> np.ndarray:
        return self.text_part.embed(labels, templates)

    @torch.no_grad()
    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """The CLIP head pooled over the image's patches (padding left out)."""
        out = []
        for start in range(0, len(crops), self.crop_batch_size):
            prepared = [self.sam_part.prepare(c) for c in crops[start : start + self.crop_batch_size]]
            side = self.img_size // self.patch
            weights = torch.zeros(len(prepared), side, side, device=self.device)
            for k, (_, size) in enumerate(prepared):
                rows, cols = self._patch_rows(size)
                weights[k, :rows, :cols] = 1.0
            with self.sam_part.autocast():
                tokens = self.merged.clip_head.tokens(self.merged.backbone(torch.cat([x for x, _ in prepared])))
                pooled = self.merged.pooled(tokens, weights)
            out.append(_unit(pooled).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

    @torch.no_grad()
    def embed_regions(
        self, image: np.ndarray, embedding: ImageEmbedding, proposals: Sequence[ProposedMask]
    ) -> np.ndarray:
        """The CLIP head's tokens max-pooled inside each mask (no crop is re-encoded); with
        regions="crops", each mask's crop through the backbone and CLIP head (`embed_crops`)."""
        if not proposals:
            return np.zeros((0, 0), dtype=np.float32)
        if self.regions == "crops":
            return self.embed_crops([mask_crop(image, p.binary()) for p in proposals])
        side = embedding.clip_tokens.shape[1]
        out = []
        for start in range(0, len(proposals), self.crop_batch_size):
            masks = torch.as_tensor(np.stack([p.binary() for p in proposals[start : start + self.crop_batch_size]]))
            weights = region_weights(masks, embedding.input_size, self.img_size, side).to(self.device)
            with self.sam_part.autocast():
                pooled = self.merged.pooled(embedding.clip_tokens, weights)
            out.append(_unit(pooled).cpu().numpy())
        return np.concatenate(out)

    @torch.no_grad()
    def pixel_similarities(self, embedding: ImageEmbedding, text: np.ndarray) -> np.ndarray:
        rows, cols = self._patch_rows(embedding.input_size)
        with self.sam_part.autocast():
            dense = _unit(self.merged.dense(embedding.clip_tokens[:, :rows, :cols]))[0]  # h x w x D
        similarities = dense @ torch.as_tensor(text, dtype=torch.float32, device=dense.device).T
        return similarities.permute(2, 0, 1).cpu().numpy()


def load_merged_state(merged: MergedSamClip, path: Path) -> None:
    """Load a merged SAM-CLIP state dict with weights_only=True (a merge saved before the head
    kept its own logit scale loads with the teacher's: `ClipHead`)."""
    load_strict(merged, path, "merged SAM-CLIP")


def text_tower_only(clip: Any) -> Any:
    """The CLIP teacher without its image tower, which the merged model replaces."""
    clip.visual = torch.nn.Identity()
    return clip


def clip_embed_dim(clip: Any, tokenizer: Callable[[Sequence[str]], torch.Tensor]) -> int:
    with torch.no_grad():
        return int(clip.encode_text(tokenizer(["a"])).shape[-1])


def resolve_merged(settings: SamClipSettings) -> tuple[WeightSource, WeightSource]:
    """Resolve the merged weights and the text tower's; fail, saying what to get, when missing."""
    merged = resolve_merged_weights(settings.merged_weights, settings.sam_variant, settings.cache_dir)
    clip = resolve_clip_weights(settings.clip_pretrained, settings.clip_model, settings.cache_dir)
    merged.check("merged SAM-CLIP")
    clip.check("CLIP")
    return merged, clip


def build_merged_backend(
    settings: SamClipSettings,
    plan: DevicePlan,
    *,
    sam_builder: Callable[[str], Any] = build_sam,
    clip_builder: Callable[..., tuple[Any, Any]] = build_clip,
) -> MergedSamClipBackend:
    """Build the merged network and the text tower, load their weights, wrap them."""
    merged_source, clip_source = resolve_merged(settings)
    clip, tokenizer = clip_builder(settings.clip_model, quick_gelu=clip_source.quick_gelu)
    if clip_source.path is not None:
        load_clip_state(clip, clip_source.path)
    text_tower_only(clip)
    merged = build_merged(sam_builder(settings.sam_variant), clip_embed_dim(clip, tokenizer))
    if merged_source.path is not None:
        load_merged_state(merged, merged_source.path)
    if settings.sam_attention == "sdpa":
        use_sdpa_attention(merged)  # the backbone's and the CLIP head's blocks
        use_chunked_mlp(merged)
    merged_component = card.component(
        f"merged SAM-CLIP {settings.sam_variant} (backbone, SAM head, CLIP head)", merged_source, merged
    )
    text_component = card.component(f"open_clip {settings.clip_model} text tower (frozen teacher)", clip_source, clip)
    warnings = card.weight_warnings(
        [card.Part(merged_component, merged_source, "merged"), card.Part(text_component, clip_source, "clip")]
    )
    exporter = None
    if settings.engine == "onnxruntime":
        from visioncompare.samclip.onnx_engine import Exporter, install_clip, install_merged

        runner = ort_runner(str(plan.device), settings, torch.get_num_threads())
        exporter = Exporter(settings.cache_dir, runner, f"{merged_source.label} + {clip_source.label}")
        install_merged(merged, exporter, merged_source.path, f"merged_{settings.sam_variant}")
        install_clip(clip, exporter, clip_source.path, f"clip_{settings.clip_model}", image=False)
        warnings += runner.warnings
    description = BackendDescription(
        card_name=card.MERGED.card_name,
        organization=card.MERGED_ORGANIZATION,
        license=card.MERGED.license,
        description=card.merged_description(settings, merged_source),
        components=(merged_component, text_component),
        warnings=tuple(warnings),
    )
    log.info("built %s: %s", description.card_name, description.weights)
    backend = MergedSamClipBackend(
        merged=merged,
        sam=sam_part(merged.sam, settings, plan),
        text=text_part(clip, tokenizer, settings, plan),
        description=description,
        crop_batch_size=settings.crop_batch_size,
        regions=settings.merged_regions,
    )
    if exporter is not None:
        backend.onnx_files = exporter.files
    return backend
