"""Settings of the SAM-CLIP service, read from SAMCLIP_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from visioncompare.runtime.settings import Engine, MiB, ModelServerSettings
from visioncompare.shapes_models.facts import SHAPES

SamVariant = Literal["vit_b", "vit_l", "vit_h", "tiny", "shapes"]

#: What an unset half of a (architecture, weights) pair becomes, given the other half:
#: shapes goes with shapes; anything else with the official defaults.
OFFICIAL_SAM = ("vit_b", "official")
OFFICIAL_CLIP = ("ViT-B-32", "laion2b_e16")

#: The shapes preset's automatic-segmentation defaults, where the official ones do not fit.
#: The shapes SAM sees 128 px, so a coarser point grid covers the
#: scene's objects (14-60 px in radius on 128-256 px images). Its predicted IoUs and
#: stability scores sit below the official SAM's (median predicted IoU 0.82 for masks that
#: match an object at IoU >= 0.8, 0.30 for fragments), so the official 0.88/0.95 would drop
#: most good masks; the values below were picked on 40 held-out eval scenes: against 0.2/0.2
#: they cut open-vocabulary results from 8.2 to 3.5 per scene (3.9 objects) and mask AP
#: rises a little (0.333 -> 0.349). Its masks often carry a few stray pixels far from the
#: object, which stretch the crop CLIP sees: dropping islands (and filling holes) under 50 px
#: lifts mask AP on the same scenes from 0.349 to 0.379 (25 px: 0.377, 100 px: 0.374; CLIP
#: before its proposal-crop stages). The official open_vocab_score_threshold (0.3, on label
#: probability x stability) suits the shapes models too: on eval scenes it keeps about 3.5
#: results per scene (3.9 objects).
SHAPES_SAM_DEFAULTS: dict[str, Any] = {
    "points_per_side": 16,
    "proposal_points_per_side": 12,
    "pred_iou_thresh": 0.6,
    "stability_score_thresh": 0.7,
    "min_mask_region_area": 50,
}
#: How the shipped shapes merge names a mask. From its crops: on 100 held-out scenes
#: (bench/accuracy.py --scenes 100) open-vocabulary mask AP 0.368 and semantic mIoU 0.569, against
#: 0.077 and 0.266 from the tokens of the one scene pass (objects are 2-7 patches across at 128 px),
#: at 0.75x the composition's speed for instance segmentation instead of 0.85x
#: (bench/samclip_merged.py). The paper's path (tokens) stays the default for other merges.
SHAPES_MERGED_REGIONS: Final = "crops"
#: The presets. shapes (the default when no architecture or weights are named, or only shapes
#: ones): the merged SAM-CLIP and both teachers as the shapes reference weights. official: the
#: composition of the official SAM ViT-B and OpenCLIP ViT-B-32 (no official merged weights exist).
PRESETS: dict[str, dict[str, Any]] = {
    SHAPES: {
        "merged_weights": SHAPES,
        "merged_regions": SHAPES_MERGED_REGIONS,
        "sam_variant": SHAPES,
        "sam_weights": SHAPES,
        "clip_model": SHAPES,
        "clip_pretrained": SHAPES,
        **SHAPES_SAM_DEFAULTS,
    },
    "official": {
        "backend": "composed",
        "sam_variant": OFFICIAL_SAM[0],
        "sam_weights": OFFICIAL_SAM[1],
        "clip_model": OFFICIAL_CLIP[0],
        "clip_pretrained": OFFICIAL_CLIP[1],
    },
}
_ARCHS_AND_WEIGHTS = ("merged_weights", "sam_variant", "sam_weights", "clip_model", "clip_pretrained")

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

    Backend: "merged" (the default) is this project's reproduction of the paper's merged
    model, whose weights are `merged_weights` ("shapes", "file:/path" or "random"; no
    official merged weights exist), its architecture `sam_variant`, its text tower the CLIP
    teacher's (`clip_model`, `clip_pretrained`); "composed" is Segment Anything + OpenCLIP,
    whose weights are `sam_weights` and `clip_pretrained`.

    Presets (`PRESETS`; `preset`, or implied by the weights): "shapes" and "official".

    Weight specs: `sam_weights` is "official" (the variant's file in `cache_dir`),
    "shapes", "file:/path" or "random"; `clip_pretrained` is an open_clip pretrained
    tag (its file in `cache_dir`), "shapes", "file:/path" or "random". Nothing is ever
    downloaded at run time: `fetch-weights samclip` fills the cache.

    The default is the "shapes" preset (merged weights, SAM variant, SAM weights, CLIP model
    and CLIP weights all "shapes"): small models this project trains on its synthetic shapes
    world and ships in `visioncompare/shapes_models/weights/`, checked against their model cards' SHA-256.
    They know only circle, square, triangle, star and cross, and every answer says
    "shapes reference weights, synthetic data". Giving one half of a pair picks the
    other: a SAM variant alone means its official weights (shapes: shapes), SAM weights
    alone mean vit_b (shapes: shapes); a CLIP model alone means laion2b_e16 (shapes:
    shapes), CLIP weights alone mean ViT-B-32 (shapes: shapes). Mixing shapes weights
    with another architecture is refused. The shapes SAM implies the shapes preset, whose
    unset automatic-segmentation settings take `SHAPES_SAM_DEFAULTS`; exactly the official
    composition implies the official preset. The "tiny" SAM variant and CLIP
    model are small random architectures for tests and smoke runs.
    """

    supported_engines = ("torch", "onnxruntime")
    presets = PRESETS
    preset_identity = ("backend", *_ARCHS_AND_WEIGHTS)
    model_config = SettingsConfigDict(env_prefix="SAMCLIP_", extra="forbid", frozen=True)

    port: int = Field(50052, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    metrics_port: int | None = Field(9091, ge=0, le=65535, description="Prometheus port; unset disables it")

    # --- backend and weights ------------------------------------------------------
    backend: Literal["merged", "composed"] = Field(
        "merged",
        description="merged: this project's reproduction of SAM-CLIP (one backbone, SAM and CLIP heads; "
        "merged_weights, plus the CLIP teacher's text tower from clip_model/clip_pretrained); "
        "composed: Segment Anything + OpenCLIP, two backbones (sam_weights, clip_pretrained)",
    )
    merged_weights: str = Field(SHAPES, description="merged backend: shapes | file:/path | random")
    semantic_refinement: bool = Field(
        True, description="merged backend: refine text-to-pixel semantic segmentation with the SAM head"
    )
    merged_regions: Literal["tokens", "crops"] = Field(
        "tokens",
        description="merged backend: how a mask is named. tokens (the paper's): the CLIP head's tokens of the "
        "one backbone pass pooled inside the mask, and semantic segmentation text-to-pixel; crops (the shapes "
        "preset's): each mask's crop through the merged backbone and CLIP head again (one more pass per crop "
        "batch), and semantic segmentation painted from the named masks, as the composition does",
    )
    sam_variant: SamVariant = Field(
        SHAPES, description="segment-anything image encoder: vit_b | vit_l | vit_h | shapes | tiny"
    )
    sam_weights: str = Field(SHAPES, description="official | shapes | file:/path | random")
    sam_attention: Literal["sdpa", "eager"] = Field(
        "sdpa",
        description="the SAM image encoder's blocks: sdpa (fused scaled-dot-product attention with the "
        "relative-position bias as its mask, and the MLP over blocks of tokens; visioncompare/samclip/attention.py) "
        "or eager (segment_anything's own)",
    )
    clip_model: str = Field(SHAPES, description="an open_clip model name, shapes or tiny")
    clip_pretrained: str = Field(SHAPES, description="open_clip pretrained tag | shapes | file:/path | random")
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
    open_vocab_proposals: Literal["grid", "text"] = Field(
        "grid",
        description="where open-vocabulary masks come from: grid, SAM's automatic point grid "
        "(proposal_points_per_side); text (merged backend only), the SAM head prompted once per region "
        "of each label in the CLIP head's text-to-pixel map",
    )

    @classmethod
    def complete_settings(cls, given: dict[str, Any]) -> None:
        """Complete a half-given (architecture, weights) pair: shapes goes with shapes, anything
        else with the official defaults."""
        for arch_key, weights_key, official in (
            ("sam_variant", "sam_weights", OFFICIAL_SAM),
            ("clip_model", "clip_pretrained", OFFICIAL_CLIP),
        ):
            arch, weights = given.get(arch_key), given.get(weights_key)
            if arch is not None and weights is None:
                given[weights_key] = SHAPES if arch == SHAPES else official[1]
            elif weights is not None and arch is None:
                given[arch_key] = SHAPES if weights == SHAPES else official[0]

    @classmethod
    def implied_preset(cls, given: dict[str, Any]) -> str | None:
        """shapes with the shapes SAM (the default; its automatic-segmentation values are tuned for
        it); official with exactly the official composition; none otherwise."""
        if given.get("sam_variant", SHAPES) == SHAPES:
            return SHAPES
        official = PRESETS["official"]
        return "official" if all(given.get(key) == value for key, value in official.items()) else None

    def auto_engine(self, device_type: str) -> Engine:
        """engine=auto, as bench/engines.py measured on CPU (one run, 2 cores): ONNX Runtime for the
        small presets (shapes: every task 1.02-1.45x faster through the service, both backends);
        torch for the full-size ones (SAM ViT-B's image encoder: torch with SDPA attention and the
        chunked MLP 4.3 s, ONNX Runtime 6.0 s; CLIP ViT-B-32 even) and on CUDA, where nothing was
        measured."""
        small = self.sam_variant in (SHAPES, "tiny") and self.clip_model in (SHAPES, "tiny")
        return "onnxruntime" if device_type == "cpu" and small else "torch"

    @field_validator("sam_weights", "clip_pretrained", "merged_weights")
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
        from visioncompare.samclip.weights import SAM_SOURCES

        kind = self.sam_weights.partition(":")[0]
        if kind not in SAM_SOURCES:
            raise ValueError(
                f"sam_weights={self.sam_weights!r}: use one of {sorted(SAM_SOURCES)} "
                "(file as file:/path/to/checkpoint.pth)"
            )
        if self.sam_weights == SHAPES and self.sam_variant != SHAPES:
            raise ValueError(
                f"sam_weights=shapes are weights of the shapes SAM only; set sam_variant=shapes "
                f"(not {self.sam_variant}), or give {self.sam_variant} official, file:/path or random weights"
            )
        if self.sam_variant == SHAPES and kind == "official":
            raise ValueError("sam_variant=shapes has no official weights; use sam_weights=shapes, file:/path or random")
        clip_kind = self.clip_pretrained.partition(":")[0]
        if self.clip_pretrained == SHAPES and self.clip_model != SHAPES:
            raise ValueError(
                f"clip_pretrained=shapes are weights of the shapes CLIP only; set clip_model=shapes "
                f"(not {self.clip_model}), or give {self.clip_model} an open_clip tag, file:/path or random"
            )
        if self.clip_model == SHAPES and clip_kind not in (SHAPES, "file", "random"):
            raise ValueError(
                f"clip_model=shapes has no open_clip tag {self.clip_pretrained!r}; "
                "use clip_pretrained=shapes, file:/path or random"
            )
        if self.backend == "merged":
            from visioncompare.samclip.weights import MERGED_SOURCES

            merged_kind = self.merged_weights.partition(":")[0]
            if merged_kind not in MERGED_SOURCES:
                raise ValueError(
                    f"merged_weights={self.merged_weights!r}: use one of {sorted(MERGED_SOURCES)} "
                    "(file as file:/path/to/samclip.pth); Apple's merged weights are not released"
                )
            if self.merged_weights == SHAPES and (self.sam_variant, self.clip_model) != (SHAPES, SHAPES):
                raise ValueError(
                    "merged_weights=shapes were merged from the shapes SAM and the shapes CLIP; set "
                    "sam_variant=shapes and clip_model=shapes (its text tower), or use backend=composed"
                )
        if self.open_vocab_proposals == "text" and self.backend != "merged":
            raise ValueError("open_vocab_proposals=text needs the merged backend's text-to-pixel map; use grid")
        if self.points_per_side > self.max_points_per_side:
            raise ValueError("points_per_side must not exceed max_points_per_side")
        if self.proposal_points_per_side > self.max_points_per_side:
            raise ValueError("proposal_points_per_side must not exceed max_points_per_side")
        if self.min_mask_region_area > self.max_min_mask_region_area:
            raise ValueError("min_mask_region_area must not exceed max_min_mask_region_area")
        return self
