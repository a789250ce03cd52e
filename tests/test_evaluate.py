"""`vcompare evaluate` end to end on the playground test models (tests/playground_model.py):
a fixed-vocabulary model ("bright", "dark") and an open-vocabulary one, behind a gateway.

The dataset: small images, each a dark background with one bright rectangle, annotated in
COCO format with the categories "bright" (the rectangle: box and mask) and "striped" (which
neither image has and no fixed model knows). Both models find the rectangle exactly, so
their AP for "bright" is 1; the fixed model's "dark" label has no category; the open model,
given ["bright", "striped"], calls the dark quadrant "striped" (false positives).
"""

from __future__ import annotations

import asyncio
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
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import comparison_service_pb2 as cs

from gateway import evaluate as ev
from gateway.cli import app
from services.runtime.masks import encode_mask
from tests.gateway_support import GatewayThread
from tests.processes import ROOT, ServiceProcess, free_port

SCHEMA = json.loads(ev.SCHEMA_FILE.read_text())
BOXES = [(10, 8, 30, 20), (30, 20, 60, 40), (5, 25, 25, 45), (40, 5, 70, 30), (15, 15, 45, 35)]


def playground(name: str, vocabulary: str, stage_ms: str = "0,0,0") -> ServiceProcess:
    port = free_port()
    args = [
        "-m",
        "tests.playground_service",
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
    for p in procs:
        p.start()
    try:
        with GatewayThread({p.name: f"dns:///{p.address}" for p in procs}) as gw:
            gw.wait_serving()
            yield gw
    finally:
        for p in procs:
            p.stop()


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
    for p in procs:
        p.start()
    try:
        with GatewayThread({p.name: f"dns:///{p.address}" for p in procs}) as gw:
            gw.wait_serving()
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
    finally:
        for p in procs:
            p.stop()


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
