"""The shapes SAM: segment-anything's Sam with a small ViT encoder (128 px input)."""

from __future__ import annotations

from functools import partial
from typing import Any

IMG_SIZE, PATCH, DIM = 128, 8, 64


def build_shapes_sam() -> Any:
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = IMG_SIZE // PATCH
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=IMG_SIZE,
            patch_size=PATCH,
            embed_dim=DIM,
            depth=4,
            num_heads=4,
            mlp_ratio=4.0,
            out_chans=DIM,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=0,
            global_attn_indexes=(0, 1, 2, 3),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=DIM,
            image_embedding_size=(grid, grid),
            input_image_size=(IMG_SIZE, IMG_SIZE),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=DIM, mlp_dim=256, num_heads=4),
            transformer_dim=DIM,
            iou_head_depth=3,
            iou_head_hidden_dim=64,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()
