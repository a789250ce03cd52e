"""The SAM encoder's attention through fused SDPA (visioncompare/samclip/attention.py) equals
segment_anything's own, and both SAM-CLIP backends run it."""

from __future__ import annotations

import pytest
import torch
from segment_anything.modeling.image_encoder import Attention, Block

from visioncompare.runtime.device import plan_device
from visioncompare.samclip import attention
from visioncompare.samclip.architectures import build_sam
from visioncompare.samclip.attention import ChunkedMlpBlock, SdpaAttention, use_chunked_mlp, use_sdpa_attention
from visioncompare.samclip.composed import build_composed
from visioncompare.samclip.merged import build_merged_backend
from visioncompare.samclip.settings import SamClipSettings

ATOL = 1e-5  # float32, outputs of magnitude ~1


def attention_pair(dim: int, heads: int, size: tuple[int, int], rel_pos: bool) -> tuple[Attention, SdpaAttention]:
    torch.manual_seed(0)
    eager = Attention(dim, heads, qkv_bias=True, use_rel_pos=rel_pos, input_size=size).eval()
    if rel_pos:
        with torch.no_grad():  # segment_anything initialises them to zero: make the bias matter
            eager.rel_pos_h.normal_(0, 0.5)
            eager.rel_pos_w.normal_(0, 0.5)
    fused = Attention(dim, heads, qkv_bias=True, use_rel_pos=rel_pos, input_size=size).eval()
    fused.load_state_dict(eager.state_dict())
    use_sdpa_attention(fused)
    assert isinstance(fused, SdpaAttention)
    return eager, fused


@pytest.mark.parametrize(
    ("batch", "size", "rel_pos"),
    [(1, (8, 8), True), (3, (14, 14), True), (2, (6, 10), True), (2, (8, 8), False)],
    ids=["global", "windows", "non-square", "no-rel-pos"],
)
def test_equals_segment_anything_attention(batch: int, size: tuple[int, int], rel_pos: bool) -> None:
    eager, fused = attention_pair(64, 4, size, rel_pos)
    x = torch.randn(batch, *size, 64)
    with torch.inference_mode():
        expected, got = eager(x), fused(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=1e-4)


def test_the_blocked_path_for_large_masks_equals_it_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mask over MASK_BLOCK_BYTES per head is built and used one head and a few query rows
    at a time (as the global layers of ViT-B at 1024 px are); rows need not divide evenly."""
    eager, fused = attention_pair(48, 3, (12, 12), True)
    x = torch.randn(1, 12, 12, 48)
    monkeypatch.setattr(attention, "MASK_BLOCK_BYTES", 5 * 12 * 144 * 4)  # 5 rows of 12 queries a block
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), eager(x), atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("window", [0, 4], ids=["global", "windows"])
def test_the_chunked_mlp_block_equals_segment_anything_s(window: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The MLP over blocks of tokens (rows need not divide evenly): the same outputs; with gradients
    (training), the block runs segment_anything's forward unchanged."""
    torch.manual_seed(0)
    eager = Block(32, 2, window_size=window, input_size=(10, 10)).eval()
    chunked = Block(32, 2, window_size=window, input_size=(10, 10)).eval()
    chunked.load_state_dict(eager.state_dict())
    assert use_chunked_mlp(chunked) == 1 and isinstance(chunked, ChunkedMlpBlock)
    monkeypatch.setattr(attention, "MLP_CHUNK_BYTES", 7 * 128 * 4)  # 7 tokens a block of 100 per image
    x = torch.randn(2, 10, 10, 32)
    with torch.inference_mode():
        torch.testing.assert_close(chunked(x), eager(x), atol=1e-6, rtol=1e-6)
    y = chunked(x.requires_grad_())
    y.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(y.detach(), eager(x).detach())


def test_the_shapes_encoder_gives_the_same_embeddings() -> None:
    eager = build_sam("shapes")
    fused = build_sam("shapes")
    fused.load_state_dict(eager.state_dict())
    assert use_sdpa_attention(fused) == len(fused.image_encoder.blocks)
    assert use_chunked_mlp(fused) == len(fused.image_encoder.blocks)
    image = torch.randn(2, 3, eager.image_encoder.img_size, eager.image_encoder.img_size)
    with torch.inference_mode():
        expected, got = eager.image_encoder(image), fused.image_encoder(image)
    cosine = torch.nn.functional.cosine_similarity(expected.flatten(1), got.flatten(1)).min()
    assert cosine > 0.99999
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", ["composed", "merged"])
def test_both_backends_run_sdpa_unless_told_eager(backend: str) -> None:
    plan = plan_device("cpu")
    for mode, cls in (("sdpa", SdpaAttention), ("eager", Attention)):
        settings = SamClipSettings(metrics_port=None, backend=backend, sam_attention=mode)  # type: ignore[arg-type]
        built = build_composed(settings, plan) if backend == "composed" else build_merged_backend(settings, plan)
        network = built.sam if backend == "composed" else built.merged  # type: ignore[union-attr]
        kinds = {type(m) for m in network.modules() if isinstance(m, Attention)}
        assert kinds == {cls}
        blocks = {type(m) for m in network.modules() if isinstance(m, Block)}
        assert blocks == {ChunkedMlpBlock if mode == "sdpa" else Block}
