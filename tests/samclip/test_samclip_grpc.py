"""SAM-CLIP over real gRPC on port 0: every task, and the statuses of bad input."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from visioncompare.runtime.client import VisionModelClient
from visioncompare.runtime.types import AutomaticOptions, Box, Point, Task, TaskOptions
from visioncompare.samclip.model import SamClipModel
from visioncompare.samclip.settings import SamClipSettings
from visioncompare.testing.images import encode
from visioncompare.testing.serving import ServerThread
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import vision_model_service_pb2 as vms
from visioncompare.v1 import vision_model_service_pb2_grpc as vms_grpc

AUTO = AutomaticOptions(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)


def noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    settings = SamClipSettings(
        backend="composed",
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        log_json=False,
        sam_variant="tiny",
        clip_model="tiny",
        sam_weights="random",
        clip_pretrained="random",
        device="cpu",
        max_batch_size=4,
        max_queue_delay_ms=20,
    )
    with ServerThread(SamClipModel(settings), settings) as srv:
        yield srv


@pytest.fixture
def client(server: ServerThread) -> Iterator[VisionModelClient]:
    with VisionModelClient(server.address, timeout=60) as c:
        yield c


def test_capabilities(client: VisionModelClient) -> None:
    caps = client.capabilities()
    assert caps.card.name == "SAM-CLIP (composed: Segment Anything + OpenCLIP)"
    assert caps.card.paper_url == "https://arxiv.org/abs/2310.15308"
    assert [c.name for c in caps.runtime.components] == ["segment-anything tiny", "open_clip tiny"]
    assert caps.runtime.pretrained is False and caps.card.parameter_count > 0
    assert {t.task for t in caps.tasks} == {
        Task.ZERO_SHOT_CLASSIFICATION,
        Task.PROMPTED_SEGMENTATION,
        Task.AUTOMATIC_SEGMENTATION,
        Task.SEMANTIC_SEGMENTATION,
        Task.OBJECT_DETECTION,
        Task.INSTANCE_SEGMENTATION,
    }


def test_classify(client: VisionModelClient) -> None:
    result = client.classify(encode(noise(30, 50, 1)), ["cat", "dog", "car"], TaskOptions(max_results=2))
    assert len(result.scores) == 2 and {s.label.name for s in result.scores} <= {"cat", "dog", "car"}
    assert result.scores[0].label.score >= result.scores[1].label.score
    assert result.model_name == "sam-clip-composed" and result.pretrained is False
    assert any("random weights" in w for w in result.warnings)
    assert (result.image_width, result.image_height) == (50, 30)


def test_prompted_segmentation(client: VisionModelClient) -> None:
    options = TaskOptions(
        points=(Point(10, 10), Point(40, 20, False)), boxes=(Box(2, 2, 30, 25),), multimask_output=True
    )
    result = client.segment(encode(noise(30, 50, 2)), Task.PROMPTED_SEGMENTATION, options)
    assert len(result.instances) == 3 and result.masks().shape == (3, 30, 50)
    assert all(i.predicted_iou is not None and i.label is None for i in result.instances)
    assert result.timing.inference_ms > 0


def test_automatic_segmentation(client: VisionModelClient) -> None:
    result = client.segment(noise(40, 40, 3), Task.AUTOMATIC_SEGMENTATION, TaskOptions(automatic=AUTO))
    assert result.instances and result.masks().shape[1:] == (40, 40)
    assert all(i.stability_score is not None for i in result.instances)


def test_open_vocabulary_tasks(client: VisionModelClient) -> None:
    image = encode(noise(36, 44, 4))
    options = TaskOptions(labels=("cat", "dog"), automatic=AUTO, score_threshold=0.0)
    instances = client.segment(image, Task.INSTANCE_SEGMENTATION, options)
    detections = client.detect(image, Task.OBJECT_DETECTION, options)
    semantic = client.segment(image, Task.SEMANTIC_SEGMENTATION, TaskOptions(labels=("cat", "dog"), automatic=AUTO))
    for i in instances.instances:
        assert i.label is not None and i.label.name in ("cat", "dog") and i.mask is not None
    assert [i.box for i in detections.instances] == [i.box for i in instances.instances]
    assert all(i.mask is None for i in detections.instances)
    assert semantic.label_map is not None and semantic.label_map.class_names == ["background", "cat", "dog"]
    assert semantic.label_map.indices.shape == (36, 44)


def test_concurrent_requests_on_different_images(client: VisionModelClient) -> None:
    shapes = [(20, 30), (32, 24), (28, 28), (40, 22)]

    def ask(i: int) -> tuple[int, int, int]:
        h, w = shapes[i % 4]
        result = client.segment(noise(h, w, i), Task.PROMPTED_SEGMENTATION, TaskOptions(points=(Point(3, 3),)))
        mask = result.instances[0].mask
        assert mask is not None
        return i % 4, mask.rle.height, mask.rle.width

    with ThreadPoolExecutor(max_workers=8) as pool:
        for i, h, w in pool.map(ask, range(16)):
            assert (h, w) == shapes[i]


BAD: list[tuple[str, str, Any, str]] = [
    # (id, rpc, request, field)
    (
        "point outside",
        "Segment",
        vms.SegmentRequest(
            task=pb.TASK_PROMPTED_SEGMENTATION,
            options=pb.TaskOptions(prompts=pb.Prompts(points=[pb.PointPrompt(x=100, y=5, positive=True)])),
        ),
        "options.prompts.points[0]",
    ),
    (
        "box x2 < x1",
        "Segment",
        vms.SegmentRequest(
            task=pb.TASK_PROMPTED_SEGMENTATION,
            options=pb.TaskOptions(prompts=pb.Prompts(boxes=[pb.BoundingBox(x1=20, y1=1, x2=10, y2=9)])),
        ),
        "options.prompts.boxes[0]",
    ),
    (
        "prompt on automatic",
        "Segment",
        vms.SegmentRequest(
            task=pb.TASK_AUTOMATIC_SEGMENTATION,
            options=pb.TaskOptions(prompts=pb.Prompts(points=[pb.PointPrompt(x=1, y=1)])),
        ),
        "options.prompts",
    ),
    ("no labels", "Classify", vms.ClassifyRequest(), "options.labels"),
    (
        "too many labels",
        "Detect",
        vms.DetectRequest(options=pb.TaskOptions(labels=[f"l{i}" for i in range(257)])),
        "options.labels",
    ),
    ("empty label", "Classify", vms.ClassifyRequest(options=pb.TaskOptions(labels=["cat", ""])), "options.labels[1]"),
    (
        "long label",
        "Segment",
        vms.SegmentRequest(task=pb.TASK_SEMANTIC_SEGMENTATION, options=pb.TaskOptions(labels=["x" * 101])),
        "options.labels[0]",
    ),
    (
        "points per side",
        "Segment",
        vms.SegmentRequest(
            task=pb.TASK_AUTOMATIC_SEGMENTATION,
            options=pb.TaskOptions(automatic=pb.AutomaticSegmentationOptions(points_per_side=1000)),
        ),
        "options.automatic.points_per_side",
    ),
]


@pytest.mark.parametrize(("rpc", "request_", "field"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_invalid_argument_with_the_field(
    server: ServerThread, rpc: str, request_: Any, field: str
) -> None:
    request_.image.CopyFrom(pb.Image(encoded=encode(noise(16, 24, 5))))
    with grpc.insecure_channel(server.address) as channel:
        stub = vms_grpc.VisionModelServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            getattr(stub, rpc)(request_, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details)
    assert bad.field_violations[0].field == field


def test_unserved_task_is_unimplemented(server: ServerThread) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = vms_grpc.VisionModelServiceStub(channel)
        request = vms.DetectRequest(image=pb.Image(encoded=encode(noise(8, 8, 6))), task=pb.TASK_KEYPOINT_DETECTION)
        with pytest.raises(grpc.RpcError) as err:
            stub.Detect(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "ZERO_SHOT_CLASSIFICATION" in err.value.details()
