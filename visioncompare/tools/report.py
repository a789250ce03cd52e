"""The HTML report of `vcompare evaluate`: one self-contained file (styles inline, plots and
pictures as data: URIs), drawn from an `visioncompare.tools.evaluate.Evaluation`.

Sections: the run; per model, the task's metrics (COCO AP and AR for instances; mIoU,
per-class IoU and pixel accuracy for label maps; top-1 and top-5 for classification),
latency and errors; per-class figures; the vocabulary matching; agreement between every
pair of models; failed images; plots (precision-recall curves for instances, per-class
figures, latency histograms; matplotlib); and a gallery of the images where the models
disagree most, each drawn side by side with its ground truth (`visioncompare.gateway.render`).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from visioncompare.gateway.render import render
from visioncompare.tools.evaluate import (
    SEMANTIC_SEGMENTATION,
    TOP_K,
    ZERO_SHOT_CLASSIFICATION,
    Evaluation,
    Record,
    filtered,
    ground_truth_result,
    most_disagreeing_images,
)
from visioncompare.v1 import comparison_service_pb2 as cs

GALLERY_MAX_PX = 1400  # a gallery picture's longer side, at most
INSTANCE_KINDS = ("bbox", "segm", "keypoints")
#: Per kind of metrics: the per-class figure the plot and the table show, and what it is.
PER_CLASS = {
    "bbox": ("AP", "per-class AP @[.50:.95]: bbox"),
    "segm": ("AP", "per-class AP @[.50:.95]: segm"),
    "keypoints": ("AP", "per-class AP @[.50:.95]: keypoints"),
    "semantic": ("IoU", "per-class IoU: semantic segmentation"),
    "classification": ("top1", "per-class top-1 accuracy: zero-shot classification"),
}
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #1a1a1a; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; }
th, td { border: 1px solid #d0d0d0; padding: .25em .6em; text-align: right; vertical-align: top; }
th { background: #f2f2f2; } td.text, th.text { text-align: left; }
.note { color: #555; } .bad { color: #b00020; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #444; margin-top: .3em; }
code { background: #f4f4f4; padding: 0 .25em; }
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], text_columns: int = 1) -> str:
    head = "".join(f'<th class="{"text" if n < text_columns else ""}">{_e(h)}</th>' for n, h in enumerate(headers))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"text" if n < text_columns else ""}">{cell}</td>' for n, cell in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def pr_curve_plot(result: Mapping[str, Any]) -> str | None:
    plt = _pyplot()
    kinds = [
        k
        for k in ("bbox", "segm", "keypoints")
        if any((m["metrics"] or {}).get(k) for m in result["per_model"].values())
    ]
    if not kinds:
        return None
    figure, axes = plt.subplots(1, len(kinds), figsize=(5.2 * len(kinds), 4.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for n, (model, figures) in enumerate(result["per_model"].items()):
            metrics = (figures["metrics"] or {}).get(kind)
            if not metrics:
                continue
            curves = metrics["pr_curves"]
            colour = f"C{n}"
            ax.plot(
                curves["recall"],
                curves["precision"]["0.50:0.95"],
                color=colour,
                label=f"{model} IoU .50:.95 (AP {metrics['stats']['AP']:.3f})",
            )
            ax.plot(
                curves["recall"],
                curves["precision"]["0.50"],
                color=colour,
                linestyle="--",
                label=f"{model} IoU .50 (AP50 {metrics['stats']['AP50']:.3f})",
            )
        ax.set(title=f"precision-recall: {kind}", xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    return _png(figure)


def _kinds(result: Mapping[str, Any], among: Iterable[str] = PER_CLASS) -> list[str]:
    """The kinds of metrics some model has (bbox, segm, keypoints, semantic, classification)."""
    return [k for k in among if any((m["metrics"] or {}).get(k) for m in result["per_model"].values())]


def per_class_plot(result: Mapping[str, Any]) -> str | None:
    plt = _pyplot()
    kinds = _kinds(result)
    if not kinds:
        return None
    models = list(result["per_model"])
    figure, axes = plt.subplots(len(kinds), 1, figsize=(10, 3.2 * len(kinds)), squeeze=False)
    for ax, kind in zip(axes[:, 0], kinds, strict=True):
        field, title = PER_CLASS[kind]
        names: list[str] = []
        for figures in result["per_model"].values():
            for row in ((figures["metrics"] or {}).get(kind) or {}).get("per_class", []):
                if row["name"] not in names:
                    names.append(row["name"])
        width = 0.8 / max(len(models), 1)
        for n, model in enumerate(models):
            rows = {
                r["name"]: r
                for r in (((result["per_model"][model]["metrics"] or {}).get(kind) or {}).get("per_class", []))
            }
            values = [(rows[c][field] or 0.0) if c in rows else 0.0 for c in names]
            ax.bar(
                [k + (n - (len(models) - 1) / 2) * width for k in range(len(names))],
                values,
                width,
                label=model,
                color=f"C{n}",
            )
        ax.set_xticks(
            range(len(names)),
            names,
            rotation=30 if len(names) > 8 else 0,
            ha="right" if len(names) > 8 else "center",
            fontsize=8,
        )
        ax.set(title=title, ylabel=field, ylim=(0, 1))
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    figure.tight_layout()
    return _png(figure)


def latency_plot(latencies: Mapping[str, Sequence[float]]) -> str | None:
    plt = _pyplot()
    if not any(latencies.values()):
        return None
    import numpy as np

    every = np.concatenate([np.asarray(v, dtype=np.float64) for v in latencies.values() if v])
    low, high = max(float(every.min()), 0.01), max(float(every.max()), 0.02)
    bins = np.geomspace(low, high * 1.0001, 40) if high / low > 20 else np.linspace(low, high * 1.0001, 40)
    figure, ax = plt.subplots(figsize=(8, 3.6))
    for n, (model, values) in enumerate(latencies.items()):
        if values:
            ax.hist(values, bins=bins, alpha=0.55, label=f"{model} (n={len(values)})", color=f"C{n}")
    if high / low > 20:
        ax.set_xscale("log")
    ax.set(title="latency per model call, as the gateway saw it", xlabel="ms", ylabel="calls")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(figure)


def gallery_picture(evaluation: Evaluation, record: Record, min_score: float | None) -> str | None:
    """The image (or object crop) with the ground truth and each model's answer (instances at or above
    `min_score`), side by side, as a data: URI."""
    if record.response is None:
        return None
    image = next((i for i in evaluation.items or evaluation.dataset.images if i.id == record.image_id), None)
    if image is None:
        return None
    try:
        data = image.read()
    except (OSError, ValueError):
        return None
    response = cs.CompareResponse()
    response.CopyFrom(record.response)
    for r in response.results:
        name = r.WhichOneof("output")
        if name in ("detect", "segment"):
            output = getattr(r, name)
            kept = filtered(output.instances, min_score)
            del output.instances[:]
            output.instances.extend(kept)
    truth = ground_truth_result(evaluation.dataset, record.image_id, evaluation.result["task"], image)
    sheet = render(data, response, [truth] if truth is not None else []).image
    if max(sheet.size) > GALLERY_MAX_PX:
        scale = GALLERY_MAX_PX / max(sheet.size)
        sheet = sheet.resize((round(sheet.width * scale), round(sheet.height * scale)), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    sheet.convert("RGB").save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _figure(uri: str | None, caption: str) -> str:
    if uri is None:
        return ""
    return f'<figure><img src="{uri}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'


def _metrics_table(result: Mapping[str, Any]) -> str:
    kinds = _kinds(result)
    headers = ["model", "images OK", "errors", "latency p50 / p95 / p99 ms"]
    for kind in kinds:
        if kind == "semantic":
            headers += ["mIoU", "mIoU, categories", "pixel accuracy"]
        elif kind == "classification":
            headers += ["top-1", f"top-{TOP_K}", "items"]
        else:
            headers += [f"{kind} AP", f"{kind} AP50", f"{kind} AP75", f"{kind} AR"]
    rows = []
    for model, m in result["per_model"].items():
        errors = ", ".join(f"{code} ×{n}" for code, n in m["errors"]["by_code"].items()) or "none"
        lat = m["latency_ms"]
        row = [
            f"<b>{_e(model)}</b><br><span class=note>{_e(m['weights'])}</span>",
            _num(m["images_ok"]),
            f'<span class="{"bad" if m["errors"]["by_code"] else ""}">{_e(errors)}</span>',
            f"{_num(lat['p50'], 1)} / {_num(lat['p95'], 1)} / {_num(lat['p99'], 1)}",
        ]
        for kind in kinds:
            metrics = (m["metrics"] or {}).get(kind) or {}
            stats = metrics.get("stats", {})
            if kind == "semantic":
                row += [_num(stats.get("mIoU")), _num(stats.get("mIoU_categories")), _num(stats.get("pixel_accuracy"))]
            elif kind == "classification":
                row += [_num(stats.get("top1")), _num(stats.get(f"top{TOP_K}")), _num(metrics.get("items"))]
            else:
                ar = stats.get("AR100", stats.get("AR"))
                row += [_num(stats.get("AP")), _num(stats.get("AP50")), _num(stats.get("AP75")), _num(ar)]
        rows.append(row)
    return table(headers, rows, text_columns=3)


def _per_class_table(result: Mapping[str, Any]) -> str:
    parts = []
    for kind in _kinds(result):
        per_model = {
            model: {r["name"]: r for r in ((m["metrics"] or {}).get(kind) or {}).get("per_class", [])}
            for model, m in result["per_model"].items()
        }
        names = list(dict.fromkeys(n for rows in per_model.values() for n in rows))
        if not names:
            continue
        if kind == "semantic":
            counted, what = "ground_truth_pixels", "pixels"
            cell = lambda r: _num(r.get("IoU"))  # noqa: E731
        elif kind == "classification":
            counted, what = "ground_truth", "items"
            cell = lambda r: f"{_num(r.get('top1'))} / {_num(r.get(f'top{TOP_K}'))}"  # noqa: E731
        else:
            counted, what = "ground_truth", "objects"
            cell = lambda r: _num(r.get("AP"))  # noqa: E731
        truth = {n: next(rows[n][counted] for rows in per_model.values() if n in rows) for n in names}
        rows = [[_e(n), _num(truth[n]), *(cell(per_model[m].get(n, {})) for m in per_model)] for n in names]
        parts.append(f"<h3>{_e(PER_CLASS[kind][1])}</h3>" + table(["category", what, *per_model], rows))
    return "".join(parts)


def _vocabulary(result: Mapping[str, Any]) -> str:
    v = result["vocabulary"]
    rows = []
    for model, m in v["models"].items():
        rows.append(
            [
                _e(model),
                _e(m["vocabulary"]),
                _e(len(m["matched"])),
                _e(", ".join(m["unknown_categories"]) or "–"),
                _e(", ".join(m["labels_without_category"]) or "–"),
            ]
        )
    nobody = ", ".join(v["categories_no_model_knows"]) or "none"
    labels = ", ".join(v["open_vocabulary_labels"]) or "(the gateway's choice)"
    return (
        f"<p>Categories no model knows: <b>{_e(nobody)}</b>. Labels sent to open-vocabulary models: {_e(labels)}.</p>"
        + table(
            ["model", "vocabulary", "categories matched", "categories it does not know", "its labels no category has"],
            rows,
            text_columns=5,
        )
    )


def _agreement(result: Mapping[str, Any]) -> str:
    a = result["agreement"]
    if not a["pairs"]:
        return "<p>One model: no pairs to compare.</p>"
    kind = a["pairs"][0]["kind"]
    if kind == "label_map":
        return _pairs_table(
            a["pairs"],
            "<p class=note>The gateway's label-map agreement, image by image: pixel agreement over every pixel "
            "(background included) and the mean IoU over the classes either model found; their means.</p>",
            ["pair", "images", "pixel agreement", "mean IoU", "disagreement"],
            lambda p: [
                _num(p["images"]),
                _num(p["pixel_agreement"]),
                _num(p["mean_iou"]),
                _num(p["mean_disagreement"]),
            ],
            ["image", "disagreement", "pixel agreement", "mean IoU", "classes"],
            lambda r: [_num(r["disagreement"]), _num(r["pixel_agreement"]), _num(r["mean_iou"]), _num(r["classes"])],
        )
    if kind == "classification":
        return _pairs_table(
            a["pairs"],
            "<p class=note>The gateway's classification agreement, item by item: whether the top-1 labels agree, "
            "the overlap of the top-k labels, and the rank correlation (Spearman) of the scores of the labels "
            "both returned; their means.</p>",
            ["pair", "items", "top-1 agreement", "top-k overlap", "rank correlation", "disagreement"],
            lambda p: [
                _num(p["images"]),
                _num(p["top1_agreement"]),
                _num(p["topk_overlap"]),
                f"{_num(p['rank_correlation'])} ({_num(p['rank_correlation_images'])} items)",
                _num(p["mean_disagreement"]),
            ],
            ["item", "disagreement", "top-1", "top-k overlap", "rank correlation"],
            lambda r: [
                _num(r["disagreement"]),
                "agrees" if r["top1_agree"] else "differs",
                _num(r["topk_overlap"]),
                _num(r["rank_correlation"]),
            ],
        )
    note = (
        f"instances scoring at least {a['min_score']}"
        if a["min_score"] is not None
        else "every instance the models returned"
    )
    return _pairs_table(
        a["pairs"],
        f"<p class=note>Over {_e(note)}, matched one-to-one by the gateway's agreement "
        "(greedy IoU; mask IoU when both have masks).</p>",
        [
            "pair",
            "images",
            "IoU",
            "matched",
            "matched / image",
            "mean IoU",
            "label agreement",
            "only A / image",
            "only B / image",
            "disagreement",
        ],
        lambda p: [
            _num(p["images"]),
            _e(p["iou_kind"]),
            _num(p["matched"]),
            _num(p["matched_per_image"], 2),
            _num(p["mean_iou"]),
            _num(p["label_agreement"]),
            _num(p["only_a_per_image"], 2),
            _num(p["only_b_per_image"], 2),
            _num(p["mean_disagreement"]),
        ],
        ["image", "disagreement", "A", "B", "matched", "labels differ", "only A", "only B"],
        lambda r: [
            _num(r["disagreement"]),
            _num(r["instances_a"]),
            _num(r["instances_b"]),
            _num(r["matched"]),
            _num(r["labels_disagree"]),
            _num(r["only_a"]),
            _num(r["only_b"]),
        ],
    )


def _pairs_table(
    pairs: Sequence[Mapping[str, Any]],
    note: str,
    headers: Sequence[str],
    cells: Callable[[Mapping[str, Any]], list[str]],
    worst_headers: Sequence[str],
    worst_cells: Callable[[Mapping[str, Any]], list[str]],
) -> str:
    """The pairs' table under `note`, then each pair's most disagreeing images."""
    out = [note, table(headers, [[_e(f"{p['model_a']} vs {p['model_b']}"), *cells(p)] for p in pairs])]
    for p in pairs:
        if p["most_disagreeing"]:
            out.append(f"<h3>Most disagreeing: {_e(p['model_a'])} vs {_e(p['model_b'])}</h3>")
            out.append(table(worst_headers, [[_e(r["file_name"]), *worst_cells(r)] for r in p["most_disagreeing"]]))
    return "".join(out)


def _failures(result: Mapping[str, Any]) -> str:
    f = result["failures"]
    per_model = [(m, e) for m, fig in result["per_model"].items() for e in fig["errors"]["images"]]
    if not f["images"] and not per_model:
        return "<p>No image failed.</p>"
    out = []
    if f["images"]:
        out.append(
            "<p>Compare calls that failed: " + _e(", ".join(f"{c} ×{n}" for c, n in f["by_code"].items())) + "</p>"
        )
        out.append(
            table(
                ["image", "code", "attempts", "message"],
                [[_e(r["file_name"]), _e(r["code"]), _num(r["attempts"]), _e(r["message"])] for r in f["images"]],
                text_columns=4,
            )
        )
    if per_model:
        out.append("<p>Models that failed on an image (the call answered, that model did not):</p>")
        out.append(
            table(
                ["model", "image", "code", "message"],
                [[_e(m), _e(e["file_name"]), _e(e["code"]), _e(e["message"])] for m, e in per_model],
                text_columns=4,
            )
        )
    return "".join(out)


#: What each task's metrics are, under the models' table.
METRICS_NOTES = {
    "instances": "AP is COCO's AP@[.50:.95] over every category of the dataset (a category a model does not know "
    "counts as 0 for it); AR is AR@100 (keypoints: AR@20). Images a model failed on count as images where it "
    "found nothing.",
    SEMANTIC_SEGMENTATION: "IoU per class, each class's intersection and union summed over the images, against "
    "a class map drawn from the instance masks (each mask painted with its category in the annotation file's "
    "order, a later one over an earlier); mIoU is their mean over the classes present in the ground truth or a "
    "model's maps, background included (as bench/accuracy.py), 'categories' without background. A class a model "
    "names that no category has counts against it. Images a model failed on count as all background.",
    ZERO_SHOT_CLASSIFICATION: "Top-1 and top-5 accuracy over the items answered: each object's crop (its mask's "
    "box, outside the mask filled with CLIP's mean colour, padded square; crowds and objects under the minimum "
    "size left out), or each image of a class folder. Items a model failed on count as wrong.",
}


def _caption(row: Mapping[str, Any]) -> str:
    head = f"{row['file_name']}: {row['pair']}, disagreement {row['disagreement']:.2f}"
    if "pixel_agreement" in row:
        return f"{head} (pixel agreement {row['pixel_agreement']:.3f}, mean IoU {row['mean_iou']:.3f})"
    if "top1_agree" in row:
        rho = "–" if row["rank_correlation"] is None else f"{row['rank_correlation']:.2f}"
        top1 = "agrees" if row["top1_agree"] else "differs"
        return f"{head} (top-1 {top1}, top-k overlap {row['topk_overlap']:.2f}, rank correlation {rho})"
    return (
        f"{head} (matched {row['matched']}, labels differ {row['labels_disagree']}, "
        f"only A {row['only_a']}, only B {row['only_b']})"
    )


def report_html(evaluation: Evaluation, gallery: int = 8) -> str:
    result = evaluation.result
    run, d = result["run"], result["dataset"]
    task = result["task"]
    crops = task == ZERO_SHOT_CLASSIFICATION and d["annotations"] is not None
    noun = "object crops" if crops else "images"
    title = f"vcompare evaluate: {task} on {run['images_total']} {noun}"
    options = ", ".join(f"{k}={v}" for k, v in result["options"].items() if v is not None) or "models' defaults"
    labelled = d["annotations"] is not None or (task == ZERO_SHOT_CLASSIFICATION and d.get("classes_from_folders"))
    source = (
        f"{d['images']} images, {d['annotation_count']} annotations"
        if d["annotations"] is not None
        else f"{d['images']} images" + (", one folder a class" if d.get("classes_from_folders") else "")
    )
    head = (
        f"<h1>{_e(title)}</h1><p>Models: <b>{_e(', '.join(result['models']))}</b> through the gateway "
        f"<code>{_e(result['gateway'])}</code>. Dataset: <code>{_e(d['annotations'] or d['images_dir'])}</code> "
        f"({source}, {len(d['categories'])} categories). "
        f"Options: {_e(options)}. Created {_e(result['created'])}.</p>"
        f"<p>{run['images_answered']} {noun} answered, {run['images_failed']} failed"
        + (
            f"; {_num(run.get('images_per_second'), 2)} {noun}/s at concurrency {_e(run.get('concurrency'))}"
            if run.get("images_per_second") is not None
            else ""
        )
        + (
            f"; evaluated with {_e(result['evaluator']['name'])} in {_num(result['evaluator']['seconds'], 2)} s"
            if result["evaluator"]["name"]
            else ""
        )
        + ".</p>"
    )
    if not labelled:
        head += "<p class=note>No annotations: agreement and latency only.</p>"
    sections = [head, "<h2>Models</h2>", _metrics_table(result)]
    if labelled:
        sections.append(f"<p class=note>{_e(METRICS_NOTES.get(task, METRICS_NOTES['instances']))}</p>")
        if _kinds(result, INSTANCE_KINDS):
            sections += [
                "<h2>Precision-recall</h2>",
                _figure(pr_curve_plot(result), "precision-recall curves, all categories"),
            ]
        sections += [
            "<h2>Per class</h2>",
            _figure(per_class_plot(result), "per-class figures"),
            _per_class_table(result),
            "<h2>Vocabulary</h2>",
            _vocabulary(result),
        ]
    sections += ["<h2>Latency</h2>", _figure(latency_plot(evaluation.latencies), "latency histograms")]
    sections += ["<h2>Agreement</h2>", _agreement(result), "<h2>Failures</h2>", _failures(result)]
    worst = most_disagreeing_images(result, gallery)
    if worst:
        min_score = result["agreement"]["min_score"]
        sections.append("<h2>Where the models disagree most</h2>")
        sections.append(
            "<p class=note>"
            + ("Ground truth first, then " if labelled else "")
            + "each model's answer"
            + (f", instances scoring at least {min_score}" if min_score else "")
            + ".</p>"
        )
        for row in worst:
            record = evaluation.records.get(row["image_id"])
            if record is None:
                continue
            sections.append(_figure(gallery_picture(evaluation, record, min_score), _caption(row)))
    body = "\n".join(s for s in sections if s)
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>\n"
    )


def write_report(evaluation: Evaluation, path: Path, gallery: int = 8) -> None:
    path.write_text(report_html(evaluation, gallery))
