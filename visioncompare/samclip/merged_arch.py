"""The merged SAM-CLIP network (arXiv 2310.15308, sections 3-4): one ViT backbone, a SAM head
and a CLIP head.

- Backbone: SAM's ViT image encoder (patch embedding, position embedding, blocks),
  initialised from the SAM teacher.
- SAM head: the encoder's neck and SAM's mask decoder, initialised from the teacher; the
  prompt encoder is the teacher's, frozen.
- CLIP head: three transformer blocks initialised as copies of the backbone's last block;
  then max-pooling over patch tokens, LayerNorm and an MLP with two hidden layers into the
  CLIP teacher's embedding space. Without pooling, LayerNorm and MLP map every patch token
  into that space ("text to pixel" semantic segmentation). Text goes through the frozen
  CLIP teacher's text tower, which is not part of this module. The head keeps its own logit
  scale, as a factor of the teacher's (`logit_scale_factor`, 1 until a calibration fits it):
  distilled into the teacher's space, the student's embeddings of ambiguous images are
  less peaked than the teacher's, and its label probabilities flatter at the same scale.

The same class serves the shapes SAM and the official ViT-B/L/H; nothing here trains.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

CLIP_HEAD_BLOCKS = 3
#: The state-dict key of the head's logit scale factor.
LOGIT_SCALE_FACTOR = "clip_head.logit_scale_factor"


class ClipHead(nn.Module):
    """Blocks over the backbone's patch tokens, then LayerNorm + MLP into CLIP's space."""

    logit_scale_factor: torch.Tensor  # a buffer: see the module's docstring

    def __init__(self, blocks: list[nn.Module], dim: int, embed_dim: int, hidden: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, embed_dim)
        )
        # logits = logit_scale_factor x the CLIP teacher's logit scale x cosine similarity
        self.register_buffer("logit_scale_factor", torch.ones(()))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """A merge saved before the head kept its own scale has no factor: the teacher's scale
        (as BatchNorm fills in num_batches_tracked for older checkpoints)."""
        state_dict.setdefault(prefix + "logit_scale_factor", torch.ones(()))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """B x h x w x C backbone tokens -> B x h x w x C head tokens (before projection)."""
        for block in self.blocks:
            x = block(x)
        return x

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        """... x C tokens (pooled or not) -> ... x D in CLIP's embedding space, unnormalised."""
        return self.mlp(self.norm(tokens))


class MergedSamClip(nn.Module):
    """`sam` is a segment-anything `Sam` whose image encoder is the shared backbone (+ neck);
    `clip_head` reads the backbone's tokens."""

    def __init__(self, sam: Any, clip_head: ClipHead) -> None:
        super().__init__()
        self.sam = sam
        self.clip_head = clip_head

    @property
    def img_size(self) -> int:
        return int(self.sam.image_encoder.img_size)

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed B x 3 x S x S images -> B x h x w x C tokens."""
        encoder = self.sam.image_encoder
        t = encoder.patch_embed(x)
        if encoder.pos_embed is not None:
            t = t + encoder.pos_embed
        for block in encoder.blocks:
            t = block(t)
        return t

    def sam_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """B x C' x h x w: what SAM's mask decoder reads."""
        return self.sam.image_encoder.neck(tokens.permute(0, 3, 1, 2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One backbone pass: (SAM features B x C' x h x w, CLIP head tokens B x h x w x C)."""
        tokens = self.backbone(x)
        return self.sam_features(tokens), self.clip_head.tokens(tokens)

    def pooled(self, head_tokens: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Max-pool over patches (all of them, or those where `weights` (B x h x w, or
        R x h x w regions of one image) is >= 0.5, at least the heaviest), LayerNorm, MLP:
        B (or R) x D, unnormalised."""
        if weights is None:
            return self.clip_head.project(head_tokens.amax(dim=(1, 2)))
        flat_w = weights.flatten(1)  # R x hw
        keep = flat_w >= 0.5
        keep |= flat_w == flat_w.amax(dim=1, keepdim=True)  # never an empty region
        tokens = head_tokens.flatten(1, 2)  # B x hw x C
        if tokens.shape[0] == 1 and flat_w.shape[0] != 1:
            tokens = tokens.expand(flat_w.shape[0], -1, -1)
        masked = tokens.masked_fill(~keep[..., None], float("-inf"))
        return self.clip_head.project(masked.amax(dim=1))

    def dense(self, head_tokens: torch.Tensor) -> torch.Tensor:
        """B x h x w x D: every patch token in CLIP's space, unnormalised."""
        return self.clip_head.project(head_tokens)


def build_merged(sam: Any, clip_embed_dim: int) -> MergedSamClip:
    """The student, initialised from a SAM teacher (a deep copy: the teacher is untouched).
    The CLIP head's MLP is 2 x the backbone width wide."""
    sam = copy.deepcopy(sam)
    last = sam.image_encoder.blocks[-1]
    dim = int(sam.image_encoder.patch_embed.proj.out_channels)
    head = ClipHead([copy.deepcopy(last) for _ in range(CLIP_HEAD_BLOCKS)], dim, clip_embed_dim, 2 * dim)
    return MergedSamClip(sam, head)


def region_weights(masks: torch.Tensor, input_size: tuple[int, int], img_size: int, grid: int) -> torch.Tensor:
    """R x H x W boolean masks at the original image size -> R x grid x grid patch coverage in
    [0, 1], in the backbone's resized and padded frame."""
    t = masks.float()[:, None]
    t = F.interpolate(t, size=input_size, mode="bilinear", align_corners=False)
    t = F.pad(t, (0, img_size - input_size[1], 0, img_size - input_size[0]))
    return F.adaptive_avg_pool2d(t, (grid, grid))[:, 0]
