"""`vcompare evaluate` on held-out shapes scenes exported as a COCO dataset (`shapes.export_coco`)
gives the same AP as `bench/accuracy.py` (`shapes.accuracy`) for the same scenes and models:
one evaluator underneath: pycocotools' COCOeval, or faster-coco-eval (the default when installed), whose
figures are the same.

The models are the stack's two shapes services that ship their weights: Mask R-CNN
(`maskrcnn-service`) and the SAM-CLIP composition (`samclip-service`, SAMCLIP_BACKEND=composed),
started as processes, behind a gateway thread.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from shapes import accuracy
from shapes.export_coco import export, held_out_scenes
from visioncompare.runtime.client import VisionModelClient
from visioncompare.shapes_models import cards as shapes_cards
from visioncompare.testing.gateway_support import GatewayThread
from visioncompare.testing.processes import ServiceProcess, free_port
from visioncompare.tools import evaluate as ev
from visioncompare.tools.cli import app
from visioncompare.v1 import vision_model_service_pb2 as vms

SCENES = 4  # 17 objects, 5 triangles
WEIGHTS = ("maskrcnn_shapes", "keypointrcnn_shapes", "sam_shapes", "clip_shapes")
pytestmark = pytest.mark.skipif(
    not all((shapes_cards.WEIGHTS_DIR / f"{w}.pth").is_file() for w in WEIGHTS), reason="shapes weights missing"
)
QUIET = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def service(name: str, module: str, prefix: str, **env: str) -> ServiceProcess:
    port = free_port()
    settings = {
        f"{prefix}_HOST": "127.0.0.1",
        f"{prefix}_PORT": str(port),
        f"{prefix}_METRICS_PORT": "none",
        f"{prefix}_LOG_LEVEL": "WARNING",
    }
    return ServiceProcess(name, ["-m", module], port, {**QUIET, **settings, **env})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    cache = str(tmp_path_factory.mktemp("cache"))  # the services' ONNX exports; not ./models
    procs = [
        service("maskrcnn", "visioncompare.maskrcnn", "MASKRCNN", MASKRCNN_WEIGHTS="shapes", MASKRCNN_CACHE_DIR=cache),
        service(
            "sam-clip-composed", "visioncompare.samclip", "SAMCLIP", SAMCLIP_BACKEND="composed", SAMCLIP_CACHE_DIR=cache
        ),
    ]
    try:
        for p in procs:
            p.start(300)
        with GatewayThread({p.name: f"dns:///{p.address}" for p in procs}) as gw:
            gw.wait_serving()
            yield {"gateway": gw, **{p.name: p for p in procs}}
    finally:
        for p in procs:
            p.stop()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes-eval")
    export(held_out_scenes(SCENES), root)
    return root


def evaluate(stack: dict[str, Any], dataset: Path, out: Path, *args: str) -> dict[str, Any]:
    run = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(dataset / "images"),
            "-a",
            str(dataset / "annotations.json"),
            "-o",
            str(out),
            "-g",
            stack["gateway"].address,
            "--no-progress",
            *args,
        ],
    )
    assert run.exit_code == 0, run.output
    result: dict[str, Any] = json.loads((out / "evaluation.json").read_text())
    return result


def stats(result: dict[str, Any], model: str, kind: str) -> dict[str, float]:
    figures: dict[str, float] = result["per_model"][model]["metrics"][kind]["stats"]
    return figures


def test_the_export_is_the_bench_scenes(dataset: Path) -> None:
    data = json.loads((dataset / "annotations.json").read_text())
    scenes = accuracy.eval_scenes(SCENES)
    assert [i["id"] for i in data["images"]] == [s.seed for s in scenes]
    assert len(data["annotations"]) == sum(len(s.objects) for s in scenes)
    assert sorted(p.name for p in (dataset / "images").iterdir()) == sorted(f"{s.seed}.png" for s in scenes)


def test_instance_segmentation_ap_equals_bench_accuracy(stack: dict[str, Any], dataset: Path, tmp_path: Path) -> None:
    result = evaluate(stack, dataset, tmp_path / "out")  # the defaults: concurrency 8, score >= 0.05
    scenes = accuracy.eval_scenes(SCENES)
    with (
        VisionModelClient(stack["maskrcnn"].address, timeout=120) as mrcnn,
        VisionModelClient(stack["sam-clip-composed"].address, timeout=120) as composed,
    ):
        bench = {
            "maskrcnn": accuracy.maskrcnn_service_ap(mrcnn, scenes),
            "sam-clip-composed": accuracy.samclip_open_vocabulary_ap(composed, scenes),
        }
    for model, figures in bench.items():
        assert stats(result, model, "bbox")["AP"] == figures["box_ap"], model
        assert stats(result, model, "segm")["AP"] == figures["mask_ap"], model
    assert result["vocabulary"]["models"]["sam-clip-composed"]["vocabulary"] == "open"
    assert result["vocabulary"]["categories_no_model_knows"] == []
    assert result["failures"]["images"] == [] and result["run"]["images_answered"] == SCENES
    # the stored answers through each evaluator: pycocotools (bench/accuracy.py's) and faster-coco-eval
    data = ev.load_coco(dataset / "annotations.json", dataset / "images")
    by_name = {name: evaluated(tmp_path / "out", data, name) for name in ("pycocotools", "faster-coco-eval")}
    assert {m: f["metrics"] for m, f in result["per_model"].items()} == by_name[ev.evaluator_name()]
    for model, figures in bench.items():
        assert by_name["pycocotools"][model]["bbox"]["stats"]["AP"] == figures["box_ap"], model
        assert by_name["pycocotools"][model]["segm"]["stats"]["AP"] == figures["mask_ap"], model
    same_numbers(by_name["pycocotools"], by_name["faster-coco-eval"])


def evaluated(out: Path, data: ev.Dataset, evaluator: str) -> dict[str, Any]:
    """Every model's metrics from the answers stored in `out`, with `evaluator`."""
    identity = json.loads((out / "run.json").read_text())
    config = ev.RunConfig(
        identity["task"],
        identity["models"],
        identity["score_threshold"],
        identity["max_results"],
        identity["open_vocabulary_labels"],
    )
    every_shape = vms.TaskCapability(vocabulary=vms.VOCABULARY_OPEN)  # both models name every shape
    vocab = ev.match_vocabularies(data.categories, {m: every_shape for m in config.models})
    result = ev.evaluate(data, ev.ResultStore(out).load(), config, vocab, evaluator=evaluator).result
    return {m: f["metrics"] for m, f in result["per_model"].items()}


