"""`vcompare evaluate`: the command (registered in visioncompare/tools/cli.py); the work is in
visioncompare/tools/evaluate.py and the HTML in visioncompare/tools/report.py."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import grpc
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from visioncompare.tools import evaluate as ev
from visioncompare.tools.report import write_report

HELP = "\n\n".join(
    [
        "Evaluate every model serving a task on a dataset, side by side, through the gateway.",
        "IMAGES is an image folder. With --annotations (a COCO annotation file whose file_name entries are relative "
        "to IMAGES) each model gets COCO metrics: AP, AP50, AP75 and AR for boxes, for masks (instance segmentation) "
        "and OKS keypoint AP (keypoint detection, when the annotations have keypoints), per-class AP and "
        "precision-recall curves. Semantic segmentation: mIoU (background included, and over the categories "
        "alone), per-class IoU and pixel accuracy against a class map rendered from the instance masks (each mask "
        "painted with its category in the file's order, a later one over an earlier). Zero-shot classification: "
        "top-1 and top-5 accuracy, overall and per class, on each object's crop (its mask's box, outside the mask "
        "filled; objects under --min-object-pixels left out), or on whole images when IMAGES holds one subfolder "
        "a class (the ImageFolder layout, no --annotations). Without annotations: agreement between the models and "
        "their latency only. Category names are matched to each model's labels by name (case, spaces, _ and - "
        "aside); open-vocabulary models get the category names as their labels; the result lists categories no "
        "model knows and labels no category has.",
        "Every image goes through the gateway's Compare (--concurrency calls at a time, --timeout seconds each, "
        "retried --retries times with backoff while the call, or a model in it, is UNAVAILABLE). Answers are stored "
        "in OUT/results.jsonl as they arrive: after an interruption the same command resumes (failed images are "
        "tried again); --fresh starts over. Failed images are counted by status code and listed.",
        "Writes OUT/evaluation.json (its schema: visioncompare/tools/schemas/evaluation.schema.json) and "
        "OUT/report.html "
        "(self-contained: metric tables; precision-recall (instances), per-class and latency plots; the images "
        "where the models disagree most, drawn beside the ground truth).",
        f"Tasks: {', '.join(ev.TASKS)}. Exit status 0; 1 when no image was answered; 2 for bad arguments; 130 when "
        "interrupted (the answers so far are kept).",
        "Example: python -m shapes.export_coco --scenes 20 --out data/shapes-eval, then "
        "vcompare evaluate data/shapes-eval/images -a data/shapes-eval/annotations.json -o eval",
    ]
)


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"vcompare evaluate: {message}", err=True)
    raise typer.Exit(code)


class RateColumn(ProgressColumn):
    """Images per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f} img/s" if speed else "-- img/s", style="progress.data.speed")


def _choose_task(task: str | None, dataset: ev.Dataset) -> str:
    if task is None:
        return ev.INSTANCE_SEGMENTATION if dataset.has_masks or not dataset.labelled else ev.OBJECT_DETECTION
    if task not in ev.TASKS:
        fail(f"unknown task {task!r}; choose one of: {', '.join(ev.TASKS)}", 2)
    if task == ev.KEYPOINT_DETECTION and dataset.labelled and not dataset.keypoint_categories:
        fail("keypoint-detection needs annotations with keypoints; these have none", 2)
    if task == ev.SEMANTIC_SEGMENTATION and dataset.labelled and not dataset.has_masks:
        fail(
            "semantic-segmentation needs annotations with masks (its ground truth is drawn from them); these have none",
            2,
        )
    return task


