"""Segment Anything's image-encoder attention through fused scaled-dot-product attention.

segment_anything's `Attention.forward` computes the full attention matrices (q @ k^T), adds
the decomposed relative-position bias onto them (`add_decomposed_rel_pos`: one more pass
over matrices of heads x N x N floats, 805 MB per global layer of ViT-B at 1024 px), takes
the softmax (another) and multiplies by v (another). `SdpaAttention` computes the same
function with `F.scaled_dot_product_attention`, the bias passed as the attention mask, as
segment-anything-fast (the PyTorch team's) does: score, bias, softmax and the product with v
in one fused kernel. On CPU the global layers' mask is built and used one head and a block
of query rows at a time, so that each block is still in cache when the kernel reads it.

`ChunkedMlpBlock` runs each encoder block's MLP over a block of tokens at a time in inference:
the same function row by row (bit-identical on CPU), without the whole hidden layer (4 x dim
per token: 50 MB for ViT-B's 4096 tokens) ever existing. Tensors that large get fresh pages
from the kernel on every call (glibc maps allocations over 32 MB anew), and the first touch
of those pages cost more than the MLP's arithmetic lost to smaller products.

Both SAM-CLIP backends put both into their SAM (`use_sdpa_attention`, `use_chunked_mlp`),
unless `SAMCLIP_SAM_ATTENTION=eager`. The parameters and state dict are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, Block, get_rel_pos, window_partition, window_unpartition
from torch import Tensor, nn

#: The MLP of an encoder block runs over blocks of tokens whose hidden layer is about this size.
MLP_CHUNK_BYTES = 16 << 20
#: A relative-position mask larger than this per head is built in row blocks of about this
#: size (the kernel then reads each block from cache rather than memory).
MASK_BLOCK_BYTES = 8 << 20


def rel_pos_terms(attn: Attention, q: Tensor, hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """The decomposed relative-position terms of `add_decomposed_rel_pos`, per query, for q
    of shape (B, heads, H*W, C): rel_h (B, heads, H, W, H) and rel_w (B, heads, H, W, W);
    the bias of query (qh, qw) and key (kh, kw) is rel_h[qh, qw, kh] + rel_w[qh, qw, kw]."""
    h, w = hw
    b, n, _, c = q.shape
    rh = get_rel_pos(h, h, attn.rel_pos_h)  # H x H x C
    rw = get_rel_pos(w, w, attn.rel_pos_w)  # W x W x C
    r_q = q.reshape(b, n, h, w, c)
    # Contiguous, so that the mask built from them is laid out as SDPA reads it (no copy).
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, rh).contiguous()
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, rw).contiguous()
    return rel_h, rel_w


class SdpaAttention(Attention):
    """segment_anything's Attention (multi-head, optional decomposed relative positions),
    computed by F.scaled_dot_product_attention with the relative-position bias as its mask."""

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, _ = x.shape
        heads = self.num_heads
        # (3, B, heads, H*W, C); SDPA's default scale is C ** -0.5, as self.scale.
        q, k, v = self.qkv(x).reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        if not self.use_rel_pos:
            out = F.scaled_dot_product_attention(q, k, v)
            return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))
        rel_h, rel_w = rel_pos_terms(self, q, (h, w))
        per_head = b * (h * w) ** 2 * q.element_size()
        whole = self.training or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        if whole or per_head <= MASK_BLOCK_BYTES:
            mask = (rel_h[..., :, None] + rel_w[..., None, :]).view(b, heads, h * w, h * w)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))
        return self.proj(_blocked(q, k, v, rel_h, rel_w, (h, w)))


def _blocked(q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor, hw: tuple[int, int]) -> Tensor:
    """SDPA one head and a block of query rows at a time, the block's mask written into one
    reused buffer: B x H x W x (heads * C), as the projection takes it."""
    h, w = hw
    b, heads, _, c = q.shape
    rows = max(1, min(h, MASK_BLOCK_BYTES // (b * w * h * w * q.element_size())))
    k, v = k.contiguous(), v.contiguous()  # one copy here, rather than one per head and block in SDPA
    out = torch.empty(b, h, w, heads, c, dtype=q.dtype, device=q.device)
    target = out.view(b, h * w, heads, c).transpose(1, 2)  # B x heads x H*W x C, into `out`
    buffer = torch.empty(b, 1, rows, w, h, w, dtype=q.dtype, device=q.device)
    for n in range(heads):
        one = slice(n, n + 1)
        k_n, v_n = k[:, one], v[:, one]
        for r in range(0, h, rows):
            r2 = min(h, r + rows)
            mask = buffer[:, :, : r2 - r]
            torch.add(rel_h[:, one, r:r2, :, :, None], rel_w[:, one, r:r2, :, None, :], out=mask)
            queries = slice(r * w, r2 * w)
            target[:, one, queries] = F.scaled_dot_product_attention(
                q[:, one, queries], k_n, v_n, attn_mask=mask.view(b, 1, (r2 - r) * w, h * w)
            )
    return out.view(b, h, w, heads * c)


def _swap_class(module: nn.Module, old: type[nn.Module], new: type[nn.Module]) -> int:
    """Make every submodule of exactly class `old` a `new` (the same module, parameters and
    state; its methods changed). Returns how many it changed."""
    count = 0
    for m in module.modules():
        if type(m) is old:
            m.__class__ = new
            count += 1
    return count


def use_sdpa_attention(module: nn.Module) -> int:
    """Give every segment_anything Attention in `module` the SDPA forward. Returns how many."""
    return _swap_class(module, Attention, SdpaAttention)


class ChunkedMlpBlock(Block):
    """segment_anything's encoder Block, its MLP run over blocks of tokens in inference."""

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return super().forward(x)
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:  # as Block.forward
            h, w = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
        x = self.attn(x)
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, pad_hw, (h, w))
        x = (shortcut + x).contiguous()  # the first block's input is a permuted view of the patch embedding
        tokens = x.view(-1, x.shape[-1])
        hidden = self.mlp.lin1.out_features * x.element_size()
        rows = max(1, MLP_CHUNK_BYTES // hidden)
        for start in range(0, tokens.shape[0], rows):
            part = tokens[start : start + rows]
            part.add_(self.mlp(self.norm2(part)))
        return x


def use_chunked_mlp(module: nn.Module) -> int:
    """Give every segment_anything encoder Block in `module` the token-chunked MLP in inference.
    Returns how many."""
    return _swap_class(module, Block, ChunkedMlpBlock)
