"""`vcompare evaluate` end to end on the playground test models (visioncompare/testing/playground_model.py):
a fixed-vocabulary model ("bright", "dark") and an open-vocabulary one, behind a gateway.

The dataset: small images, each a dark background with one bright rectangle, annotated in
COCO format with the categories "bright" (the rectangle: box and mask) and "striped" (which
neither image has and no fixed model knows). Both models find the rectangle exactly, so
their AP for "bright" is 1; the fixed model's "dark" label has no category; the open model,
given ["bright", "striped"], calls the dark quadrant "striped" (false positives).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from visioncompare.runtime.masks import encode_mask
from visioncompare.testing.gateway_support import GatewayThread, gateway_over
from visioncompare.testing.processes import ROOT, ServiceProcess, free_port
from visioncompare.tools import evaluate as ev
from visioncompare.tools.cli import app
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import comparison_service_pb2 as cs
from visioncompare.v1 import vision_model_service_pb2 as vms

SCHEMA = json.loads(ev.SCHEMA_FILE.read_text())
BOXES = [(10, 8, 30, 20), (30, 20, 60, 40), (5, 25, 25, 45), (40, 5, 70, 30), (15, 15, 45, 35)]


def playground(name: str, vocabulary: str, stage_ms: str = "0,0,0") -> ServiceProcess:
    port = free_port()
    args = [
        "-m",
        "visioncompare.testing.playground_service",
        "--port",
        str(port),
        "--name",
        name,
        "--vocabulary",
        vocabulary,
        "--stage-ms",
        stage_ms,
    ]
    return ServiceProcess(name, args, port)


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayThread]:
    procs = [playground("fixed", "fixed"), playground("open", "open")]
    with gateway_over(procs) as gw:
        yield gw


def scene(box: tuple[int, int, int, int], width: int = 80, height: int = 56) -> np.ndarray:
    image = np.full((height, width, 3), 20, np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 230
    return image


def write_dataset(root: Path, boxes: list[tuple[int, int, int, int]], *, broken: bool = True) -> Path:
    """COCO annotations at root/annotations.json, images under root/images; with `broken`,
    one image that is not an image and one listed but missing."""
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    images, annotations = [], []
    for n, box in enumerate(boxes, start=1):
        image = scene(box)
        Image.fromarray(image).save(images_dir / f"{n}.png")
        images.append({"id": n, "file_name": f"{n}.png", "width": image.shape[1], "height": image.shape[0]})
        mask = encode_mask(image.mean(axis=2) > 127)
        x1, y1, x2, y2 = box
        annotations.append(
            {
                "id": n,
                "image_id": n,
                "category_id": 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": mask.area,
                "segmentation": {"size": [mask.rle.height, mask.rle.width], "counts": mask.rle.counts.decode()},
                "iscrowd": 0,
            }
        )
    if broken:
        (images_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        images.append({"id": 100, "file_name": "broken.png", "width": 80, "height": 56})
        images.append({"id": 101, "file_name": "missing.png", "width": 80, "height": 56})
    categories = [
        {"id": 1, "name": "bright", "supercategory": "light"},
        {"id": 2, "name": "Striped", "supercategory": "pattern"},
    ]
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def run_cli(*args: str) -> Any:
    result = CliRunner().invoke(app, ["evaluate", *args, "--no-progress"])
    return result


def load(out: Path) -> dict[str, Any]:
    result = json.loads((out / "evaluation.json").read_text())
    jsonschema.Draft202012Validator(SCHEMA).validate(result)
    return result


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_a_labelled_dataset_gives_metrics_agreement_failures_and_a_report(
    gateway: GatewayThread, tmp_path: Path
) -> None:
    annotations = write_dataset(tmp_path / "data", BOXES)
    out = tmp_path / "out"
    run = run_cli(
        str(tmp_path / "data" / "images"),
        "-a",
        str(annotations),
        "-o",
        str(out),
        "-g",
        gateway.address,
        "--concurrency",
        "3",
        "--retries",
        "0",
    )
    assert run.exit_code == 0, run.output
    result = load(out)
    assert result["task"] == "instance-segmentation" and result["models"] == ["fixed", "open"]
    # names match case-insensitively; the open model gets the category names themselves
    v = result["vocabulary"]
    assert v["open_vocabulary_labels"] == ["bright", "Striped"]
    assert v["categories_no_model_knows"] == []
    assert v["models"]["fixed"] == {
        "vocabulary": "fixed",
        "matched": {"bright": "bright"},
        "unknown_categories": ["Striped"],
        "labels_without_category": ["dark"],
    }
    assert v["models"]["open"]["matched"] == {"bright": "bright", "Striped": "Striped"}
    for model in ("fixed", "open"):
        m = result["per_model"][model]
        assert m["images_ok"] == len(BOXES) and m["errors"]["by_code"] == {}
        assert m["latency_ms"]["count"] == len(BOXES) and m["latency_ms"]["p50"] <= m["latency_ms"]["p99"]
        for kind in ("bbox", "segm"):
            metrics = m["metrics"][kind]
            bright = next(r for r in metrics["per_class"] if r["name"] == "bright")
            assert bright["AP"] == 1.0 and bright["ground_truth"] == len(BOXES)
            assert next(r for r in metrics["per_class"] if r["name"] == "Striped")["AP"] is None  # no objects
            assert metrics["stats"]["AP"] == 1.0 == metrics["stats"]["AP50"] == metrics["stats"]["AP75"]
            assert len(metrics["pr_curves"]["precision"]["0.50"]) == 101
    assert result["per_model"]["fixed"]["metrics"]["unmatched_detections"] == len(BOXES)  # its "dark" instances
    assert result["per_model"]["open"]["metrics"]["segm"]["detections"] == 2 * len(BOXES)  # bright + "Striped"
    # the images that failed are counted by code and listed, not dropped
    assert result["failures"]["by_code"] == {"INVALID_ARGUMENT": 1, "UNREADABLE": 1}
    assert {f["file_name"] for f in result["failures"]["images"]} == {"broken.png", "missing.png"}
    assert result["run"]["images_answered"] == len(BOXES) and result["run"]["images_failed"] == 2
    # agreement over instances scoring >= 0.5: the bright rectangle, matched, labels agree
    [pair] = result["agreement"]["pairs"]
    assert (pair["model_a"], pair["model_b"], pair["iou_kind"]) == ("fixed", "open", "mask")
    assert pair["images"] == len(BOXES) and pair["matched"] == len(BOXES)
    assert pair["mean_iou"] == 1.0 and pair["label_agreement"] == 1.0 and pair["only_a"] == pair["only_b"] == 0
    assert result["evaluator"]["name"].startswith(ev.evaluator_name())
    report = (out / "report.html").read_text()
    assert report.count('src="data:image/png;base64,') == 3  # precision-recall, per-class AP, latency
    assert "http://" not in report and "https://" not in report and "<script" not in report
    assert "broken.png" in report and "missing.png" in report and "Striped" in report
    assert "failed images: INVALID_ARGUMENT x1, UNREADABLE x1" in run.output


def test_agreement_counts_every_instance_with_agreement_score_0_and_the_gallery_shows_disagreement(
    gateway: GatewayThread, tmp_path: Path
) -> None:
    annotations = write_dataset(tmp_path / "data", BOXES[:3], broken=False)
    out = tmp_path / "out"
    run = run_cli(
        str(tmp_path / "data" / "images"),
        "-a",
        str(annotations),
        "-o",
        str(out),
        "-g",
        gateway.address,
        "--agreement-score",
        "0",
    )
    assert run.exit_code == 0, run.output
    result = load(out)
    [pair] = result["agreement"]["pairs"]
    # the dark quadrant: "dark" (fixed) and "Striped" (open) match, labels differ
    assert result["agreement"]["min_score"] is None
    assert pair["matched"] == 6 and pair["label_agreement"] == 0.5
    worst = pair["most_disagreeing"]
    assert len(worst) == 3 and all(r["labels_disagree"] == 1 and r["disagreement"] == 0.5 for r in worst)
    report = (out / "report.html").read_text()
    assert report.count('src="data:image/jpeg;base64,') == 3  # ground truth beside both models, per image


def test_only_the_named_models_and_categories_no_model_knows(gateway: GatewayThread, tmp_path: Path) -> None:
    annotations = write_dataset(tmp_path / "data", BOXES[:2], broken=False)
    out = tmp_path / "out"
    run = run_cli(
        str(tmp_path / "data" / "images"),
        "-a",
        str(annotations),
        "-o",
        str(out),
        "-g",
        gateway.address,
        "--models",
        "fixed",
        "--task",
        "object-detection",
    )
    assert run.exit_code == 0, run.output
    result = load(out)
    assert result["models"] == ["fixed"] and result["agreement"]["pairs"] == []
    assert result["vocabulary"]["categories_no_model_knows"] == ["Striped"]
    assert result["vocabulary"]["open_vocabulary_labels"] == []
    assert set(result["per_model"]["fixed"]["metrics"]) == {"unmatched_detections", "bbox"}
    assert "categories no model knows: Striped" in run.output


def test_an_image_folder_alone_gives_agreement_and_latency_only(gateway: GatewayThread, tmp_path: Path) -> None:
    images = tmp_path / "photos"
    images.mkdir()
    for n, box in enumerate(BOXES[:3]):
        Image.fromarray(scene(box)).save(images / f"p{n}.jpg", quality=95)
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    run = run_cli(str(images), "-o", str(out), "-g", gateway.address, "--labels", "bright,dark")
    assert run.exit_code == 0, run.output
    result = load(out)
    assert result["dataset"]["annotations"] is None and result["dataset"]["images"] == 3
    assert all(m["metrics"] is None for m in result["per_model"].values())
    assert result["evaluator"]["name"] is None
    assert result["vocabulary"]["open_vocabulary_labels"] == ["bright", "dark"]
    [pair] = result["agreement"]["pairs"]
    assert pair["matched"] == 3 and pair["label_agreement"] == 1.0  # at >= 0.5: the bright instances
    assert all(m["latency_ms"]["count"] == 3 for m in result["per_model"].values())
    report = (out / "report.html").read_text()
    assert "No annotations: agreement and latency only." in report


def test_bad_arguments_exit_2(gateway: GatewayThread, tmp_path: Path) -> None:
    annotations = write_dataset(tmp_path / "data", BOXES[:1], broken=False)
    images = str(tmp_path / "data" / "images")
    no_keypoints = run_cli(
        images, "-a", str(annotations), "-g", gateway.address, "-t", "keypoint-detection", "-o", str(tmp_path / "o1")
    )
    assert no_keypoints.exit_code == 2 and "needs annotations with keypoints" in no_keypoints.output
    unknown = run_cli(
        images, "-a", str(annotations), "-g", gateway.address, "--models", "nope", "-o", str(tmp_path / "o2")
    )
    assert unknown.exit_code == 2 and "unknown model(s) nope" in unknown.output
    not_coco = tmp_path / "x.json"
    not_coco.write_text("[]")
    bad = run_cli(images, "-a", str(not_coco), "-g", gateway.address, "-o", str(tmp_path / "o3"))
    assert bad.exit_code == 2 and "not a COCO annotation file" in bad.output


def test_a_folder_holding_another_run_is_not_mixed_up(gateway: GatewayThread, tmp_path: Path) -> None:
    annotations = write_dataset(tmp_path / "data", BOXES[:2], broken=False)
    images, out = str(tmp_path / "data" / "images"), str(tmp_path / "out")
    assert run_cli(images, "-a", str(annotations), "-g", gateway.address, "-o", out).exit_code == 0
    other = run_cli(images, "-a", str(annotations), "-g", gateway.address, "-o", out, "--score-threshold", "0.3")
    assert other.exit_code == 2 and "score_threshold differ" in other.output
    fresh = run_cli(
        images, "-a", str(annotations), "-g", gateway.address, "-o", out, "--score-threshold", "0.3", "--fresh"
    )
    assert fresh.exit_code == 0, fresh.output
    assert load(Path(out))["run"]["resumed_images"] == 0


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    # Slow models (0.25 s an image), one call at a time: interrupt after two answers are stored.
    procs = [playground("fixed", "fixed", "0,250,0"), playground("open", "open", "0,250,0")]
    with gateway_over(procs) as gw:
        boxes = BOXES * 2
        annotations = write_dataset(tmp_path / "data", boxes, broken=False)
        out = tmp_path / "out"
        args = [
            str(tmp_path / "data" / "images"),
            "-a",
            str(annotations),
            "-o",
            str(out),
            "-g",
            gw.address,
            "--concurrency",
            "1",
            "--no-progress",
        ]
        vcompare = str(Path(sys.executable).parent / "vcompare")
        child = subprocess.Popen(
            [vcompare, "evaluate", *args],
            cwd=ROOT,
            env={**os.environ},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        stored = out / "results.jsonl"
        end = time.monotonic() + 60
        while time.monotonic() < end and (not stored.exists() or len(stored.read_text().splitlines()) < 2):
            assert child.poll() is None, child.communicate()[0].decode()
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        output = child.communicate(timeout=30)[0].decode()
        assert child.returncode == 130, output
        assert "interrupted" in output and "run the same command to resume" in output
        done = len(stored.read_text().splitlines())
        assert 2 <= done < len(boxes)
        assert not (out / "evaluation.json").exists()
        resumed = run_cli(*args[:-1])
        assert resumed.exit_code == 0, resumed.output
        assert f"resuming: {done} stored, {len(boxes) - done} to go" in resumed.output
        result = load(out)
        assert result["run"]["resumed_images"] == done
        assert result["run"]["images_this_run"] == len(boxes) - done
        assert result["run"]["images_answered"] == len(boxes)
        lines = stored.read_text().splitlines()
        assert len(lines) == len(boxes)  # no image was sent twice
        assert sorted(json.loads(line)["image_id"] for line in lines) == list(range(1, len(boxes) + 1))
        assert result["per_model"]["fixed"]["metrics"]["segm"]["stats"]["AP"] == 1.0


def test_a_cut_last_line_is_ignored_and_that_image_runs_again(tmp_path: Path) -> None:
    store = ev.ResultStore(tmp_path)
    store.open({"x": 1})
    store.append(ev.Record(1, "1.png", "OK", response=cs.CompareResponse(task=pb.TASK_OBJECT_DETECTION)))
    store.append(ev.Record(2, "2.png", "UNAVAILABLE", "down"))
    with store.path.open("a") as f:
        f.write('{"image_id": 3, "file_na')
    records = store.open({"x": 1})
    assert sorted(records) == [1, 2]
    assert records[1].response is not None and records[1].response.task == pb.TASK_OBJECT_DETECTION
    assert records[2].code == "UNAVAILABLE"
    with pytest.raises(ValueError, match="x differ"):
        store.open({"x": 2})


class FlakyStub:
    """Compare fails with UNAVAILABLE `failures` times, then answers (a model in the answer
    UNAVAILABLE `model_down` more times)."""

    def __init__(self, failures: int, model_down: int = 0) -> None:
        self.failures, self.model_down, self.calls = failures, model_down, 0

    async def Compare(self, request: cs.CompareRequest, timeout: float, metadata: Any) -> cs.CompareResponse:  # noqa: N802
        self.calls += 1
        if self.calls <= self.failures:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "gateway restarting"
            )
        code = 14 if self.calls <= self.failures + self.model_down else 0
        return cs.CompareResponse(results=[cs.ModelResult(model_name="m", status=cs.ModelStatus(code=code))])


@pytest.mark.parametrize(
    ("failures", "model_down", "retries", "code", "calls"),
    [
        (2, 0, 3, "OK", 3),  # the call is retried while UNAVAILABLE
        (0, 2, 3, "OK", 3),  # and while a model in it is
        (5, 0, 2, "UNAVAILABLE", 3),  # until the retries run out: then recorded as failed
        (0, 5, 1, "OK", 2),  # an answer whose model stays down is kept (that model's error)
    ],
)
def test_unavailable_is_retried(
    tmp_path: Path, failures: int, model_down: int, retries: int, code: str, calls: int
) -> None:
    (tmp_path / "a.png").write_bytes(b"png")
    stub = FlakyStub(failures, model_down)
    image = ev.DatasetImage(1, "a.png", tmp_path / "a.png")
    record, retried = asyncio.run(
        ev.compare_image(
            stub, image, ev.RunConfig("object-detection", ["m"]), timeout_s=1, retries=retries, backoff_s=0.001
        )
    )
    assert (record.code, record.attempts, stub.calls, retried) == (code, calls, calls, calls - 1)


def test_names_match_across_case_spaces_underscores_and_hyphens() -> None:
    from visioncompare.v1 import vision_model_service_pb2 as vms

    categories = [{"id": 1, "name": "traffic light"}, {"id": 2, "name": "Hair-Drier"}, {"id": 3, "name": "zebra"}]
    cap = vms.TaskCapability(vocabulary=vms.VOCABULARY_FIXED, label_names=["Traffic_Light", "hair drier", "cat"])
    [v] = ev.match_vocabularies(categories, {"m": cap}).values()
    assert v.category_of == {"traffic light": 1, "hair drier": 2}
    assert v.unknown_categories == ["zebra"] and v.labels_without_category == ["cat"]


def test_the_gateway_sends_open_vocabulary_labels_to_open_models_only(gateway: GatewayThread) -> None:
    image = pb.Image(encoded=(lambda b: b)(_png(scene(BOXES[0]))))
    request = cs.CompareRequest(
        image=image, task=pb.TASK_INSTANCE_SEGMENTATION, open_vocabulary_labels=["bright", "striped"]
    )
    response = gateway.stub.Compare(request, timeout=30)
    assert list(response.labels_used) == ["bright", "striped"]
    labels = {r.model_name: sorted(i.label.name for i in r.segment.instances) for r in response.results}
    assert labels == {"fixed": ["bright", "dark"], "open": ["bright", "striped"]}  # the fixed model keeps its own
    # without them, the open model gets the fixed model's label set, as before
    response = gateway.stub.Compare(cs.CompareRequest(image=image, task=pb.TASK_INSTANCE_SEGMENTATION), timeout=30)
    assert list(response.labels_used) == ["bright", "dark"]


def _png(image: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


# --- semantic segmentation and zero-shot classification (issue 29) -----------------------------


@pytest.fixture(scope="module")
def open_pair() -> Iterator[GatewayThread]:
    """Two open-vocabulary playground models: each maps the first label to the bright pixels and the
    second to the rest of the top-left quadrant, and ranks the labels in the order given."""
    procs = [playground("merged", "open"), playground("composed", "open")]
    with gateway_over(procs) as gw:
        yield gw


TINY = (2, 2, 7, 7)  # 25 px: under the minimum object size, no crop


def write_two_class_dataset(root: Path, boxes: list[tuple[int, int, int, int]]) -> Path:
    """Each image: "bright" (its bright box) and "Striped" (the bottom-right quadrant less the box),
    both with masks; a third category, "dotted", that no image has."""
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    images, annotations = [], []
    for n, box in enumerate(boxes, start=1):
        image = scene(box)
        Image.fromarray(image).save(images_dir / f"{n}.png")
        images.append({"id": n, "file_name": f"{n}.png", "width": 80, "height": 56})
        bright = image.mean(axis=2) > 127
        striped = np.zeros_like(bright)
        striped[28:, 40:] = True
        for category, mask in ((1, bright), (2, striped & ~bright)):
            encoded = encode_mask(mask)
            b = encoded.bbox
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": n,
                    "category_id": category,
                    "bbox": [b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1],
                    "area": encoded.area,
                    "segmentation": {"size": [56, 80], "counts": encoded.rle.counts.decode()},
                    "iscrowd": 0,
                }
            )
    categories = [{"id": 1, "name": "bright"}, {"id": 2, "name": "Striped"}, {"id": 3, "name": "dotted"}]
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def expected_semantic(boxes: list[tuple[int, int, int, int]]) -> dict[str, float]:
    """What a playground model's label maps score: it calls the top-left quadrant less the box "Striped"."""
    inter, union = np.zeros(3), np.zeros(3)
    correct = total = 0
    for box in boxes:
        bright = scene(box).mean(axis=2) > 127
        truth = np.zeros(bright.shape, np.int64)
        truth[28:, 40:] = 2
        truth[bright] = 1
        pred = np.zeros(bright.shape, np.int64)
        pred[:28, :40] = 2
        pred[bright] = 1
        for c in range(3):
            inter[c] += ((pred == c) & (truth == c)).sum()
            union[c] += ((pred == c) | (truth == c)).sum()
        correct += int((pred == truth).sum())
        total += pred.size
    present = union > 0
    return {
        "mIoU": round(float((inter[present] / union[present]).mean()), 4),
        "mIoU_categories": round(float((inter[1:] / union[1:]).mean()), 4),
        "pixel_accuracy": round(correct / total, 4),
    }


