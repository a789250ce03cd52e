"""Side-by-side pictures and text summaries of a comparison, drawn with Pillow."""

from __future__ import annotations

import colorsys
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import comparison_service_pb2 as cs
from visioncompare.v1 import vision_model_service_pb2 as vms

from services.runtime.masks import decode_rle
from services.runtime.types import RleMask

HEADER_PX = 44
GAP_PX = 8


def palette(n: int) -> list[tuple[int, int, int]]:
    """n well-separated colours (golden-ratio hues)."""
    return [
        tuple(int(c * 255) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 1.0))  # type: ignore[misc]
        for i in range(n)
    ]


def task_name(task: int) -> str:
    return pb.Task.Name(task).removeprefix("TASK_").lower().replace("_", "-")


def _output(result: cs.ModelResult) -> vms.DetectResponse | vms.SegmentResponse | vms.ClassifyResponse | None:
    field = result.WhichOneof("output")
    return getattr(result, field) if field else None


def _draw_panel(base: Image.Image, result: cs.ModelResult, font: ImageFont.ImageFont) -> Image.Image:
    output = _output(result)
    canvas = base.convert("RGBA")
    if result.status.code != 0 or output is None:
        canvas = ImageOps.grayscale(base).convert("RGBA")
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    instances = list(getattr(output, "instances", []))
    colours = palette(len(instances))
    for instance, colour in zip(instances, colours, strict=True):
        if instance.HasField("mask"):
            r = instance.mask.rle
            mask = decode_rle(RleMask(r.height, r.width, r.counts))
            if mask.shape == (canvas.height, canvas.width):
                tint = Image.new("RGBA", canvas.size, (*colour, 110))
                overlay.paste(tint, (0, 0), Image.fromarray(mask.astype(np.uint8) * 255))
        b = instance.box
        draw.rectangle([b.x1, b.y1, b.x2, b.y2], outline=(*colour, 255), width=2)
        text = f"{instance.label.name} {instance.score:.2f}" if instance.HasField("label") else f"{instance.score:.2f}"
        draw.text((b.x1 + 2, max(b.y1 - 11, 0)), text, fill=(*colour, 255), font=font)
        for k in instance.keypoints:
            draw.ellipse([k.x - 2, k.y - 2, k.x + 2, k.y + 2], fill=(*colour, 255))
    if isinstance(output, vms.SegmentResponse) and output.HasField("label_map"):
        lm = output.label_map
        indices = np.frombuffer(lm.class_indices_u16le, dtype="<u2").reshape(lm.height, lm.width)
        colours_lm = np.array([(0, 0, 0), *palette(len(lm.class_names))], dtype=np.uint8)
        rgba = np.dstack([colours_lm[np.minimum(indices, len(colours_lm) - 1)], np.where(indices > 0, 110, 0)])
        overlay = Image.alpha_composite(overlay, Image.fromarray(rgba.astype(np.uint8), "RGBA"))
    if isinstance(output, vms.ClassifyResponse):
        for row, score in enumerate(output.scores[:5]):
            text = f"{score.label.name}: {score.label.score:.2f}"
            draw.text((4, 4 + 12 * row), text, fill=(255, 255, 0, 255), font=font)
    return Image.alpha_composite(canvas, overlay).convert("RGB")


def _header(result: cs.ModelResult) -> list[str]:
    output = _output(result)
    status = "OK" if result.status.code == 0 else f"ERROR {result.status.code}: {result.status.message}"
    lines = [f"{result.model_name}  {result.latency_ms:.0f} ms  {status}"]
    if output is not None and output.info.warnings:
        lines.append("; ".join(output.info.warnings))
    return lines


