"""Throughput of `vcompare evaluate` and the time of its COCO evaluator.

    python -m bench.evaluate [--scenes 40] [--stack]

Exports held-out shapes scenes as a COCO dataset (`shapes.export_coco`), starts the shapes
models behind a gateway (Mask R-CNN and the SAM-CLIP composition as processes, with the
stack's commands; `--stack`: the local stack, every model of docker-compose.yml), and
prints, for instance segmentation on those scenes (`--tiny 0.1`: on two tiny test models instead,
whose inference is a 0.1 s sleep per batch, to see what concurrency gives when the models are
not CPU-bound on this machine, as on a GPU):

  - one-by-one: the sum of the Compare latencies of the images sent one after another,
    and the images/s that makes (the baseline);
  - `vcompare evaluate`'s run (visioncompare.tools.evaluate.run_images: the calls, storing every answer)
    at concurrency 1 and at its default, in images/s;
  - the COCO evaluation of the stored answers (every model, boxes and masks): pycocotools'
    COCOeval and faster-coco-eval, best of 3, and whether their figures are the same.

SAM-CLIP's embedding cache is off (SAMCLIP_EMBEDDING_CACHE_BYTES=0), so that every pass
computes every image.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from shapes.export_coco import export, held_out_scenes
from visioncompare.testing.processes import ServiceProcess, free_port, tiny_service
from visioncompare.tools import evaluate as ev
from visioncompare.tools.stack import LocalStack
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import comparison_service_pb2 as cs
from visioncompare.v1 import comparison_service_pb2_grpc as cs_grpc

TASK = "instance-segmentation"


def start_services() -> tuple[str, list[ServiceProcess]]:
    """Mask R-CNN and the SAM-CLIP composition (shapes weights) and a gateway, as processes."""
    quiet = {"OMP_WAIT_POLICY": "PASSIVE"}
    procs = []
    for name, module, prefix, extra in (
        ("maskrcnn", "visioncompare.maskrcnn", "MASKRCNN", {"MASKRCNN_WEIGHTS": "shapes"}),
        ("sam-clip-composed", "visioncompare.samclip", "SAMCLIP", {"SAMCLIP_BACKEND": "composed"}),
    ):
        port = free_port()
        env = {
            f"{prefix}_HOST": "127.0.0.1",
            f"{prefix}_PORT": str(port),
            f"{prefix}_METRICS_PORT": "none",
            f"{prefix}_LOG_LEVEL": "WARNING",
            **quiet,
            **extra,
        }
        procs.append(ServiceProcess(name, ["-m", module], port, env).start(600))
    port = free_port()
    targets = json.dumps({p.name: f"dns:///{p.address}" for p in procs})
    gateway = ServiceProcess(
        "gateway",
        ["-m", "gateway"],
        port,
        {
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(port),
            "GATEWAY_TARGETS": targets,
            "GATEWAY_METRICS_PORT": "none",
            "GATEWAY_HTTP_PORT": "none",
            "GATEWAY_LOG_LEVEL": "WARNING",
        },
    ).start(120)
    return gateway.address, [gateway, *procs]


def start_tiny(delay_s: float) -> tuple[str, list[ServiceProcess]]:
    """Two tiny test models (visioncompare/testing/tiny_model.py) whose inference is one sleep of `delay_s` per batch
    (up to 4 images): models that take time but no CPU here and batch, as on a GPU."""
    procs = [tiny_service(name, delay=delay_s).start(120) for name in ("tiny-a", "tiny-b")]
    port = free_port()
    gateway = ServiceProcess(
        "gateway",
        ["-m", "gateway"],
        port,
        {
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(port),
            "GATEWAY_TARGETS": json.dumps({p.name: f"dns:///{p.address}" for p in procs}),
            "GATEWAY_METRICS_PORT": "none",
            "GATEWAY_HTTP_PORT": "none",
            "GATEWAY_LOG_LEVEL": "WARNING",
        },
    ).start(120)
    return gateway.address, [gateway, *procs]


def one_by_one(address: str, dataset: ev.Dataset, config: ev.RunConfig) -> float:
    """Seconds: the sum of the Compare latencies, one image after another."""
    total = 0.0
    with grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
        stub = cs_grpc.ComparisonServiceStub(channel)
        for image in dataset.images:
            request = cs.CompareRequest(
                image=pb.Image(encoded=image.path.read_bytes()),
                task=ev.TASKS[config.task],
                options=config.options(),
                model_names=config.models,
                open_vocabulary_labels=config.open_vocabulary_labels,
            )
            start = time.perf_counter()
            stub.Compare(request, timeout=300)
            total += time.perf_counter() - start
    return total


def evaluate_run(address: str, dataset: ev.Dataset, config: ev.RunConfig, out: Path, concurrency: int) -> float:
    """Seconds of `vcompare evaluate`'s calls (every answer stored) at `concurrency`."""
    store = ev.ResultStore(out)
    store.open(ev.identity(dataset, config), fresh=True)
    stats = asyncio.run(
        ev.run_images(address, dataset.images, config, store, concurrency=concurrency, timeout_s=300, retries=3)
    )
    failed = [r for r in store.load().values() if r.code != "OK"]
    if failed:
        raise SystemExit(f"{len(failed)} images failed: {failed[0].code} {failed[0].message}")
    return stats.seconds