def test_semantic_segmentation_gives_miou_per_class_iou_and_label_map_agreement(
    open_pair: GatewayThread, tmp_path: Path
) -> None:
    boxes = BOXES[:3]
    annotations = write_two_class_dataset(tmp_path / "data", boxes)
    out = tmp_path / "out"
    run = run_cli(
        str(tmp_path / "data" / "images"), "-a", str(annotations), "-o", str(out), "-g", open_pair.address,
        "-t", "semantic-segmentation",
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    result = load(out)
    assert result["task"] == "semantic-segmentation" and result["options"] == {
        "score_threshold": None,
        "max_results": None,
    }
    assert result["vocabulary"]["open_vocabulary_labels"] == ["bright", "Striped", "dotted"]
    expected = expected_semantic(boxes)
    for model in ("merged", "composed"):
        metrics = result["per_model"][model]["metrics"]["semantic"]
        assert metrics["stats"] == expected and metrics["images"] == 3
        rows = {r["name"]: r for r in metrics["per_class"]}
        assert rows["bright"]["IoU"] == 1.0 and rows["Striped"]["IoU"] == 0.0 and rows["dotted"]["IoU"] is None
        assert rows["background"]["category_id"] == 0
        assert rows["Striped"]["ground_truth_pixels"] == sum(
            40 * 28 - ((scene(b)[28:, 40:].mean(axis=2) > 127).sum()) for b in boxes
        )
    [pair] = result["agreement"]["pairs"]
    assert pair["kind"] == "label_map" and pair["images"] == 3
    assert pair["pixel_agreement"] == 1.0 and pair["mean_iou"] == 1.0 and pair["most_disagreeing"] == []
    assert f"mIoU {expected['mIoU']:.3f}" in run.output and "pixel agreement 100.0%" in run.output
    report = (out / "report.html").read_text()
    assert "per-class IoU: semantic segmentation" in report and "Precision-recall" not in report
    assert report.count('src="data:image/png;base64,') == 2  # per-class IoU and latency
    assert "a class map drawn from the instance masks" in report


def test_zero_shot_classification_on_object_crops_gives_top1_and_top5(open_pair: GatewayThread, tmp_path: Path) -> None:
    boxes = [*BOXES[:3], TINY]
    annotations = write_two_class_dataset(tmp_path / "data", boxes)
    out = tmp_path / "out"
    args = [str(tmp_path / "data" / "images"), "-a", str(annotations), "-o", str(out), "-g", open_pair.address]
    first = run_cli(*args, "-t", "zero-shot-classification", "--limit", "1")
    assert first.exit_code == 0, first.output
    assert "zero-shot-classification on 2 object crops" in first.output
    run = run_cli(*args, "-t", "zero-shot-classification")  # resumes the first image's two crops
    assert run.exit_code == 0, run.output
    assert "on 7 object crops" in run.output and "resuming: 2 stored, 5 to go" in run.output
    result = load(out)
    assert result["dataset"]["items"] == 7 and result["run"]["images_total"] == 7  # the tiny box is no crop
    assert result["options"] == {"score_threshold": None, "max_results": 5}
    for model in ("merged", "composed"):
        metrics = result["per_model"][model]["metrics"]["classification"]
        # "bright" is the first label, so every crop is called bright: right for 3, wrong (top-1) for 4
        assert metrics["items"] == 7 and metrics["stats"] == {"top1": round(3 / 7, 4), "top5": 1.0}
        rows = {r["name"]: r for r in metrics["per_class"]}
        assert (rows["bright"]["top1"], rows["Striped"]["top1"], rows["Striped"]["top5"]) == (1.0, 0.0, 1.0)
        assert rows["dotted"]["top1"] is None and rows["Striped"]["ground_truth"] == 4
    [pair] = result["agreement"]["pairs"]
    assert pair["kind"] == "classification" and pair["images"] == 7
    assert (pair["top1_agreement"], pair["topk_overlap"], pair["rank_correlation"]) == (1.0, 1.0, 1.0)
    assert {r["file_name"] for r in result["failures"]["images"]} == set()
    stored = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["file_name"] for r in stored)[:2] == ["1.png#1", "1.png#2"]
    report = (out / "report.html").read_text()
    assert "per-class top-1 accuracy" in report and "object crops" in report


