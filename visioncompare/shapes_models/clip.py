"""The shapes CLIP: open_clip's CLIP with small towers, trained contrastively on shapes crops."""

from __future__ import annotations

from typing import Any

CONTEXT_LENGTH = 24
CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"layers": 3, "width": 96, "head_width": 32, "patch_size": 8, "image_size": 48},
    "text_cfg": {"context_length": CONTEXT_LENGTH, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def build_shapes_clip() -> tuple[Any, Any]:
    """The model (random init) and its tokenizer (open_clip's BPE, shipped with the package)."""
    from open_clip import CLIP, CLIPTextCfg, CLIPVisionCfg
    from open_clip.tokenizer import SimpleTokenizer

    model = CLIP(
        embed_dim=CONFIG["embed_dim"],
        vision_cfg=CLIPVisionCfg(**CONFIG["vision_cfg"]),
        text_cfg=CLIPTextCfg(**CONFIG["text_cfg"]),
    )
    return model.eval(), SimpleTokenizer(context_length=CONTEXT_LENGTH)