def same_numbers(a: dict[str, Any], b: dict[str, Any]) -> None:
    """COCO summaries and per-class AP equal; precision-recall curves equal but where a value lies on a
    rounding tie: faster-coco-eval's precision arrays differ from pycocotools' by up to 1 ulp (2.2e-16;
    pycocotools adds np.spacing(1) to every denominator), which can move the 4th decimal there."""
    for model in a:
        for kind, x in a[model].items():
            y = b[model][kind]
            if not isinstance(x, dict):
                assert x == y
                continue
            assert (x["stats"], x["per_class"], x["detections"]) == (y["stats"], y["per_class"], y["detections"])
            for threshold, curve in x["pr_curves"]["precision"].items():
                assert np.allclose(curve, y["pr_curves"]["precision"][threshold], rtol=0, atol=1.01e-4)


def test_keypoint_ap_equals_bench_accuracy(stack: dict[str, Any], dataset: Path, tmp_path: Path) -> None:
    result = evaluate(stack, dataset, tmp_path / "out", "--task", "keypoint-detection")
    with VisionModelClient(stack["maskrcnn"].address, timeout=120) as mrcnn:
        bench = accuracy.maskrcnn_service_keypoints(mrcnn, accuracy.eval_scenes(SCENES))
    assert result["models"] == ["maskrcnn"]  # the only model serving keypoint detection
    assert stats(result, "maskrcnn", "keypoints")["AP"] == bench["keypoint_ap"]
    assert stats(result, "maskrcnn", "bbox")["AP"] == bench["triangle_box_ap"]
    assert result["dataset"]["has_keypoints"]


def test_semantic_miou_equals_bench_accuracy(stack: dict[str, Any], dataset: Path, tmp_path: Path) -> None:
    """mIoU against the category-per-pixel rendering of the exported instance masks, as shapes.accuracy.semantic_miou
    draws its ground truth from the scenes' objects (background included, summed over the scenes)."""
    result = evaluate(stack, dataset, tmp_path / "out", "--task", "semantic-segmentation")
    with VisionModelClient(stack["sam-clip-composed"].address, timeout=300) as composed:
        bench = accuracy.semantic_miou(composed, accuracy.eval_scenes(SCENES))
    assert result["models"] == ["sam-clip-composed"]  # Mask R-CNN serves no label maps
    assert result["per_model"]["sam-clip-composed"]["metrics"]["semantic"]["stats"]["mIoU"] == bench


def test_zero_shot_top1_on_object_crops_equals_bench_accuracy(
    stack: dict[str, Any], dataset: Path, tmp_path: Path
) -> None:
    """Top-1 on the objects' crops (the same crops, the same objects left out: ev.MIN_OBJECT_PIXELS is
    shapes.accuracy.MIN_OBJECT_PIXELS) with the service's default templates, as shapes.accuracy.clip_top1."""
    assert ev.MIN_OBJECT_PIXELS == accuracy.MIN_OBJECT_PIXELS
    result = evaluate(stack, dataset, tmp_path / "out", "--task", "zero-shot-classification")
    scenes = accuracy.eval_scenes(SCENES)
    with VisionModelClient(stack["sam-clip-composed"].address, timeout=300) as composed:
        bench = accuracy.clip_top1(composed, scenes)
    metrics = result["per_model"]["sam-clip-composed"]["metrics"]["classification"]
    crops = sum(1 for s in scenes for o in s.objects if o.mask.sum() >= accuracy.MIN_OBJECT_PIXELS)
    assert metrics["items"] == crops and metrics["stats"]["top1"] == bench
    assert metrics["stats"]["top5"] >= metrics["stats"]["top1"]