def test_an_image_folder_of_class_folders_is_a_classification_dataset(open_pair: GatewayThread, tmp_path: Path) -> None:
    root = tmp_path / "classes"
    for name, boxes in (("bright", BOXES[:2]), ("dark", BOXES[2:3])):
        (root / name).mkdir(parents=True)
        for n, box in enumerate(boxes):
            Image.fromarray(scene(box)).save(root / name / f"{n}.png")
    out = tmp_path / "out"
    run = run_cli(str(root), "-o", str(out), "-g", open_pair.address, "-t", "zero-shot-classification")
    assert run.exit_code == 0, run.output
    result = load(out)
    assert result["dataset"]["classes_from_folders"] and result["dataset"]["categories"] == ["bright", "dark"]
    assert result["vocabulary"]["open_vocabulary_labels"] == ["bright", "dark"]
    metrics = result["per_model"]["merged"]["metrics"]["classification"]
    assert metrics["stats"] == {"top1": round(2 / 3, 4), "top5": 1.0}  # every image is called "bright"
    assert "No annotations" not in (out / "report.html").read_text()


def test_semantic_segmentation_needs_masks(open_pair: GatewayThread, tmp_path: Path) -> None:
    annotations = write_dataset(tmp_path / "data", BOXES[:1], broken=False)
    data = json.loads(annotations.read_text())
    for ann in data["annotations"]:
        del ann["segmentation"]
    annotations.write_text(json.dumps(data))
    run = run_cli(
        str(tmp_path / "data" / "images"), "-a", str(annotations), "-g", open_pair.address,
        "-t", "semantic-segmentation", "-o", str(tmp_path / "out"),
    )  # fmt: skip
    assert run.exit_code == 2 and "needs annotations with masks" in run.output


