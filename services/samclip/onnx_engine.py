"""SAM-CLIP on ONNX Runtime (`SAMCLIP_ENGINE=onnxruntime`).

Each network's compute runs in ONNX Runtime; the backends' own code (resizing, prompts,
the point grid, mask post-processing, pooling, caches) is unchanged. Exported through
torch.onnx's TorchScript path (`services.runtime.engines.torch_export`):

- SAM's image encoder (B x 3 x S x S preprocessed images to B x C x h x w embeddings, the
  batch dynamic; its attention exported as SDPA with the relative-position mask);
- SAM's mask decoder (`MaskDecoder.predict_masks`: one image's embedding, its positional
  encoding and N prompts' sparse (N x k x C, k dynamic) and dense embeddings to all four
  masks and IoU predictions; `forward`'s choice of single or multiple masks stays in torch).
  The prompt encoder stays in torch: a few embedding look-ups, no matrix product;
- CLIP's image tower and text tower (`encode_image`, `encode_text`, unnormalised; the
  backends normalise);
- the merged SAM-CLIP's backbone (patch embedding and blocks), SAM neck and CLIP head blocks;
  its CLIP head's projection (a LayerNorm and an MLP on pooled vectors) stays in torch.

Files are cached in `cache_dir/onnx/<SHA-256 of the weights>/` and verified when loaded;
missing ones are exported at start and logged. `export-onnx samclip` does it ahead of time.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from services.runtime.engines import (
    OPSET,
    ExportedFile,
    OrtRunner,
    cached_export,
    state_dict_sha256,
    torch_export,
    weights_sha256,
)

log = logging.getLogger(__name__)

SERVICE = "samclip"


class OrtFunction:
    """One exported network as a function of torch tensors, through host memory."""

    def __init__(self, session: Any, name: str) -> None:
        self.session, self.name = session, name
        self.input_names = [i.name for i in session.get_inputs()]

    def __call__(self, *inputs: Tensor) -> list[Tensor]:
        device = inputs[0].device
        feeds = {
            name: x.detach().to("cpu").contiguous().numpy() for name, x in zip(self.input_names, inputs, strict=True)
        }
        return [torch.from_numpy(o).to(device) for o in self.session.run(None, feeds)]


class OrtImageEncoder(nn.Module):
    """Stands in for segment_anything's ImageEncoderViT: the same img_size and patch
    embedding (which the backends read), the forward in ONNX Runtime."""

    def __init__(self, encoder: nn.Module, run: OrtFunction) -> None:
        super().__init__()
        self.img_size = encoder.img_size
        self.patch_embed = encoder.patch_embed
        self.run = run

    def forward(self, x: Tensor) -> Tensor:
        return self.run(x.float())[0]


class _Call(nn.Module):
    """A method of a module as a module, for export."""

    def __init__(self, fn: Callable[..., Any], owner: nn.Module) -> None:
        super().__init__()
        self.owner, self.fn = owner, fn

    def forward(self, *x: Tensor) -> Any:
        return self.fn(*x)


def _export(
    fn: Callable[..., Any],
    owner: nn.Module,
    inputs: tuple[Tensor, ...],
    names: tuple[list[str], list[str]],
    axes: dict[str, dict[int, str]],
    path: Path,
) -> None:
    torch_export(_Call(fn, owner), inputs, path, input_names=names[0], output_names=names[1], dynamic_axes=axes)


class Exporter:
    """Exports (or finds cached) and opens the parts of one service's networks."""

    def __init__(self, cache_dir: Path, runner: OrtRunner, source: str) -> None:
        self.cache_dir, self.runner, self.source = cache_dir, runner, source
        self.files: list[ExportedFile] = []

    def function(
        self,
        digest: str,
        name: str,
        fn: Callable[..., Any],
        owner: nn.Module,
        inputs: tuple[Tensor, ...],
        names: tuple[list[str], list[str]],
        axes: dict[str, dict[int, str]],
    ) -> OrtFunction:
        config = {"service": SERVICE, "part": name, "source": self.source, "opset": OPSET, "torch": torch.__version__}
        export = functools.partial(_export, fn, owner, inputs, names, axes)
        exported = cached_export(self.cache_dir, digest, name, config, export, service=SERVICE)
        self.files.append(exported)
        return OrtFunction(self.runner.session(exported.path, name), name)


def example(*shape: int) -> Tensor:
    """An example input for tracing, drawn without touching torch's global random state (which
    would change the random weights built after an export)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _digest(path: Path | None, module: nn.Module) -> str:
    return weights_sha256(path) if path is not None else state_dict_sha256(module.state_dict())


def _decoder_inputs(sam: Any, prompts: int = 3, tokens: int = 3) -> tuple[Tensor, ...]:
    pe = sam.prompt_encoder
    c = int(pe.embed_dim)
    h, w = pe.image_embedding_size
    return (example(1, c, h, w), pe.get_dense_pe(), example(prompts, tokens, c), example(prompts, c, h, w))


def install_sam_decoder(sam: Any, exporter: Exporter, digest: str, label: str) -> None:
    """SAM's mask decoder (predict_masks) in ONNX Runtime."""
    decoder = sam.mask_decoder
    with torch.no_grad():
        inputs = _decoder_inputs(sam)
    run = exporter.function(
        digest,
        f"{label}.mask_decoder",
        decoder.predict_masks,
        decoder,
        inputs,
        (["image_embeddings", "image_pe", "sparse_embeddings", "dense_embeddings"], ["masks", "iou_predictions"]),
        {"sparse_embeddings": {0: "prompts", 1: "tokens"}, "dense_embeddings": {0: "prompts"},
         "masks": {0: "prompts"}, "iou_predictions": {0: "prompts"}},  # fmt: skip
    )

    def predict_masks(
        image_embeddings: Tensor, image_pe: Tensor, sparse_prompt_embeddings: Tensor, dense_prompt_embeddings: Tensor
    ) -> tuple[Tensor, Tensor]:
        if image_embeddings.shape[0] != 1:  # the export expands one image's embedding over the prompts
            raise ValueError("the ONNX mask decoder takes one image's embedding at a time")
        masks, iou = run(image_embeddings.float(), image_pe.float(), sparse_prompt_embeddings.float(),
                         dense_prompt_embeddings.float())  # fmt: skip
        return masks, iou

    decoder.predict_masks = predict_masks  # MaskDecoder.forward calls it, then picks the masks
    for name in ("transformer", "output_upscaling", "output_hypernetworks_mlps", "iou_prediction_head"):
        setattr(decoder, name, nn.Identity())  # the weights live in the ONNX file now


