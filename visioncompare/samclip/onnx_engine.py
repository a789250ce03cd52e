"""SAM-CLIP on ONNX Runtime (`SAMCLIP_ENGINE=onnxruntime`).

Each network's compute runs in ONNX Runtime; the backends' own code (resizing, prompts,
the point grid, mask post-processing, pooling, caches) is unchanged. Exported through
torch.onnx's TorchScript path (`visioncompare.runtime.engines.torch_export`):

- SAM's image encoder (B x 3 x S x S preprocessed images to B x C x h x w embeddings, the
  batch dynamic; its attention exported as SDPA with the relative-position mask);
- SAM's prompt encoder with its mask decoder, one graph (`PromptDecoder`, the inputs of
  segment_anything's SamOnnxModel: one image's embedding, N prompts of k points with labels,
  a box as two corners labelled 2 and 3, mask_input and has_mask_input; out, all four
  low-resolution masks and IoU predictions; `MaskDecoder.forward`'s choice of single or
  multiple masks and the upsampling stay in torch);
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

from visioncompare.runtime.engines import (
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


class PromptDecoder(nn.Module):
    """SAM's prompt encoder and mask decoder as one graph, for export: the inputs of
    segment_anything.utils.onnx.SamOnnxModel (points and their labels, a box as its two corners
    labelled 2 and 3, -1 a padding point; `mask_input` used where `has_mask_input` is 1), the
    outputs of `MaskDecoder.predict_masks` (every mask token's low-resolution mask and predicted
    IoU). SamOnnxModel's mask choice and upsampling are left out: the backends pick and upsample
    as in torch."""

    frame: Tensor

    def __init__(self, sam: Any) -> None:
        super().__init__()
        self.prompt_encoder, self.mask_decoder = sam.prompt_encoder, sam.mask_decoder
        h, w = self.prompt_encoder.input_image_size
        self.register_buffer("frame", torch.tensor([float(w), float(h)]), persistent=False)

    def forward(
        self,
        image_embeddings: Tensor,
        point_coords: Tensor,
        point_labels: Tensor,
        mask_input: Tensor,
        has_mask_input: Tensor,
    ) -> tuple[Tensor, Tensor]:
        pe = self.prompt_encoder
        points = pe.pe_layer._pe_encoding((point_coords + 0.5) / self.frame)  # as PromptEncoder._embed_points
        labels = point_labels.unsqueeze(-1)
        points = points * (labels != -1) + pe.not_a_point_embed.weight * (labels == -1)
        for i in range(pe.num_point_embeddings):  # 0/1 background/foreground, 2/3 a box's corners
            points = points + pe.point_embeddings[i].weight * (labels == i)
        dense = has_mask_input * pe.mask_downscaling(mask_input)
        dense = dense + (1 - has_mask_input) * pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        masks, iou = self.mask_decoder.predict_masks(image_embeddings, pe.get_dense_pe(), points, dense)
        return masks, iou


class OrtPromptEncoder(nn.Module):
    """Stands in for SAM's PromptEncoder, whose embedding now runs in ONNX Runtime inside the
    prompt decoder's graph: `forward` (same arguments) only lays the prompts out as that graph
    takes them, and `OrtMaskDecoder` runs it. "Sparse" is N x k x 3 (x, y, label: points, then a
    padding point if there is no box, then a box's corners), "dense" the N x 1 x 4h x 4w mask
    inputs (0 x ... for none)."""

    dense_pe: Tensor

    def __init__(self, encoder: Any) -> None:
        super().__init__()
        self.embed_dim: int = encoder.embed_dim
        self.image_embedding_size: tuple[int, int] = encoder.image_embedding_size
        self.input_image_size: tuple[int, int] = encoder.input_image_size
        self.mask_input_size: tuple[int, int] = encoder.mask_input_size
        self.register_buffer("dense_pe", encoder.get_dense_pe().detach().clone(), persistent=False)

    def get_dense_pe(self) -> Tensor:
        return self.dense_pe  # folded into the graph; kept for callers that pass it along

    def forward(
        self, points: tuple[Tensor, Tensor] | None, boxes: Tensor | None, masks: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        coords, labels = [], []
        if points is not None:
            xy, lab = points
            coords.append(xy.float())
            labels.append(lab.float())
            if boxes is None:  # PromptEncoder pads point-only prompts with a "not a point"
                coords.append(torch.zeros(xy.shape[0], 1, 2, device=xy.device))
                labels.append(torch.full((xy.shape[0], 1), -1.0, device=xy.device))
        if boxes is not None:
            coords.append(boxes.float().reshape(-1, 2, 2))
            labels.append(torch.tensor([[2.0, 3.0]], device=boxes.device).expand(boxes.shape[0], 2))
        if not coords:
            raise ValueError("the ONNX prompt decoder needs at least one point or box")
        sparse = torch.cat([torch.cat(coords, dim=1), torch.cat(labels, dim=1)[..., None]], dim=-1)
        h, w = self.mask_input_size
        dense = masks.float() if masks is not None else sparse.new_zeros(0, 1, h, w)
        return sparse, dense


class OrtMaskDecoder(nn.Module):
    """Stands in for SAM's MaskDecoder: the prompt decoder's graph (prompt encoding and
    `predict_masks`) in ONNX Runtime, then `MaskDecoder.forward`'s choice of the single mask or
    the three others, in torch."""

    def __init__(self, decoder: nn.Module, run: OrtFunction) -> None:
        super().__init__()
        self.num_mask_tokens = decoder.num_mask_tokens
        self.run = run

    def forward(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        multimask_output: bool,
    ) -> tuple[Tensor, Tensor]:
        masks, iou = self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings)
        keep = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, keep, :, :], iou[:, keep]

    def predict_masks(
        self, image_embeddings: Tensor, image_pe: Tensor, sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        if image_embeddings.shape[0] != 1:  # the graph expands one image's embedding over the prompts
            raise ValueError("the ONNX prompt decoder takes one image's embedding at a time")
        prompts, mask_input = sparse_prompt_embeddings, dense_prompt_embeddings
        has_mask = torch.ones(1) if mask_input.shape[0] else torch.zeros(1)
        if not mask_input.shape[0]:
            mask_input = mask_input.new_zeros(1, *mask_input.shape[1:])
        masks, iou = self.run(image_embeddings.float(), prompts[..., :2].contiguous(),
                              prompts[..., 2].contiguous(), mask_input, has_mask.to(prompts.device))  # fmt: skip
        return masks, iou


def _decoder_inputs(sam: Any, prompts: int = 3, points: int = 3) -> tuple[Tensor, ...]:
    pe = sam.prompt_encoder
    c = int(pe.embed_dim)
    h, w = pe.image_embedding_size
    coords = example(prompts, points, 2).abs() * float(max(pe.input_image_size)) / 4
    labels = torch.tensor([[1.0, 0.0, -1.0], [2.0, 3.0, 1.0], [1.0, 2.0, 3.0]])[:prompts, :points]
    return example(1, c, h, w), coords, labels, torch.zeros(1, 1, 4 * h, 4 * w), torch.zeros(1)


def install_sam_decoder(sam: Any, exporter: Exporter, digest: str, label: str) -> None:
    """SAM's prompt encoder and mask decoder, as one graph (`PromptDecoder`), in ONNX Runtime:
    `sam.prompt_encoder` and `sam.mask_decoder` become the stand-ins that lay out its inputs and
    run it, so the backends' calls (prompts, then decoder) are unchanged."""
    graph = PromptDecoder(sam).eval()
    with torch.no_grad():
        inputs = _decoder_inputs(sam)
    run = exporter.function(
        digest,
        f"{label}.prompt_decoder",
        graph.forward,
        graph,
        inputs,
        (["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input"],
         ["masks", "iou_predictions"]),
        {"point_coords": {0: "prompts", 1: "points"}, "point_labels": {0: "prompts", 1: "points"},
         "mask_input": {0: "mask_batch"}, "masks": {0: "prompts"}, "iou_predictions": {0: "prompts"}},
    )  # fmt: skip
    sam.mask_decoder = OrtMaskDecoder(sam.mask_decoder, run)  # the weights live in the ONNX file now
    sam.prompt_encoder = OrtPromptEncoder(sam.prompt_encoder)


def install_sam(sam: Any, exporter: Exporter, weights: Path | None, label: str) -> None:
    """SAM's image encoder, and its prompt encoder with mask decoder, in ONNX Runtime (`sam` on CPU,
    eval, loaded)."""
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
    """The merged network's backbone, SAM neck, CLIP head blocks and SAM prompt decoder in
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
