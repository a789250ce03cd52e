"""Mask R-CNN through a real gRPC server on port 0 (CPU, random weights, small inputs).

Over gRPC, results must equal the model's in-process answers exactly: boxes and scores
are float32 in both, masks the same RLE bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from visioncompare.maskrcnn.categories import COCO_KEYPOINT_NAMES
from visioncompare.maskrcnn.model import MaskRCNNModel
from visioncompare.maskrcnn.settings import MaskRCNNSettings
from visioncompare.runtime.client import Result, VisionModelClient
from visioncompare.runtime.masks import decode_rle
from visioncompare.runtime.types import InferenceRequest, Instance, Prediction, Task, TaskOptions
from visioncompare.testing.images import encode
from visioncompare.testing.serving import ServerThread
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import vision_model_service_pb2 as vms
from visioncompare.v1 import vision_model_service_pb2_grpc as vms_grpc


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    settings = MaskRCNNSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        log_json=False,
        weights="random",
        keypoints_enabled=True,
        keypoint_weights="random",
        min_size=128,
        max_size=160,
        max_detections=5,
        score_threshold=0.0,
        max_batch_size=4,
        max_queue_delay_ms=100,
    )
    model = MaskRCNNModel(settings, detector_kwargs={"rpn_post_nms_top_n_test": 100})
    with ServerThread(model, settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def served(server: ServerThread) -> Iterator[tuple[MaskRCNNModel, VisionModelClient]]:
    assert isinstance(server.model, MaskRCNNModel)
    with VisionModelClient(server.address, timeout=120) as client:
        yield server.model, client


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def in_process(
    model: MaskRCNNModel, task: Task, image: np.ndarray, options: TaskOptions | None = None
) -> list[Instance]:
    [answer] = model.predict([InferenceRequest(task, image, options or TaskOptions())])
    assert isinstance(answer, Prediction), answer
    return answer.instances


def call(client: VisionModelClient, task: Task, image: Any, options: TaskOptions | None = None) -> Result:
    if task == Task.INSTANCE_SEGMENTATION:
        return client.segment(image, task, options)
    return client.detect(image, task, options)


IMAGE = noise(90, 140, seed=1)  # non-square


@pytest.mark.parametrize("task", [Task.OBJECT_DETECTION, Task.INSTANCE_SEGMENTATION, Task.KEYPOINT_DETECTION])
def test_each_task_matches_in_process(served: tuple[MaskRCNNModel, VisionModelClient], task: Task) -> None:
    model, client = served
    result = call(client, task, IMAGE)
    assert result.instances == in_process(model, task, IMAGE)
    assert len(result.instances) == 5
    assert (result.model_name, result.weights, result.pretrained) == ("maskrcnn", "random", False)
    assert (result.image_width, result.image_height) == (140, 90)
    assert "random weights" in result.warnings or "random keypoint weights" in result.warnings
    assert result.timing.inference_ms > 0 and result.timing.postprocess_ms > 0
    for instance in result.instances:
        assert instance.label is not None and instance.label.name != "N/A"
        assert 0 <= instance.box.x1 <= instance.box.x2 <= 140 and 0 <= instance.box.y1 <= instance.box.y2 <= 90
        assert (instance.mask is not None) == (task == Task.INSTANCE_SEGMENTATION)
        assert bool(instance.keypoints) == (task == Task.KEYPOINT_DETECTION)
    if task == Task.INSTANCE_SEGMENTATION:
        assert result.masks().shape == (5, 90, 140)
    if task == Task.KEYPOINT_DETECTION:
        assert {i.label.name for i in result.instances if i.label} == {"person"}
        assert all([k.name for k in i.keypoints] == list(COCO_KEYPOINT_NAMES) for i in result.instances)


@pytest.mark.parametrize(
    ("task", "options"),
    [
        (Task.OBJECT_DETECTION, TaskOptions(score_threshold=0.6)),
        (Task.OBJECT_DETECTION, TaskOptions(max_results=2)),
        (Task.OBJECT_DETECTION, TaskOptions(labels=("cat", "dog"))),
        (Task.INSTANCE_SEGMENTATION, TaskOptions(mask_threshold=0.9, max_results=2)),
        (Task.OBJECT_DETECTION, TaskOptions(min_size=64, max_size=96)),
        (Task.OBJECT_DETECTION, TaskOptions(nms_iou_threshold=0.95)),
        (Task.KEYPOINT_DETECTION, TaskOptions(score_threshold=0.05, labels=("person",), max_results=1)),
    ],
    ids=["score_threshold", "max_results", "labels", "mask_threshold", "resize", "nms", "keypoint-options"],
)
def test_each_option_matches_in_process(
    served: tuple[MaskRCNNModel, VisionModelClient], task: Task, options: TaskOptions
) -> None:
    model, client = served
    result = call(client, task, IMAGE, options)
    assert result.instances == in_process(model, task, IMAGE, options)
    instances = result.instances
    if options.score_threshold is not None:
        assert all(i.score >= options.score_threshold for i in instances)
    if options.max_results is not None:
        assert len(instances) == options.max_results
    if options.labels:
        assert instances and {i.label.name for i in instances if i.label} <= set(options.labels)
    if options.mask_threshold is not None or options.min_size is not None or options.nms_iou_threshold is not None:
        default = in_process(model, task, IMAGE)
    if options.mask_threshold is not None:
        assert [i.box for i in instances] == [i.box for i in default[:2]]
        assert sum(i.mask.area for i in instances if i.mask) < sum(i.mask.area for i in default[:2] if i.mask)
    if options.min_size is not None or options.nms_iou_threshold is not None:
        assert instances != default


def rich_error(err: grpc.RpcError) -> tuple[str, list[str]]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    fields = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    return status.message, fields


def test_unknown_class_filter_is_invalid_argument_listing_the_valid_names(
    served: tuple[MaskRCNNModel, VisionModelClient],
) -> None:
    _, client = served
    with pytest.raises(grpc.RpcError) as err:
        client.detect(IMAGE, options=TaskOptions(labels=("person", "unicorn")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    message, fields = rich_error(err.value)
    assert "'unicorn'" in message and "valid labels: person, bicycle, car" in message and "toothbrush" in message
    assert "N/A" not in message and fields == ["options.labels"]


def test_options_the_task_does_not_use_are_invalid_argument(served: tuple[MaskRCNNModel, VisionModelClient]) -> None:
    _, client = served
    with pytest.raises(grpc.RpcError) as err:
        client.detect(IMAGE, options=TaskOptions(mask_threshold=0.5, prompt_templates=("a {}",)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    message, fields = rich_error(err.value)
    assert "options.prompt_templates, options.mask_threshold" in message
    assert fields == ["options.prompt_templates", "options.mask_threshold"]


def test_exif_rotated_image_gives_the_same_result_as_upright_pixels(
    served: tuple[MaskRCNNModel, VisionModelClient],
) -> None:
    _, client = served
    upright = call(client, Task.INSTANCE_SEGMENTATION, IMAGE)
    # Stored rotated 90 degrees counter-clockwise; EXIF orientation 6 says "rotate 90 clockwise to view".
    rotated = encode(np.ascontiguousarray(np.rot90(IMAGE, k=1)), "PNG", exif_orientation=6)
    result = call(client, Task.INSTANCE_SEGMENTATION, rotated)
    assert (result.image_width, result.image_height) == (140, 90)
    assert result.instances == upright.instances


def test_image_smaller_than_min_size(served: tuple[MaskRCNNModel, VisionModelClient]) -> None:
    model, client = served
    tiny = noise(30, 40, seed=4)  # upscaled x4 to 120 x 160 inside the model
    result = call(client, Task.INSTANCE_SEGMENTATION, encode(tiny))
    assert result.instances == in_process(model, Task.INSTANCE_SEGMENTATION, tiny)
    assert result.instances and result.masks().shape[1:] == (30, 40)
    assert all(0 <= i.box.x2 <= 40 and 0 <= i.box.y2 <= 30 for i in result.instances)


def test_concurrent_requests_are_batched_with_the_results_of_unbatched_ones(
    served: tuple[MaskRCNNModel, VisionModelClient],
) -> None:
    _, client = served
    images = [noise(90, 140, seed=10 + i) for i in range(4)]
    alone = [call(client, Task.INSTANCE_SEGMENTATION, image) for image in images]
    assert all(r.batch_size == 1 for r in alone)
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda image: call(client, Task.INSTANCE_SEGMENTATION, image), images))
    assert max(r.batch_size for r in together) > 1
    for a, b in zip(alone, together, strict=True):
        assert [i.label.id for i in a.instances if i.label] == [i.label.id for i in b.instances if i.label]
        boxes_a = np.array([i.box.as_list() + [i.score] for i in a.instances])
        boxes_b = np.array([i.box.as_list() + [i.score] for i in b.instances])
        assert np.allclose(boxes_a, boxes_b, atol=1e-3)  # batched convolutions differ in float noise only
        for x, y in zip(a.instances, b.instances, strict=True):
            assert x.mask is not None and y.mask is not None
            assert (decode_rle(x.mask.rle) != decode_rle(y.mask.rle)).sum() <= 2


def test_classify_is_unimplemented_naming_the_served_tasks(served: tuple[MaskRCNNModel, VisionModelClient]) -> None:
    _, client = served
    with pytest.raises(grpc.RpcError) as err:
        client.classify(IMAGE, ["cat"])
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "OBJECT_DETECTION, INSTANCE_SEGMENTATION, KEYPOINT_DETECTION" in err.value.details()


def test_open_vocabulary_segmentation_tasks_are_unimplemented(
    served: tuple[MaskRCNNModel, VisionModelClient],
) -> None:
    _, client = served
    for task in (Task.PROMPTED_SEGMENTATION, Task.SEMANTIC_SEGMENTATION):
        with pytest.raises(grpc.RpcError) as err:
            client.segment(IMAGE, task)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_capabilities_over_grpc(served: tuple[MaskRCNNModel, VisionModelClient]) -> None:
    model, client = served
    caps = client.capabilities()
    assert caps == model.capabilities()
    assert [t.task for t in caps.tasks] == [Task.OBJECT_DETECTION, Task.INSTANCE_SEGMENTATION, Task.KEYPOINT_DETECTION]
    assert len(caps.tasks[0].label_names) == 80 and caps.card.parameter_count == 44_401_393 + 59_137_258
    assert caps.runtime.pretrained is False and "random weights" in caps.runtime.warnings


def test_wrong_rpc_for_the_task(server: ServerThread) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = vms_grpc.VisionModelServiceStub(channel)
        request = vms.DetectRequest(image=pb.Image(encoded=encode(IMAGE)), task=pb.TASK_INSTANCE_SEGMENTATION)
        with pytest.raises(grpc.RpcError) as err:
            stub.Detect(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "call Segment" in err.value.details()
