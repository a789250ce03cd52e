"""Mask R-CNN on ONNX Runtime (MASKRCNN_ENGINE=onnxruntime) against torch, on CPU.

The shipped shapes weights on held-out shapes scenes. Stated tolerances: boxes within
0.05 px, scores within 1e-4, the same labels in the same order, mask IoU >= 0.99 per
instance, keypoints within 0.1 px; COCO box and mask AP and the triangle-corner figures
through the gRPC service equal to 3 decimals.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shapes.accuracy import AP_OPTIONS, in_process_results, instance_ap, keypoint_figures
from shapes.scenes import EVAL_SEEDS, Scene, generate_scene
from visioncompare.maskrcnn.model import MaskRCNNModel
from visioncompare.maskrcnn.settings import MaskRCNNSettings
from visioncompare.runtime.client import VisionModelClient
from visioncompare.runtime.engines import export_main
from visioncompare.runtime.masks import decode_rle
from visioncompare.runtime.types import InferenceRequest, Instance, Prediction, Task, TaskOptions
from visioncompare.testing.serving import ServerThread

BOX_PX, SCORE, MASK_IOU, KEYPOINT_PX = 0.05, 1e-4, 0.99, 0.1
SCENES = [generate_scene(s) for s in EVAL_SEEDS[:12]]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def torch_model() -> MaskRCNNModel:
    m = MaskRCNNModel(MaskRCNNSettings(metrics_port=None, engine="torch"))
    m.load()
    return m


@pytest.fixture(scope="module")
def ort_server(cache_dir: Path) -> Iterator[ServerThread]:
    settings = MaskRCNNSettings(
        host="127.0.0.1", port=0, metrics_port=None, log_json=False, engine="onnxruntime", cache_dir=cache_dir
    )
    with ServerThread(MaskRCNNModel(settings), settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def ort_model(ort_server: ServerThread) -> MaskRCNNModel:
    assert isinstance(ort_server.model, MaskRCNNModel)
    return ort_server.model


def run(model: MaskRCNNModel, task: Task, image: np.ndarray, options: TaskOptions | None = None) -> list[Instance]:
    [answer] = model.predict([InferenceRequest(task, image, options or TaskOptions())])
    assert isinstance(answer, Prediction), answer
    return answer.instances


def assert_close(expected: list[Instance], got: list[Instance]) -> None:
    assert [i.label for i in got if i.label] and len(got) == len(expected) or not expected
    assert [i.label.name if i.label else None for i in got] == [i.label.name if i.label else None for i in expected]
    for e, g in zip(expected, got, strict=True):
        assert np.abs(np.subtract(e.box.as_list(), g.box.as_list())).max() <= BOX_PX
        assert abs(e.score - g.score) <= SCORE
        if e.mask is not None:
            assert g.mask is not None
            a, b = decode_rle(e.mask.rle), decode_rle(g.mask.rle)
            assert (a & b).sum() / max(1, (a | b).sum()) >= MASK_IOU
        assert [k.name for k in g.keypoints] == [k.name for k in e.keypoints]
        for ke, kg in zip(e.keypoints, g.keypoints, strict=True):
            assert max(abs(ke.x - kg.x), abs(ke.y - kg.y)) <= KEYPOINT_PX and abs(ke.score - kg.score) <= 1e-3


@pytest.mark.parametrize("task", [Task.INSTANCE_SEGMENTATION, Task.KEYPOINT_DETECTION])
def test_outputs_match_torch_on_held_out_scenes(
    torch_model: MaskRCNNModel, ort_model: MaskRCNNModel, task: Task
) -> None:
    found = 0
    for scene in SCENES[:6]:
        expected = run(torch_model, task, scene.image)
        assert_close(expected, run(ort_model, task, scene.image))
        found += len(expected)
    assert found >= 6


@pytest.mark.parametrize(
    "options",
    [
        TaskOptions(score_threshold=0.05, max_results=20),
        TaskOptions(labels=("triangle", "circle")),
        TaskOptions(min_size=160, max_size=256, nms_iou_threshold=0.3),
    ],
    ids=["low-threshold", "labels", "resize-nms"],
)
def test_every_option_behaves_the_same(
    torch_model: MaskRCNNModel, ort_model: MaskRCNNModel, options: TaskOptions
) -> None:
    for scene in SCENES[6:9]:
        assert_close(
            run(torch_model, Task.INSTANCE_SEGMENTATION, scene.image, options),
            run(ort_model, Task.INSTANCE_SEGMENTATION, scene.image, options),
        )


def test_a_batch_and_an_empty_answer_match(torch_model: MaskRCNNModel, ort_model: MaskRCNNModel) -> None:
    images = [SCENES[0].image, SCENES[0].image[:, ::-1].copy()]
    requests = [InferenceRequest(Task.INSTANCE_SEGMENTATION, im) for im in images]
    for e, g in zip(torch_model.predict(requests), ort_model.predict(requests), strict=True):
        assert isinstance(e, Prediction) and isinstance(g, Prediction) and g.batch_size == 2
        assert_close(e.instances, g.instances)
    blank = np.full((96, 128, 3), 40, np.uint8)  # nothing to find: the RoI heads see no box
    assert run(ort_model, Task.INSTANCE_SEGMENTATION, blank) == run(torch_model, Task.INSTANCE_SEGMENTATION, blank)


def test_ap_and_corners_through_the_service_match_torch_to_3_decimals(
    torch_model: MaskRCNNModel, ort_server: ServerThread
) -> None:
    """Each image alone through torch (in process, as the service batches only images of one
    padded size) and through the ONNX Runtime service (gRPC)."""
    scenes: list[Scene] = SCENES
    with VisionModelClient(ort_server.address, timeout=120) as client:
        served = [client.segment(s.image, Task.INSTANCE_SEGMENTATION, AP_OPTIONS) for s in scenes]
        served_kp = [client.detect(s.image, Task.KEYPOINT_DETECTION, AP_OPTIONS) for s in scenes]
    assert {r.engine for r in served + served_kp} == {"onnxruntime"}
    torch_ap = instance_ap(scenes, in_process_results(torch_model, Task.INSTANCE_SEGMENTATION, scenes))
    ort_ap = instance_ap(scenes, served)
    assert torch_ap["mask_ap"] > 0.5
    assert {k: round(v, 3) for k, v in ort_ap.items()} == {k: round(v, 3) for k, v in torch_ap.items()}
    torch_kp = keypoint_figures(scenes, in_process_results(torch_model, Task.KEYPOINT_DETECTION, scenes))
    ort_kp = keypoint_figures(scenes, served_kp)
    assert torch_kp["keypoint_ap"] is not None and torch_kp["keypoint_ap"] > 0.5
    assert {k: None if v is None else round(v, 3) for k, v in ort_kp.items()} == {
        k: None if v is None else round(v, 3) for k, v in torch_kp.items()
    }


def test_capabilities_and_every_answer_say_onnxruntime(ort_server: ServerThread) -> None:
    with VisionModelClient(ort_server.address, timeout=60) as client:
        caps = client.capabilities()
        result = client.segment(SCENES[0].image, Task.INSTANCE_SEGMENTATION)
    assert caps.runtime.engine == "onnxruntime" and "onnxruntime" in caps.runtime.software_version
    assert result.engine == "onnxruntime"
    assert not any("ONNX Runtime could not load" in w for w in result.warnings)


def test_the_second_start_loads_the_cached_files_and_export_onnx_reports_them(
    ort_model: MaskRCNNModel, cache_dir: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    files = ort_model.onnx_files
    assert {f.path.name.split("-")[0] for f in files} == {
        "shapes_maskrcnn.backbone", "shapes_maskrcnn.rpn_head", "shapes_maskrcnn.box", "shapes_maskrcnn.mask",
        "shapes_keypointrcnn.backbone", "shapes_keypointrcnn.rpn_head", "shapes_keypointrcnn.box",
        "shapes_keypointrcnn.keypoint",
    }  # fmt: skip
    assert all(f.path.is_relative_to(cache_dir / "onnx") for f in files)
    caplog.set_level(logging.INFO)
    again = MaskRCNNModel(MaskRCNNSettings(metrics_port=None, engine="onnxruntime", cache_dir=cache_dir))
    again.load()
    assert [f.path for f in again.onnx_files] == [f.path for f in files]
    assert not any(f.exported for f in again.onnx_files) and "exporting" not in caplog.text
    assert export_main(["maskrcnn", "--cache-dir", str(cache_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(files) and all("cached, verified" in line for line in out)
