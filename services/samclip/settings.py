"""Settings of the SAM-CLIP service, read from SAMCLIP_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.runtime.settings import MiB, ModelServerSettings

SamVariant = Literal["vit_b", "vit_l", "vit_h", "tiny"]

DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a close-up photo of a {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a blurry photo of a {}.",
    "itap of a {}.",
)


class SamClipSettings(ModelServerSettings):
    """Everything the SAM-CLIP service can be told; validated once at start-up.

    Weight specs: `sam_weights` is "official" (the variant's file in `cache_dir`),
    "file:/path" or "random"; `clip_pretrained` is an open_clip pretrained tag
    (its file in `cache_dir`), "file:/path" or "random". Nothing is ever downloaded
    at run time: `fetch-weights samclip` fills the cache. The "tiny" SAM variant and
    CLIP model are small random architectures for tests and smoke runs.
    """

    model_config = SettingsConfigDict(env_prefix="SAMCLIP_", extra="forbid", frozen=True)

    port: int = Field(50052, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    metrics_port: int | None = Field(9091, ge=0, le=65535, description="Prometheus port; unset disables it")

    # --- weights ---------------------------------------------------------------
    sam_variant: SamVariant = Field("vit_b", description="segment-anything image encoder size")
    sam_weights: str = Field("official", description="official | file:/path | random")
    clip_model: str = Field("ViT-B-32", description="an open_clip model name, or tiny")
    clip_pretrained: str = Field("laion2b_e16", description="open_clip pretrained tag | file:/path | random")
    cache_dir: Path = Field(Path("models"), description="where fetch-weights put the files")

    # --- caches and batching -----------------------------------------------------
    embedding_cache_bytes: int = Field(
        256 * MiB, ge=0, description="LRU bound for SAM image embeddings (4 MiB each at vit_*)"
    )
    text_cache_bytes: int = Field(64 * MiB, ge=0, description="LRU bound for CLIP text embeddings")
    crop_batch_size: int = Field(32, ge=1, le=1024, description="mask crops per CLIP forward")
    text_batch_size: int = Field(256, ge=1, le=4096, description="prompts per CLIP text forward")
    image_batch_size: int = Field(4, ge=1, le=64, description="images per SAM encoder forward")

    # --- labels and prompts ----------------------------------------------------------
    max_labels: int = Field(256, ge=1, le=4096)
    max_label_chars: int = Field(100, ge=1, le=1000)
    max_templates: int = Field(32, ge=1, le=256)
    max_template_chars: int = Field(200, ge=3, le=1000)
    prompt_templates: tuple[str, ...] = Field(DEFAULT_TEMPLATES, min_length=1)
    classify_max_results: int = Field(5, ge=1, description="default top-k for classification")
    max_prompt_points: int = Field(64, ge=1, le=1024)
    max_prompt_boxes: int = Field(64, ge=1, le=1024)

    # --- automatic segmentation (SamAutomaticMaskGenerator) ------------------------------
    points_per_side: int = Field(32, ge=1)
    max_points_per_side: int = Field(64, ge=1, le=256, description="per-request upper bound")
    points_per_batch: int = Field(64, ge=1, le=1024)
    pred_iou_thresh: float = Field(0.88, ge=0.0, le=1.0)
    stability_score_thresh: float = Field(0.95, ge=0.0, le=1.0)
    box_nms_thresh: float = Field(0.7, gt=0.0, le=1.0)
    min_mask_region_area: int = Field(0, ge=0)
    max_min_mask_region_area: int = Field(100_000, ge=0, description="per-request upper bound")
    automatic_max_results: int = Field(256, ge=1)

    # --- open-vocabulary detection, instance and semantic segmentation -----------------
    proposal_points_per_side: int = Field(16, ge=1, description="SAM proposals per side")
    open_vocab_score_threshold: float = Field(0.3, ge=0.0, le=1.0)
    open_vocab_nms_iou: float = Field(0.5, gt=0.0, le=1.0)
    open_vocab_max_results: int = Field(100, ge=1)
    background_prompts: tuple[str, ...] = Field(("background",), min_length=1)

    @field_validator("sam_weights", "clip_pretrained")
    @classmethod
    def _check_weight_spec(cls, value: str) -> str:
        kind, sep, arg = value.partition(":")
        if not value.strip():
            raise ValueError("must not be empty")
        if sep and kind == "file" and not arg:
            raise ValueError("file: needs a path, e.g. file:/models/checkpoint.pth")
        return value

    @field_validator("prompt_templates")
    @classmethod
    def _check_templates(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for template in value:
            if template.count("{}") != 1:
                raise ValueError(f"template {template!r} must contain {{}} exactly once")
        return value

    @model_validator(mode="after")
    def _check_bounds(self) -> Self:
        from services.samclip.weights import SAM_SOURCES

        kind = self.sam_weights.partition(":")[0]
        if kind not in SAM_SOURCES:
            raise ValueError(
                f"sam_weights={self.sam_weights!r}: use one of {sorted(SAM_SOURCES)} "
                "(file as file:/path/to/checkpoint.pth)"
            )
        if self.points_per_side > self.max_points_per_side:
            raise ValueError("points_per_side must not exceed max_points_per_side")
        if self.proposal_points_per_side > self.max_points_per_side:
            raise ValueError("proposal_points_per_side must not exceed max_points_per_side")
        if self.min_mask_region_area > self.max_min_mask_region_area:
            raise ValueError("min_mask_region_area must not exceed max_min_mask_region_area")
        return self