def evaluator_times(dataset: ev.Dataset, config: ev.RunConfig, out: Path, vocab: Any) -> dict[str, Any]:
    records = ev.ResultStore(out).load()
    times, metrics = {}, {}
    for name in ("pycocotools", "faster-coco-eval"):
        best = float("inf")
        for _ in range(3):
            result = ev.evaluate(dataset, records, config, vocab, evaluator=name).result
            best = min(best, result["evaluator"]["seconds"])
        times[name] = best
        metrics[name] = {m: f["metrics"] for m, f in result["per_model"].items()}
    a, b = metrics["pycocotools"], metrics["faster-coco-eval"]
    summaries = all(
        (a[m][k]["stats"], a[m][k]["per_class"]) == (b[m][k]["stats"], b[m][k]["per_class"])
        for m in a
        for k in a[m]
        if isinstance(a[m][k], dict)
    )
    curves = max(
        float(np.max(np.abs(np.subtract(a[m][k]["pr_curves"]["precision"][t], b[m][k]["pr_curves"]["precision"][t]))))
        for m in a
        for k in a[m]
        if isinstance(a[m][k], dict)
        for t in a[m][k]["pr_curves"]["precision"]
    )
    return {"seconds": times, "same_summaries": summaries, "max_curve_difference": curves}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--stack", action="store_true", help="the local stack (every model of docker-compose.yml)")
    parser.add_argument("--port-offset", type=int, default=4000)
    parser.add_argument(
        "--tiny",
        type=float,
        metavar="SECONDS",
        help="two tiny test models instead, sleeping "
        "SECONDS per batch (models that take time but no CPU here, and batch, as on a GPU)",
    )
    args = parser.parse_args()
    os.environ["SAMCLIP_EMBEDDING_CACHE_BYTES"] = "0"
    work = Path(tempfile.mkdtemp(prefix="bench-evaluate-"))
    export(held_out_scenes(args.scenes), work / "data")
    dataset = ev.load_coco(work / "data" / "annotations.json", work / "data" / "images")
    print(
        f"{len(dataset.images)} held-out scenes ({len(dataset.annotations)} objects) in {work / 'data'}; "
        "starting the models ...",
        flush=True,
    )
    stack: LocalStack | None = None
    procs: list[ServiceProcess] = []
    if args.stack:
        stack = LocalStack(port_offset=args.port_offset)
        stack.up()
        address = f"127.0.0.1:{stack.port('gateway')}"
    elif args.tiny is not None:
        address, procs = start_tiny(args.tiny)
    else:
        address, procs = start_services()
    try:
        chosen = ev.models_for_task(ev.list_models(address), TASK)
        vocab = ev.match_vocabularies(dataset.categories, {n: c["capability"] for n, c in chosen.items()})
        open_labels = (
            [str(c["name"]) for c in dataset.categories] if any(v.vocabulary == "open" for v in vocab.values()) else []
        )
        config = ev.RunConfig(TASK, list(chosen), 0.05, 100, open_labels)
        warm = ev.Dataset(dataset.images_dir, dataset.images[:2])
        one_by_one(address, warm, config)  # first calls: connections, lazy initialisation
        print(f"models: {', '.join(chosen)}; {os.cpu_count()} CPU cores", flush=True)
        serial = one_by_one(address, dataset, config)
        c1 = evaluate_run(address, dataset, config, work / "c1", 1)
        cd = evaluate_run(address, dataset, config, work / "cd", ev.DEFAULT_CONCURRENCY)
        evaluators = evaluator_times(dataset, config, work / "cd", vocab)
    finally:
        if stack is not None:
            stack.stop()
        for p in procs:
            p.stop()
    n = len(dataset.images)
    print(f"\ninstance segmentation, {n} images, models {', '.join(chosen)}")
    rows = [
        ("one-by-one Compare calls (sum of latencies)", serial),
        ("vcompare evaluate, concurrency 1", c1),
        (f"vcompare evaluate, concurrency {ev.DEFAULT_CONCURRENCY} (default)", cd),
    ]
    for what, seconds in rows:
        print(f"  {what:<45} {seconds:7.2f} s  {n / seconds:6.2f} images/s  ({serial / seconds:.2f}x one-by-one)")
    t = evaluators["seconds"]
    print("  COCO evaluation of the stored answers (every model, boxes and masks), best of 3:")
    print(f"    pycocotools COCOeval   {t['pycocotools'] * 1000:8.1f} ms")
    print(
        f"    faster-coco-eval       {t['faster-coco-eval'] * 1000:8.1f} ms  "
        f"({t['pycocotools'] / t['faster-coco-eval']:.1f}x faster)"
    )
    print(
        f"    same AP/AR summaries and per-class AP: {evaluators['same_summaries']}; largest difference in a "
        f"precision-recall curve point: {evaluators['max_curve_difference']:.4f}"
    )


if __name__ == "__main__":
    main()
