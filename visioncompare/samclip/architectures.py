"""Builders of the SAM and CLIP architectures, randomly initialised (weights come later).

The full-size builders are segment-anything's registry and open_clip's
`create_model`. The local variants build the same classes, smaller: "tiny" with a few
thousand times fewer parameters, for tests and smoke runs on CPU; "shapes" the
architectures of the reference weights trained on the synthetic shapes world
(`visioncompare/shapes_models/sam.py`, `visioncompare/shapes_models/clip.py`; 128 px SAM input, 48 px CLIP input).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from visioncompare.runtime.errors import ConfigurationError
from visioncompare.shapes_models.facts import SHAPES

TINY = "tiny"
TINY_SAM_IMAGE_SIZE = 64
TINY_CLIP_CONTEXT = 32


def tiny_sam(img_size: int = TINY_SAM_IMAGE_SIZE) -> Any:
    """segment-anything's Sam with a one-block ViT: same code paths, ~0.1 M parameters."""
    import torch
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    dim, patch = 32, 16
    grid = img_size // patch
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=img_size,
            patch_size=patch,
            embed_dim=dim,
            depth=1,
            num_heads=2,
            mlp_ratio=2.0,
            out_chans=dim,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=0,
            global_attn_indexes=(0,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(grid, grid),
            input_image_size=(img_size, img_size),
            mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
            transformer_dim=dim,
            iou_head_depth=2,
            iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def shapes_sam() -> Any:
    from visioncompare.shapes_models.sam import build_shapes_sam

    return build_shapes_sam()


#: SAM variants built here rather than by segment-anything's registry.
LOCAL_SAM_VARIANTS: dict[str, Callable[[], Any]] = {TINY: tiny_sam, SHAPES: shapes_sam}


def build_sam(variant: str) -> Any:
    """A randomly initialised SAM of `variant` (vit_b, vit_l, vit_h, tiny or shapes)."""
    if variant in LOCAL_SAM_VARIANTS:
        return LOCAL_SAM_VARIANTS[variant]()
    from segment_anything import sam_model_registry

    if variant not in sam_model_registry:
        raise ConfigurationError(f"unknown SAM variant {variant!r}; use vit_b, vit_l, vit_h, tiny or shapes")
    return sam_model_registry[variant](checkpoint=None).eval()


def tiny_clip() -> tuple[Any, Any]:
    """open_clip's CLIP with one-layer towers, and the standard BPE tokenizer."""
    from open_clip import CLIP, CLIPTextCfg, CLIPVisionCfg
    from open_clip.tokenizer import SimpleTokenizer

    model = CLIP(
        embed_dim=32,
        vision_cfg=CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=16, image_size=32),
        text_cfg=CLIPTextCfg(context_length=TINY_CLIP_CONTEXT, vocab_size=49408, width=32, heads=2, layers=1),
    )
    return model.eval(), SimpleTokenizer(context_length=TINY_CLIP_CONTEXT)


def shapes_clip() -> tuple[Any, Any]:
    from visioncompare.shapes_models.clip import build_shapes_clip

    return build_shapes_clip()


#: CLIP models built here rather than by open_clip's model configs.
LOCAL_CLIP_MODELS: dict[str, Callable[[], tuple[Any, Any]]] = {TINY: tiny_clip, SHAPES: shapes_clip}


def build_clip(name: str, *, quick_gelu: bool = False) -> tuple[Any, Any]:
    """A randomly initialised open_clip model and its tokenizer; never touches the network."""
    if name in LOCAL_CLIP_MODELS:
        return LOCAL_CLIP_MODELS[name]()
    import open_clip

    if name not in open_clip.list_models():
        raise ConfigurationError(f"unknown open_clip model {name!r}; see open_clip.list_models(), e.g. ViT-B-32")
    try:
        model = open_clip.create_model(
            name,
            pretrained=None,
            force_quick_gelu=quick_gelu,
            pretrained_image=False,
            pretrained_text=False,
        )
        tokenizer = open_clip.get_tokenizer(name)
    except OSError as exc:  # e.g. a Hugging Face text tower or tokenizer not in the local cache
        raise ConfigurationError(f"cannot build open_clip {name!r} offline: {exc}") from exc
    return model.eval(), tokenizer


SamBuilder = Callable[[str], Any]
ClipBuilder = Callable[..., tuple[Any, Any]]