def side_by_side(image_bytes: bytes, response: cs.CompareResponse) -> Image.Image:
    """One panel per model, each the image with that model's output drawn on it."""
    base = ImageOps.exif_transpose(Image.open(io.BytesIO(image_bytes))).convert("RGB")
    font = ImageFont.load_default()
    panels = [_draw_panel(base, r, font) for r in response.results]
    width = sum(p.width for p in panels) + GAP_PX * (len(panels) - 1)
    sheet = Image.new("RGB", (max(width, 1), base.height + HEADER_PX), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    x = 0
    for panel, result in zip(panels, response.results, strict=True):
        sheet.paste(panel, (x, HEADER_PX))
        for row, line in enumerate(_header(result)):
            draw.text((x + 4, 4 + 13 * row), line[: max(panel.width // 6, 10)], fill=(235, 235, 235), font=font)
        x += panel.width + GAP_PX
    return sheet


def summary(response: cs.CompareResponse) -> str:
    """A short text report: each model's result and the agreement figures."""
    lines = [f"task: {task_name(response.task)}"]
    if response.labels_used:
        lines.append(f"labels used: {len(response.labels_used)} ({', '.join(response.labels_used[:8])}...)")
    for r in response.results:
        output = _output(r)
        if r.status.code != 0 or output is None:
            lines.append(f"- {r.model_name}: ERROR code {r.status.code}: {r.status.message} ({r.latency_ms:.0f} ms)")
            continue
        info = output.info
        weights = f"weights {info.weights}{'' if info.pretrained else ' (pretrained=false)'}"
        if isinstance(output, vms.ClassifyResponse):
            what = ", ".join(f"{s.label.name} {s.label.score:.2f}" for s in output.scores[:3])
        else:
            counts: dict[str, int] = {}
            for i in output.instances:
                name = i.label.name if i.HasField("label") else "mask"
                counts[name] = counts.get(name, 0) + 1
            what = f"{len(output.instances)} instances" + (
                f" ({', '.join(f'{n} x{c}' for n, c in sorted(counts.items()))})" if counts else ""
            )
        lines.append(f"- {r.model_name}: OK {r.latency_ms:.0f} ms, {what}; {weights}")
        if info.warnings:
            lines.append(f"    warnings: {'; '.join(info.warnings)}")
    for p in response.agreements:
        if p.WhichOneof("agreement") == "instances":
            a = p.instances
            kind = "mask" if a.iou_kind == cs.IOU_KIND_MASK else "box"
            lines.append(
                f"agreement {p.model_a} vs {p.model_b}: {len(a.matches)} matched "
                f"({kind} IoU >= {a.iou_threshold:.2f}), "
                f"mean IoU {a.mean_iou:.3f}, label agreement {a.label_agreement_rate:.0%}, "
                f"only {p.model_a} {a.only_a_count}, only {p.model_b} {a.only_b_count}"
            )
        elif p.WhichOneof("agreement") == "classification":
            c = p.classification
            lines.append(
                f"agreement {p.model_a} vs {p.model_b}: top-1 {'agrees' if c.top1_agree else 'differs'}, "
                f"top-{c.k} overlap {c.topk_overlap:.2f}"
            )
    return "\n".join(lines)


def capability_table(models: cs.ListModelsResponse) -> str:
    """The seed page's comparison table, one column per model."""
    rows: list[tuple[str, list[str]]] = []

    def add(name: str, values: list[str]) -> None:
        rows.append((name, values))

    caps = [m.capabilities for m in models.models]
    add("Model", [m.model_name for m in models.models])
    add("Name", [c.card.name or "?" for c in caps])
    add("Organization", [c.card.organization for c in caps])
    add("Category", [c.card.category for c in caps])
    add("Modality", [c.card.modality for c in caps])
    add("Release Date", [c.card.release_date for c in caps])
    add("Parameters", [f"{c.card.parameter_count / 1e6:.1f}M" if c.card.parameter_count else "" for c in caps])
    add("License", [c.card.license for c in caps])
    add("Paper", [c.card.paper_url for c in caps])
    vocab = {vms.VOCABULARY_NONE: "", vms.VOCABULARY_FIXED: " (fixed labels)", vms.VOCABULARY_OPEN: " (zero-shot)"}
    add("Tasks", ["; ".join(task_name(t.task) + vocab.get(t.vocabulary, "") for t in c.tasks) for c in caps])
    add("Features", [", ".join(c.card.features) for c in caps])
    add("State", ["serving" if m.state == cs.MODEL_STATE_SERVING else f"unavailable: {m.error}" for m in models.models])
    add("Device", [c.runtime.device for c in caps])
    add("Weights", [c.runtime.weights for c in caps])
    add("Pretrained", [str(c.runtime.pretrained).lower() if c.card.name else "" for c in caps])
    width0 = max(len(r[0]) for r in rows)
    widths = [max(len(r[1][i]) for r in rows) for i in range(len(models.models))]
    widths = [min(w, 60) for w in widths]
    out = []
    for name, values in rows:
        cells = [v[:60].ljust(w) for v, w in zip(values, widths, strict=True)]
        out.append(f"{name.ljust(width0)} | " + " | ".join(cells))
    return "\n".join(out)
