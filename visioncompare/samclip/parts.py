"""The parts both SAM-CLIP backends are built from (segment-anything builds `Sam` from parts
the same way): a SAM part, masks from image embeddings with the embedding cache; a text part,
label embeddings with the text cache; and, for the composition, CLIP's image tower. A backend
is a small composition of these (`composed.py`, `merged.py`); none subclasses another."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from visioncompare.runtime.device import DevicePlan
from visioncompare.samclip import automatic
from visioncompare.samclip.backend import AutomaticParams, ImageEmbedding, MaskPrediction, MaskPrompts, ProposedMask
from visioncompare.samclip.cache import ByteLru
from visioncompare.samclip.settings import SamClipSettings

POSTPROCESS_CHUNK = 8  # prompt queries upsampled to full size at a time
STABILITY_OFFSET = 1.0  # SamAutomaticMaskGenerator's stability_score_offset

Encoder = Callable[[Sequence[np.ndarray]], list[ImageEmbedding]]


class SamPart:
    """segment-anything's prompt encoder and mask decoder over cached image embeddings. The
    embeddings come from an encoder the backend gives (SAM's own image encoder, or the merged
    backbone); the cache is keyed by image digest and bounded in bytes."""

    def __init__(self, sam: Any, plan: DevicePlan, *, cache_bytes: int, batch_size: int) -> None:
        self.device = plan.device
        self.sam = sam.to(self.device).eval()
        self.autocast = plan.autocast()
        self.resize = automatic.SamResize(self.sam.image_encoder.img_size)
        self.cache: ByteLru[ImageEmbedding] = ByteLru(cache_bytes, lambda e: e.nbytes)
        self.batch_size = batch_size

    @property
    def patch_size(self) -> int:
        return int(self.sam.image_encoder.patch_embed.proj.stride[0])

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """H x W x 3 uint8 -> (1 x 3 x S x S, resized, normalised and padded; the resized size)."""
        resized = self.resize.apply_image(image)
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).float()
        return self.sam.preprocess(x[None]), (int(resized.shape[0]), int(resized.shape[1]))

    def embed(self, images: Sequence[np.ndarray], keys: Sequence[str], encode: Encoder) -> list[ImageEmbedding]:
        """The images' embeddings, from the cache where there, else from `encode` in batches."""
        found: dict[str, ImageEmbedding] = {}
        missing: dict[str, np.ndarray] = {}
        for image, key in zip(images, keys, strict=True):
            if key in found or key in missing:
                continue
            hit = self.cache.get(key)
            if hit is None:
                missing[key] = image
            else:
                found[key] = hit
        pending = list(missing.items())
        for start in range(0, len(pending), self.batch_size):
            chunk = pending[start : start + self.batch_size]
            for (key, _), embedding in zip(chunk, encode([im for _, im in chunk]), strict=True):
                self.cache.put(key, embedding)
                found[key] = embedding
        return [found[key] for key in keys]

    @torch.no_grad()
    def encode(self, images: Sequence[np.ndarray]) -> list[ImageEmbedding]:
        """SAM's own image encoder."""
        prepared = [self.prepare(image) for image in images]
        with self.autocast():
            features = self.sam.image_encoder(torch.cat([x for x, _ in prepared]))
        return [
            ImageEmbedding(
                features=features[i : i + 1].float().clone(),
                original_size=(int(image.shape[0]), int(image.shape[1])),
                input_size=prepared[i][1],
            )
            for i, image in enumerate(images)
        ]

    @torch.no_grad()
    def predict_masks(self, embedding: ImageEmbedding, prompts: MaskPrompts) -> MaskPrediction:
        from segment_anything.utils.amg import calculate_stability_score

        queries = max(1, len(prompts.boxes))
        points = boxes = None
        if len(prompts.points):
            coords = self.resize.apply_coords(prompts.points.astype(np.float64), embedding.original_size)
            coords_t = torch.as_tensor(coords, dtype=torch.float, device=self.device)[None]
            labels_t = torch.as_tensor(prompts.point_labels, dtype=torch.int, device=self.device)[None]
            points = (coords_t.repeat(queries, 1, 1), labels_t.repeat(queries, 1))
        if len(prompts.boxes):
            scaled = self.resize.apply_boxes(prompts.boxes.astype(np.float64), embedding.original_size)
            boxes = torch.as_tensor(scaled, dtype=torch.float, device=self.device)
        with self.autocast():
            sparse, dense = self.sam.prompt_encoder(points=points, boxes=boxes, masks=None)
            low_res, iou = self.sam.mask_decoder(
                image_embeddings=embedding.features,
                image_pe=self.sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=prompts.multimask_output,
            )
        masks, stability = [], []
        for i in range(0, low_res.shape[0], POSTPROCESS_CHUNK):
            logits = self.sam.postprocess_masks(
                low_res[i : i + POSTPROCESS_CHUNK].float(), embedding.input_size, embedding.original_size
            )
            masks.append((logits > prompts.mask_threshold).cpu())
            stability.append(calculate_stability_score(logits, prompts.mask_threshold, STABILITY_OFFSET).cpu())
        return MaskPrediction(
            masks=torch.cat(masks).numpy(),
            iou_predictions=iou.float().cpu().numpy(),
            stability_scores=torch.cat(stability).numpy(),
        )

    def generate_masks(
        self, image: np.ndarray, embedding: ImageEmbedding, params: AutomaticParams
    ) -> list[ProposedMask]:
        with self.autocast():
            return automatic.generate(self.sam, image, embedding, params)