def test_the_gallery_draws_label_maps_and_crops_beside_their_ground_truth(tmp_path: Path) -> None:
    """Stored answers where two models disagree: the report draws the ground truth's class map (or the
    crop's class) first."""
    from visioncompare.gateway.agreement import pairwise
    from visioncompare.tools.report import report_html

    annotations = write_two_class_dataset(tmp_path / "data", BOXES[:2])
    data = ev.load_coco(annotations, tmp_path / "data" / "images")
    open_cap = vms.TaskCapability(vocabulary=vms.VOCABULARY_OPEN)
    vocab = ev.match_vocabularies(data.categories, {"a": open_cap, "b": open_cap})

    def label_map(indices: np.ndarray) -> vms.SegmentResponse:
        lm = pb.LabelMap(width=80, height=56, class_names=["background", "bright", "Striped"])
        lm.class_indices_u16le = indices.astype("<u2").tobytes()
        return vms.SegmentResponse(label_map=lm)

    records = {}
    for image in data.images:
        truth = ev.semantic_truth(data, image.id, [1, 2, 3])
        assert truth is not None
        results = [
            cs.ModelResult(model_name="a", segment=label_map(truth)),
            cs.ModelResult(model_name="b", segment=label_map(np.zeros_like(truth))),
        ]
        response = cs.CompareResponse(results=results, agreements=pairwise(results, 0.5))
        records[image.id] = ev.Record(image.id, image.file_name, "OK", response=response)
    config = ev.RunConfig("semantic-segmentation", ["a", "b"], None, None, ["bright", "Striped", "dotted"])
    evaluation = ev.evaluate(data, records, config, vocab)
    assert evaluation.result["per_model"]["a"]["metrics"]["semantic"]["stats"]["mIoU"] == 1.0
    [pair] = evaluation.result["agreement"]["pairs"]
    assert len(pair["most_disagreeing"]) == 2 and pair["pixel_agreement"] < 1
    jsonschema.Draft202012Validator(SCHEMA).validate(evaluation.result)
    html = report_html(evaluation)
    assert html.count('src="data:image/jpeg;base64,') == 2 and "pixel agreement" in html

    items = data.items("zero-shot-classification")
    assert [i.file_name for i in items] == ["1.png#1", "1.png#2", "2.png#3", "2.png#4"]
    records = {}
    for item in items:

        def ranked(*pairs: tuple[str, float]) -> vms.ClassifyResponse:
            return vms.ClassifyResponse(scores=[vms.ClassScore(label=pb.Label(name=n, score=p)) for n, p in pairs])

        results = [
            cs.ModelResult(model_name="a", classify=ranked(("bright", 0.7), ("Striped", 0.3))),
            cs.ModelResult(model_name="b", classify=ranked(("Striped", 0.7), ("bright", 0.3))),
        ]
        response = cs.CompareResponse(results=results, agreements=pairwise(results, 0.5))
        records[item.id] = ev.Record(item.id, item.file_name, "OK", response=response)
    config = ev.RunConfig("zero-shot-classification", ["a", "b"], None, 5, ["bright", "Striped", "dotted"])
    evaluation = ev.evaluate(data, records, config, vocab)
    jsonschema.Draft202012Validator(SCHEMA).validate(evaluation.result)
    assert evaluation.result["per_model"]["a"]["metrics"]["classification"]["stats"] == {"top1": 0.5, "top5": 1.0}
    [pair] = evaluation.result["agreement"]["pairs"]
    assert (pair["top1_agreement"], pair["rank_correlation"]) == (0.0, -1.0)
    html = report_html(evaluation)
    assert html.count('src="data:image/jpeg;base64,') == 4 and "top-1 differs" in html
    crop = Image.open(io.BytesIO(items[0].read()))
    assert crop.size == (20, 20)  # the 20 x 12 box, padded square