def _summary(result: dict[str, Any]) -> str:
    lines = []
    for model, m in result["per_model"].items():
        lat = m["latency_ms"]
        parts = [f"{model}: {m['images_ok']} OK"]
        if m["errors"]["by_code"]:
            parts.append("errors " + ", ".join(f"{c} x{n}" for c, n in m["errors"]["by_code"].items()))
        for kind, metrics in (m["metrics"] or {}).items():
            if not isinstance(metrics, dict):
                continue
            s = metrics["stats"]
            if kind == "semantic":
                parts.append(
                    f"mIoU {s['mIoU']:.3f} (categories alone {s['mIoU_categories']:.3f}), "
                    f"pixel accuracy {s['pixel_accuracy']:.3f}"
                )
            elif kind == "classification":
                parts.append(f"top-1 {s['top1']:.3f} top-{ev.TOP_K} {s[f'top{ev.TOP_K}']:.3f} on {metrics['items']}")
            else:
                ar = s.get("AR100", s.get("AR"))
                parts.append(f"{kind} AP {s['AP']:.3f} AP50 {s['AP50']:.3f} AP75 {s['AP75']:.3f} AR {ar:.3f}")
        if lat["count"]:
            parts.append(f"latency p50/p95/p99 {lat['p50']:.0f}/{lat['p95']:.0f}/{lat['p99']:.0f} ms")
        lines.append("  " + "; ".join(parts))
    for p in result["agreement"]["pairs"]:
        head = f"  {p['model_a']} vs {p['model_b']}:"
        if p["kind"] == "label_map":
            lines.append(f"{head} pixel agreement {p['pixel_agreement']:.1%}, mean IoU {p['mean_iou']:.3f}")
        elif p["kind"] == "classification":
            rho = p["rank_correlation"]
            lines.append(
                f"{head} top-1 agreement {p['top1_agreement']:.0%}, top-k overlap {p['topk_overlap']:.2f}, "
                + (f"rank correlation {rho:.2f}" if rho is not None else "no rank correlation")
            )
        else:
            lines.append(
                f"{head} {p['matched_per_image']:.2f} matched/image, mean IoU "
                f"{p['mean_iou']:.3f}, label agreement {p['label_agreement']:.0%}, only A {p['only_a_per_image']:.2f}"
                f"/image, only B {p['only_b_per_image']:.2f}/image"
            )
    v = result["vocabulary"]
    if v["categories_no_model_knows"]:
        lines.append(f"  categories no model knows: {', '.join(v['categories_no_model_knows'])}")
    for model, m in v["models"].items():
        if m["labels_without_category"]:
            extra = m["labels_without_category"]
            lines.append(
                f"  {model}'s labels no category has: {len(extra)} "
                f"({', '.join(extra[:8])}{'...' if len(extra) > 8 else ''})"
            )
    f = result["failures"]
    if f["images"]:
        lines.append(
            f"  failed images: {', '.join(f'{c} x{n}' for c, n in f['by_code'].items())}: "
            + ", ".join(r["file_name"] for r in f["images"][:10])
            + (" ..." if len(f["images"]) > 10 else "")
        )
    return "\n".join(lines)


