"""Side-by-side pictures and text summaries of a comparison, drawn with Pillow."""

from __future__ import annotations

import colorsys
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from visioncompare.runtime.masks import decode_rle
from visioncompare.runtime.tasks import short_name
from visioncompare.runtime.types import RleMask, Task
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import comparison_service_pb2 as cs
from visioncompare.v1 import vision_model_service_pb2 as vms

#: Panels are drawn with their longer side in this range: small images are upscaled
#: (a 245 px scene is unreadable at 1:1 next to 16 px text), huge ones downscaled.
MIN_PANEL_PX = 480
MAX_PANEL_PX = 1024
HEADER_FONT_PX = 16
LABEL_FONT_PX = 14
PAD_PX = 6
GAP_PX = 8
MAX_HEADER_LINES = 8
MAX_CLASSES_SAID = 8  # per-class IoU named in an agreement line
#: The pairs whose agreement the picture prints under the panels: those the panels cannot show
#: (instances' matches are visible in the panels themselves).
FOOTER_AGREEMENTS = ("label_map", "classification")
BACKGROUND = (24, 24, 24)


@dataclass(frozen=True)
class TextBox:
    """Where a piece of text went on the sheet: its box and the box of its panel (or header cell)."""

    text: str
    box: tuple[int, int, int, int]
    area: tuple[int, int, int, int]
    kind: str  # "header", "label", "score" or "agreement" (the footer)


@dataclass
class Sheet:
    """The side-by-side picture and the text drawn on it (for checks that nothing spills out)."""

    image: Image.Image
    texts: list[TextBox] = field(default_factory=list)
    scale: float = 1.0


def palette(n: int) -> list[tuple[int, int, int]]:
    """n well-separated colours (golden-ratio hues)."""
    colours = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 1.0)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours


def task_name(task: int) -> str:
    """A contract Task value's short name (visioncompare.runtime.tasks.short_name); "unspecified" for 0."""
    return short_name(Task(task)) if task else "unspecified"


def status_name(code: int) -> str:
    """A gRPC status code's name ("UNAVAILABLE" for 14), as the page prints it; the number when unknown."""
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return str(status.name)
    return str(code)


def option_name(option: int) -> str:
    return pb.TaskOption.Name(option).removeprefix("TASK_OPTION_").lower()


def _output(result: cs.ModelResult) -> vms.DetectResponse | vms.SegmentResponse | vms.ClassifyResponse | None:
    name = result.WhichOneof("output")
    return getattr(result, name) if name else None


def panel_scale(width: int, height: int) -> float:
    """The factor that brings the longer side into [MIN_PANEL_PX, MAX_PANEL_PX]."""
    longest = max(width, height, 1)
    if longest < MIN_PANEL_PX:
        return MIN_PANEL_PX / longest
    if longest > MAX_PANEL_PX:
        return MAX_PANEL_PX / longest
    return 1.0


def _font(size: int) -> ImageFont.FreeTypeFont:
    font = ImageFont.load_default(size=size)  # scalable since Pillow 10.1
    if not isinstance(font, ImageFont.FreeTypeFont):  # the fixed bitmap font: no size, no metrics
        raise RuntimeError("Pillow was built without FreeType; the side-by-side picture needs its scalable font")
    return font


def _text_box(
    draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font: ImageFont.FreeTypeFont
) -> tuple[int, int, int, int]:
    """`draw.textbbox`, in the whole pixels FreeType gives at a whole-pixel origin (Pillow types it as floats)."""
    left, top, right, bottom = draw.textbbox(xy, text, font=font)
    return int(left), int(top), int(right), int(bottom)


def _width(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str) -> float:
    return font.getlength(text)


def _fit(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: float) -> str:
    """`text`, cut with an ellipsis if it is wider than `width`."""
    if _width(font, text) <= width:
        return text
    while text and _width(font, text + "…") > width:
        text = text[:-1]
    return text + "…"


def wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: float) -> list[str]:
    """Lines of `text` no wider than `width`: broken at spaces, long words broken where they must."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if _width(font, candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while _width(font, word) > width:  # a word wider than the panel: split it
            cut = len(word)
            while cut > 1 and _width(font, word[:cut]) > width:
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    if line:
        lines.append(line)
    return lines


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def place_label(
    size: tuple[int, int],
    box: tuple[float, float, float, float],
    panel: tuple[int, int],
    taken: list[tuple[int, int, int, int]],
) -> tuple[int, int, int, int]:
    """A spot for a w x h label by its box, inside the panel, overlapping the labels placed so far the least.

    Tried in order: above the box, inside its top, below it, inside its bottom.
    """
    w, h = size
    x1, y1, x2, y2 = box
    candidates = [(x1, y1 - h), (x1, y1), (x1, y2), (x1, y2 - h)]
    best: tuple[int, int, int, int] | None = None
    best_overlap = 0
    for x, y in candidates:
        left = int(min(max(x, 0), max(panel[0] - w, 0)))
        top = int(min(max(y, 0), max(panel[1] - h, 0)))
        spot = (left, top, left + w, top + h)
        overlap = sum(_overlap(spot, t) for t in taken)
        if overlap == 0:
            return spot
        if best is None or overlap < best_overlap:
            best, best_overlap = spot, overlap
    assert best is not None
    return best


def _draw_panel(base: Image.Image, result: cs.ModelResult, scale: float) -> tuple[Image.Image, list[TextBox]]:
    """One model's panel at `scale` x the image's size, and the text drawn on it (panel coordinates)."""
    output = _output(result)
    size = (max(round(base.width * scale), 1), max(round(base.height * scale), 1))
    # Upscaled: pixels stay pixels (no ringing, and the masks, scaled the same way, line up exactly).
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    canvas = base.resize(size, resample).convert("RGBA")
    if result.status.code != 0 or output is None:
        canvas = ImageOps.grayscale(canvas).convert("RGBA")
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    font = _font(LABEL_FONT_PX)
    line, radius = (3, 4) if scale > 1.5 else (2, 3)
    instances = list(getattr(output, "instances", []))
    colours = palette(len(instances))
    for instance, colour in zip(instances, colours, strict=True):
        if instance.HasField("mask"):
            r = instance.mask.rle
            mask = decode_rle(RleMask(r.height, r.width, r.counts))
            if mask.shape == (base.height, base.width):
                alpha = Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)
                overlay.paste(Image.new("RGBA", size, (*colour, 110)), (0, 0), alpha)
    texts: list[TextBox] = []
    taken: list[tuple[int, int, int, int]] = []
    for instance, colour in zip(instances, colours, strict=True):
        b = instance.box
        box = (b.x1 * scale, b.y1 * scale, b.x2 * scale, b.y2 * scale)
        draw.rectangle(box, outline=(*colour, 255), width=line)
        for k in instance.keypoints:
            x, y = k.x * scale, k.y * scale
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(*colour, 255), outline=(0, 0, 0, 255))
    for instance, colour in zip(instances, colours, strict=True):  # labels last: on top of every box
        b = instance.box
        text = f"{instance.label.name} {instance.score:.2f}" if instance.HasField("label") else f"{instance.score:.2f}"
        text = _fit(text, font, size[0] - 4)
        left, top, right, bottom = _text_box(draw, (0, 0), text, font)
        spot = place_label(
            (right - left + 4, bottom - top + 4), (b.x1 * scale, b.y1 * scale, b.x2 * scale, b.y2 * scale), size, taken
        )
        taken.append(spot)
        draw.rectangle(spot, fill=(*colour, 230))
        draw.text((spot[0] + 2 - left, spot[1] + 2 - top), text, fill=(0, 0, 0, 255), font=font)
        texts.append(TextBox(text, spot, (0, 0, *size), "label"))
    if isinstance(output, vms.SegmentResponse) and output.HasField("label_map"):
        lm = output.label_map
        indices = np.frombuffer(lm.class_indices_u16le, dtype="<u2").reshape(lm.height, lm.width)
        colours_lm = np.array([(0, 0, 0), *palette(len(lm.class_names))], dtype=np.uint8)
        rgba = np.dstack([colours_lm[np.minimum(indices, len(colours_lm) - 1)], np.where(indices > 0, 110, 0)])
        tint = Image.fromarray(rgba.astype(np.uint8), "RGBA").resize(size, Image.Resampling.NEAREST)
        overlay = Image.alpha_composite(tint, overlay)
        draw = ImageDraw.Draw(overlay)
    if isinstance(output, vms.ClassifyResponse):
        y = PAD_PX
        for score in output.scores[:5]:
            text = _fit(f"{score.label.name}: {score.label.score:.2f}", font, size[0] - 2 * PAD_PX - 4)
            left, top, right, bottom = _text_box(draw, (0, 0), text, font)
            spot = (PAD_PX, y, PAD_PX + right - left + 4, y + bottom - top + 4)
            if spot[3] > size[1]:
                break
            draw.rectangle(spot, fill=(0, 0, 0, 180))
            draw.text((spot[0] + 2 - left, spot[1] + 2 - top), text, fill=(255, 255, 0, 255), font=font)
            texts.append(TextBox(text, spot, (0, 0, *size), "score"))
            y = spot[3] + 2
    return Image.alpha_composite(canvas, overlay).convert("RGB"), texts


def _header(result: cs.ModelResult, reference: bool = False) -> list[str]:
    output = _output(result)
    if reference:  # e.g. the ground truth: no latency, no status
        if isinstance(output, vms.ClassifyResponse):
            return [f"{result.model_name} · {', '.join(s.label.name for s in output.scores)}"]
        if isinstance(output, vms.SegmentResponse) and output.HasField("label_map"):
            return [f"{result.model_name} · {label_map_words(output.label_map)}"]
        return [f"{result.model_name} · {len(getattr(output, 'instances', []))} objects"]
    status = "OK" if result.status.code == 0 else f"{status_name(result.status.code)}: {result.status.message}"
    lines = [f"{result.model_name} · {result.latency_ms:.0f} ms · {status}"]
    if output is not None and output.info.warnings:
        lines.append("; ".join(output.info.warnings))
    return lines


def header_lines(result: cs.ModelResult, width: float, reference: bool = False) -> list[str]:
    """The header of one panel, wrapped to `width` px (at most MAX_HEADER_LINES, the last cut with …)."""
    font = _font(HEADER_FONT_PX)
    lines = [wrapped for line in _header(result, reference) for wrapped in wrap(line, font, width)]
    if len(lines) > MAX_HEADER_LINES:
        lines = [*lines[: MAX_HEADER_LINES - 1], _fit(lines[MAX_HEADER_LINES - 1] + " …", font, width)]
    return lines


def render(image_bytes: bytes, response: cs.CompareResponse, references: Sequence[cs.ModelResult] = ()) -> Sheet:
    """One panel per model, each the image with that model's output drawn on it, under a wrapped header;
    `references` (e.g. the ground truth, as a result) first, headed by their name alone. Under the
    panels, the agreement of label maps and classifications (FOOTER_AGREEMENTS), one pair a line."""
    base = ImageOps.exif_transpose(Image.open(io.BytesIO(image_bytes))).convert("RGB")
    scale = panel_scale(base.width, base.height)
    results = [*references, *response.results]
    drawn = [_draw_panel(base, r, scale) for r in results]
    font = _font(HEADER_FONT_PX)
    ascent, descent = font.getmetrics()
    line_px = ascent + descent + 2
    headers = [
        header_lines(r, panel.width - 2 * PAD_PX, n < len(references))
        for n, (r, (panel, _)) in enumerate(zip(results, drawn, strict=True))
    ]
    header_px = 2 * PAD_PX + line_px * max((len(h) for h in headers), default=1)
    width = sum(p.width for p, _ in drawn) + GAP_PX * max(len(drawn) - 1, 0)
    panels_px = max((p.height for p, _ in drawn), default=base.height)
    footer = [
        wrapped
        for p in response.agreements
        if p.WhichOneof("agreement") in FOOTER_AGREEMENTS
        for wrapped in wrap(agreement_line(p), font, max(width, 1) - 2 * PAD_PX)
    ]
    footer_px = 2 * PAD_PX + line_px * len(footer) if footer else 0
    height = header_px + panels_px + footer_px
    sheet = Sheet(Image.new("RGB", (max(width, 1), height), BACKGROUND), scale=scale)
    draw = ImageDraw.Draw(sheet.image)
    x = 0
    for (panel, texts), lines in zip(drawn, headers, strict=True):
        sheet.image.paste(panel, (x, header_px))
        cell = (x, 0, x + panel.width, header_px)
        for row, line in enumerate(lines):
            origin = (x + PAD_PX, PAD_PX + row * line_px)
            draw.text(origin, line, fill=(235, 235, 235), font=font)
            box = _text_box(draw, origin, line, font)
            sheet.texts.append(TextBox(line, box, cell, "header"))
        area = (x, header_px, x + panel.width, header_px + panel.height)
        for text in texts:
            left, top, right, bottom = text.box
            moved = (left + x, top + header_px, right + x, bottom + header_px)
            sheet.texts.append(TextBox(text.text, moved, area, text.kind))
        x += panel.width + GAP_PX
    cell = (0, header_px + panels_px, max(width, 1), height)
    for row, line in enumerate(footer):
        origin = (PAD_PX, cell[1] + PAD_PX + row * line_px)
        draw.text(origin, line, fill=(235, 235, 235), font=font)
        sheet.texts.append(TextBox(line, _text_box(draw, origin, line, font), cell, "agreement"))
    return sheet


def side_by_side(image_bytes: bytes, response: cs.CompareResponse) -> Image.Image:
    """The side-by-side picture (see `render`)."""
    return render(image_bytes, response).image


def label_map_words(label_map: pb.LabelMap) -> str:
    """A label map's size and its classes' shares of the pixels, most first."""
    indices = np.frombuffer(label_map.class_indices_u16le, dtype="<u2")
    counts = np.bincount(indices, minlength=len(label_map.class_names))
    total = max(int(indices.size), 1)
    shares = sorted(
        ((int(counts[k]), name) for k, name in enumerate(label_map.class_names) if k > 0 and counts[k] > 0),
        reverse=True,
    )
    said = ", ".join(f"{name} {n / total:.1%}" for n, name in shares[:MAX_CLASSES_SAID])
    return f"label map {label_map.width}x{label_map.height}, {len(shares)} classes found" + (
        f" ({said})" if said else ""
    )


def agreement_line(p: cs.PairAgreement) -> str:
    """One pair's agreement figures in words (the CLI's summary; the picture's footer)."""
    head = f"agreement {p.model_a} vs {p.model_b}:"
    kind = p.WhichOneof("agreement")
    if kind == "instances":
        a = p.instances
        iou = "mask" if a.iou_kind == cs.IOU_KIND_MASK else "box"
        return (
            f"{head} {len(a.matches)} matched ({iou} IoU >= {a.iou_threshold:.2f}), "
            f"mean IoU {a.mean_iou:.3f}, label agreement {a.label_agreement_rate:.0%}, "
            f"only {p.model_a} {a.only_a_count}, only {p.model_b} {a.only_b_count}"
        )
    if kind == "label_map":
        m = p.label_map
        classes = ", ".join(f"{c.name} {c.iou:.2f}" for c in m.classes[:MAX_CLASSES_SAID])
        more = f", +{len(m.classes) - MAX_CLASSES_SAID} more" if len(m.classes) > MAX_CLASSES_SAID else ""
        return (
            f"{head} pixel agreement {m.pixel_agreement:.1%}, mean IoU {m.mean_iou:.3f} over "
            f"{len(m.classes)} class{'' if len(m.classes) == 1 else 'es'} either found"
            + (f" ({classes}{more})" if classes else "")
        )
    c = p.classification
    rank = (
        f"rank correlation {c.rank_correlation:.2f} over {c.shared_labels} shared labels"
        if c.HasField("rank_correlation")
        else f"no rank correlation ({c.shared_labels} shared label{'' if c.shared_labels == 1 else 's'})"
    )
    return f"{head} top-1 {'agrees' if c.top1_agree else 'differs'}, top-{c.k} overlap {c.topk_overlap:.2f}, {rank}"


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
        elif isinstance(output, vms.SegmentResponse) and output.HasField("label_map"):
            what = label_map_words(output.label_map)
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
    lines += [agreement_line(p) for p in response.agreements]
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
    add("Preset", [c.runtime.preset for c in caps])
    add("Pretrained", [str(c.runtime.pretrained).lower() if c.card.name else "" for c in caps])
    width0 = max(len(r[0]) for r in rows)
    widths = [max(len(r[1][i]) for r in rows) for i in range(len(models.models))]
    widths = [min(w, 60) for w in widths]
    out = []
    for name, values in rows:
        cells = [v[:60].ljust(w) for v, w in zip(values, widths, strict=True)]
        out.append(f"{name.ljust(width0)} | " + " | ".join(cells))
    accepted = [
        (m.model_name, task_name(t.task), ", ".join(option_name(o) for o in t.accepted_options) or "none")
        for m in models.models
        for t in m.capabilities.tasks
    ]
    if accepted:
        out += ["", "Options accepted (TaskOptions fields; any other is INVALID_ARGUMENT):"]
        w_model, w_task = (max(len(row[i]) for row in accepted) for i in (0, 1))
        out += [f"  {name.ljust(w_model)}  {task.ljust(w_task)}  {names}" for name, task, names in accepted]
    return "\n".join(out)