def install_sam(sam: Any, exporter: Exporter, weights: Path | None, label: str) -> None:
    """SAM's image encoder and mask decoder in ONNX Runtime (`sam` on CPU, eval, loaded)."""
    digest = _digest(weights, sam)
    encoder = sam.image_encoder
    size = int(encoder.img_size)
    run = exporter.function(
        digest,
        f"{label}.image_encoder",
        encoder.forward,
        encoder,
        (example(1, 3, size, size),),
        (["images"], ["embeddings"]),
        {"images": {0: "batch"}, "embeddings": {0: "batch"}},
    )
    install_sam_decoder(sam, exporter, digest, label)
    sam.image_encoder = OrtImageEncoder(encoder, run)


def install_clip(clip: Any, exporter: Exporter, weights: Path | None, label: str, *, image: bool) -> None:
    """CLIP's text tower (and its image tower, if `image`) in ONNX Runtime: `encode_text` and
    `encode_image` keep their signatures (normalize=...)."""
    import torch.nn.functional as F

    digest = _digest(weights, clip)
    context = int(clip.context_length) if hasattr(clip, "context_length") else 77
    text = exporter.function(
        digest,
        f"{label}.text_tower",
        clip.encode_text,
        clip,
        (torch.zeros(2, context, dtype=torch.long),),
        (["tokens"], ["embeddings"]),
        {"tokens": {0: "batch"}, "embeddings": {0: "batch"}},
    )

    def encode_text(tokens: Tensor, normalize: bool = False) -> Tensor:
        out = text(tokens.long())[0]
        return F.normalize(out, dim=-1) if normalize else out

    if image:
        size = clip.visual.image_size
        size = int(size[0] if isinstance(size, tuple | list) else size)
        vision = exporter.function(
            digest,
            f"{label}.image_tower",
            clip.encode_image,
            clip,
            (example(2, 3, size, size),),
            (["images"], ["embeddings"]),
            {"images": {0: "batch"}, "embeddings": {0: "batch"}},
        )

        def encode_image(images: Tensor, normalize: bool = False) -> Tensor:
            out = vision(images.float())[0]
            return F.normalize(out, dim=-1) if normalize else out

        clip.encode_image = encode_image
    clip.encode_text = encode_text


def install_merged(merged: Any, exporter: Exporter, weights: Path | None, label: str) -> None:
    """The merged network's backbone, SAM neck, CLIP head blocks and SAM mask decoder in
    ONNX Runtime."""
    digest = _digest(weights, merged)
    encoder = merged.sam.image_encoder
    size = int(encoder.img_size)
    x = example(1, 3, size, size)
    with torch.no_grad():
        tokens = merged.backbone(x)
    grid = {1: "h", 2: "w"}
    backbone = exporter.function(
        digest, f"{label}.backbone", merged.backbone, merged, (x,), (["images"], ["tokens"]),
        {"images": {0: "batch"}, "tokens": {0: "batch", **grid}},
    )  # fmt: skip
    neck = exporter.function(
        digest, f"{label}.sam_neck", merged.sam_features, merged, (tokens,), (["tokens"], ["features"]),
        {"tokens": {0: "batch", **grid}, "features": {0: "batch", 2: "h", 3: "w"}},
    )  # fmt: skip
    head = exporter.function(
        digest, f"{label}.clip_head", merged.clip_head.tokens, merged.clip_head, (tokens,),
        (["tokens"], ["head_tokens"]), {"tokens": {0: "batch", **grid}, "head_tokens": {0: "batch", **grid}},
    )  # fmt: skip
    install_sam_decoder(merged.sam, exporter, digest, label)
    merged.backbone = lambda images: backbone(images.float())[0]
    merged.sam_features = lambda t: neck(t.float())[0]
    merged.clip_head.tokens = lambda t: head(t.float())[0]
    encoder.blocks = nn.ModuleList()  # their weights live in the ONNX files now
    encoder.neck = nn.Identity()
    merged.clip_head.blocks = nn.ModuleList()


def export_for_settings(cache_dir: Path | None = None) -> list[ExportedFile]:
    """`export-onnx samclip`: export (or verify) the files of the networks the SAMCLIP_*
    settings configure, as a start with SAMCLIP_ENGINE=onnxruntime would. Registered under
    the `visioncompare.onnx` entry-point group."""
    from services.samclip.model import SamClipModel
    from services.samclip.settings import SamClipSettings

    overrides: dict[str, Any] = {"engine": "onnxruntime", "metrics_port": None}
    if cache_dir is not None:
        overrides["cache_dir"] = cache_dir
    model = SamClipModel(SamClipSettings(**overrides))
    model.load()
    return list(getattr(model.backend, "onnx_files", []))