def evaluate(
    images: Annotated[Path, typer.Argument(help="image folder")],
    annotations: Annotated[Path | None, typer.Option("--annotations", "-a", help="COCO annotation file")] = None,
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            "-t",
            help="object-detection, instance-segmentation (the default with masks or without "
            "annotations), keypoint-detection, semantic-segmentation or zero-shot-classification",
        ),
    ] = None,
    models_: Annotated[
        str | None, typer.Option("--models", help="comma-separated model names (default: every model serving the task)")
    ] = None,
    labels: Annotated[
        str | None, typer.Option(help="without annotations: comma-separated labels for the open-vocabulary models")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("evaluation"),
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Compare calls in flight")] = ev.DEFAULT_CONCURRENCY,
    timeout: Annotated[float, typer.Option(min=0.1, help="deadline of each Compare call, seconds")] = 120.0,
    retries: Annotated[
        int, typer.Option(min=0, help="retries of a call while it, or a model in it, is UNAVAILABLE")
    ] = 3,
    score_threshold: Annotated[
        float | None,
        typer.Option(
            help="sent to every model; default 0.05 for instance tasks (AP ranks low-scoring answers too), "
            "none for semantic segmentation and classification"
        ),
    ] = None,
    max_results: Annotated[
        int | None,
        typer.Option(
            help="sent to every model; default 100 for instance tasks (COCO counts 100 per image), 5 for "
            "classification (top-5), none for semantic segmentation"
        ),
    ] = None,
    min_object_pixels: Annotated[
        int,
        typer.Option(
            min=1,
            help="zero-shot classification on annotations: objects whose mask (or box) covers fewer pixels are "
            "not classified",
        ),
    ] = ev.MIN_OBJECT_PIXELS,
    agreement_score: Annotated[
        float | None,
        typer.Option(help="agreement and gallery over instances scoring at least this; 0 for every instance"),
    ] = 0.5,
    oks_sigma: Annotated[
        list[float],
        typer.Option(
            "--oks-sigma",
            help="keypoint OKS constant: once for all keypoints, or once per keypoint "
            "(default: COCO's for 17 keypoints, else 0.05)",
        ),
    ] = [],  # noqa: B006
    gallery: Annotated[int, typer.Option(min=0, help="how many disagreeing images the report draws")] = 8,
    limit: Annotated[int | None, typer.Option(min=1, help="the first N images only")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="discard stored answers and start over")] = False,
    evaluator: Annotated[
        str, typer.Option(help="auto (faster-coco-eval when installed), pycocotools or faster-coco-eval")
    ] = "auto",
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    gateway: Annotated[
        str, typer.Option("--gateway", "-g", envvar="VCOMPARE_GATEWAY", help="gateway address")
    ] = "localhost:50050",
    token: Annotated[str | None, typer.Option("--token", envvar="VCOMPARE_TOKEN", help="bearer token")] = None,
) -> None:
    if evaluator not in ev.EVALUATORS:
        fail(f"unknown evaluator {evaluator!r}; choose one of: {', '.join(ev.EVALUATORS)}", 2)
    try:
        dataset = ev.load_coco(annotations, images) if annotations else ev.image_folder(images)
        evaluator = ev.evaluator_name(evaluator)
        if dataset.labelled and dataset.keypoint_categories:
            ev.oks_sigmas(dataset, oks_sigma)
    except ValueError as exc:
        fail(str(exc), 2)
    if limit is not None:
        dataset.images = dataset.images[:limit]
    if not dataset.images:
        fail(f"no images in {images}", 2)
    dataset.min_object_pixels = min_object_pixels
    task_ = _choose_task(task, dataset)
    defaults = ev.TASK_OPTIONS[task_]
    score_threshold = defaults[0] if score_threshold is None else score_threshold
    max_results = defaults[1] if max_results is None else max_results
    try:
        listed = ev.list_models(gateway, token)
    except grpc.RpcError as exc:
        fail(f"cannot list the gateway's models at {gateway}: {exc.code().name}: {exc.details()}")
    names = [m.strip() for m in models_.split(",") if m.strip()] if models_ else []
    try:
        chosen = ev.models_for_task(listed, task_, names)
    except ValueError as exc:
        fail(str(exc), 2)
    if not chosen:
        fail(f"no model serves {task_} (or none was reached yet); see `vcompare models`")
    categories = ev.task_categories(dataset, task_)
    vocabularies = ev.match_vocabularies(categories, {n: c["capability"] for n, c in chosen.items()})
    open_labels: list[str] = []
    if any(v.vocabulary == "open" for v in vocabularies.values()):
        if dataset.labelled_for(task_):
            open_labels = [str(c["name"]) for c in categories]
        elif labels:
            open_labels = [label.strip() for label in labels.split(",") if label.strip()]
    config = ev.RunConfig(task_, list(chosen), score_threshold, max_results, open_labels)
    items = dataset.items(task_)
    if not items:
        fail(f"no object of {min_object_pixels} pixels or more to classify in {annotations}", 2)
    noun = "object crops" if items[0].crop is not None else "images"
    store = ev.ResultStore(out)
    try:
        stored = store.open(ev.identity(dataset, config), fresh=fresh)
    except ValueError as exc:
        fail(str(exc), 2)
    done = {i for i, r in stored.items() if r.code == "OK"}
    todo = [i for i in items if i.id not in done]
    resumed = len(items) - len(todo)
    typer.echo(
        f"{task_} on {len(items)} {noun} with {', '.join(chosen)} via {gateway}"
        + (f"; resuming: {resumed} stored, {len(todo)} to go" if resumed else ""),
        err=True,
    )
    stats = ev.RunStats()
    console = Console(stderr=True)
    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        TextColumn("failed {task.fields[failed]}"),
        console=console,
        disable=not progress,
        transient=False,
    )
    failed = 0
    interrupted = False
    with bar:
        job = bar.add_task(noun, total=len(items), completed=resumed, failed=0)

        def on_record(record: ev.Record) -> None:
            nonlocal failed
            failed += record.code != "OK"
            bar.update(job, advance=1, failed=failed)

        try:
            stats = asyncio.run(
                ev.run_images(
                    gateway,
                    todo,
                    config,
                    store,
                    concurrency=concurrency,
                    timeout_s=timeout,
                    retries=retries,
                    token=token,
                    on_record=on_record,
                )
            )
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        typer.echo(f"interrupted: answers so far are in {store.path}; run the same command to resume", err=True)
        raise typer.Exit(130)
    records = store.load()
    start = time.perf_counter()
    run = {
        "concurrency": concurrency,
        "timeout_s": timeout,
        "retries": retries,
        "resumed_images": resumed,
        "images_this_run": stats.done,
        "retried_calls": stats.retries,
        "seconds": round(stats.seconds, 3),
        "images_per_second": round(stats.done / stats.seconds, 3) if stats.seconds > 0 and stats.done else None,
    }
    evaluation = ev.evaluate(
        dataset,
        records,
        config,
        vocabularies,
        endpoints={n: c["row"].endpoint for n, c in chosen.items()},
        evaluator=evaluator,
        agreement_min_score=agreement_score or None,
        oks_sigma=oks_sigma,
        run=run,
        gateway=gateway,
    )
    ev.write_json(evaluation.result, out / "evaluation.json")
    write_report(evaluation, out / "report.html", gallery)
    typer.echo(_summary(evaluation.result))
    typer.echo(
        f"wrote {out / 'evaluation.json'} and {out / 'report.html'} "
        f"({time.perf_counter() - start:.1f} s to evaluate and draw)"
    )
    if not evaluation.result["run"]["images_answered"]:
        sys.exit(1)


evaluate.__doc__ = HELP