class TextPart:
    """A CLIP text tower: label embeddings (the mean over prompt templates), cached by
    (label, template); and the CLIP's logit scale."""

    def __init__(
        self,
        clip: Any,
        tokenizer: Callable[[Sequence[str]], torch.Tensor],
        plan: DevicePlan,
        *,
        cache_bytes: int,
        batch_size: int,
    ) -> None:
        self.device = plan.device
        self.clip = clip.to(self.device).eval()
        self.tokenizer = tokenizer
        self.autocast = plan.autocast()
        self.cache: ByteLru[np.ndarray] = ByteLru(cache_bytes, lambda v: int(v.nbytes))
        self.batch_size = batch_size
        with torch.no_grad():
            self.logit_scale = float(self.clip.logit_scale.exp().clamp(max=100.0).item())

    def embed(self, labels: Sequence[str], templates: Sequence[str]) -> np.ndarray:
        keys = [(label, template) for label in labels for template in templates]
        vectors: dict[tuple[str, str], np.ndarray] = {}
        missing = []
        for key in dict.fromkeys(keys):
            hit = self.cache.get(key)
            if hit is None:
                missing.append(key)
            else:
                vectors[key] = hit
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            encoded = self._encode([template.replace("{}", label) for label, template in chunk])
            for key, vector in zip(chunk, encoded, strict=True):
                self.cache.put(key, vector)
                vectors[key] = vector
        stacked = np.stack([vectors[k] for k in keys]).reshape(len(labels), len(templates), -1)
        mean = stacked.mean(axis=1)
        return mean / np.linalg.norm(mean, axis=1, keepdims=True).clip(min=1e-12)

    @torch.no_grad()
    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        tokens = self.tokenizer(list(texts)).to(self.device)
        with self.autocast():
            features = self.clip.encode_text(tokens, normalize=True)
        return features.float().cpu().numpy()


class ClipImagePart:
    """A CLIP image tower with its preprocessing: unit embeddings of whole images (crops)."""

    def __init__(
        self, clip: Any, preprocess: Callable[[np.ndarray], torch.Tensor], plan: DevicePlan, *, batch_size: int
    ) -> None:
        self.device = plan.device
        self.clip = clip.to(self.device).eval()
        self.preprocess = preprocess
        self.autocast = plan.autocast()
        self.batch_size = batch_size

    @torch.no_grad()
    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        for start in range(0, len(crops), self.batch_size):
            batch = torch.stack([self.preprocess(c) for c in crops[start : start + self.batch_size]])
            with self.autocast():
                features = self.clip.encode_image(batch.to(self.device), normalize=True)
            out.append(features.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def sam_part(sam: Any, settings: SamClipSettings, plan: DevicePlan) -> SamPart:
    """A SAM part with the settings' embedding cache bound and image batch size."""
    return SamPart(sam, plan, cache_bytes=settings.embedding_cache_bytes, batch_size=settings.image_batch_size)


def text_part(
    clip: Any, tokenizer: Callable[[Sequence[str]], torch.Tensor], settings: SamClipSettings, plan: DevicePlan
) -> TextPart:
    """A text part with the settings' text cache bound and batch size."""
    return TextPart(clip, tokenizer, plan, cache_bytes=settings.text_cache_bytes, batch_size=settings.text_batch_size)
