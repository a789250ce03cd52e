"""Both model services through Triton's own client (tritonclient.grpc), as teams that own
Open Inference Protocol tooling call them: every served task on the shapes models gives
the same results as VisionModelService; readiness, metadata and the bad-tensor codes.

The servers run in this process; tritonclient runs in a child process
(visioncompare/testing/oip_tritonclient.py says why), one child per batch of calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from shapes.scenes import CLASSES, EVAL_SEEDS, generate_scene
from visioncompare.maskrcnn.model import MaskRCNNModel
from visioncompare.maskrcnn.settings import MaskRCNNSettings
from visioncompare.runtime.client import Result, VisionModelClient
from visioncompare.runtime.masks import decode_rle
from visioncompare.runtime.types import AutomaticOptions, Box, Point, Task, TaskOptions
from visioncompare.samclip.model import SamClipModel
from visioncompare.samclip.settings import SamClipSettings
from visioncompare.testing.images import encode
from visioncompare.testing.oip_tritonclient import Call, Input, run_calls
from visioncompare.testing.serving import ServerThread
from visioncompare.testing.tiny_model import BrightSpotModel

SCENE = generate_scene(EVAL_SEEDS[0]).image
PNG = encode(SCENE)
SERVER = {"host": "127.0.0.1", "port": 0, "metrics_port": None, "log_json": False}

#: Every task each service serves with its shapes weights, with options that exercise the tensors.
REQUESTS: dict[str, dict[Task, TaskOptions]] = {
    "maskrcnn": {
        Task.OBJECT_DETECTION: TaskOptions(score_threshold=0.5),
        Task.INSTANCE_SEGMENTATION: TaskOptions(score_threshold=0.5, max_results=10),
        Task.KEYPOINT_DETECTION: TaskOptions(),
    },
    "samclip": {
        Task.OBJECT_DETECTION: TaskOptions(labels=CLASSES),
        Task.INSTANCE_SEGMENTATION: TaskOptions(labels=CLASSES, max_results=8),
        Task.ZERO_SHOT_CLASSIFICATION: TaskOptions(labels=CLASSES, max_results=3),
        Task.PROMPTED_SEGMENTATION: TaskOptions(
            points=(Point(60, 60), Point(10, 10, positive=False)), boxes=(Box(30, 30, 120, 120),)
        ),
        Task.AUTOMATIC_SEGMENTATION: TaskOptions(
            automatic=AutomaticOptions(points_per_side=4, pred_iou_thresh=0.5), max_results=6
        ),
        Task.SEMANTIC_SEGMENTATION: TaskOptions(labels=CLASSES),
    },
}


def model_name(service: str, task: Task) -> str:
    return f"{service}.{task.name.lower().replace('_', '-')}"


def bytes_tensor(name: str, items: list[bytes] | tuple[str, ...]) -> Input:
    data = [i.encode() if isinstance(i, str) else i for i in items]
    return Input(name, "BYTES", np.array(data, dtype=object))


def oip_call(service: str, task: Task, options: TaskOptions, image: bytes = PNG, **parameters: Any) -> Call:
    """The OIP request that asks what `options` ask through VisionModelService."""
    inputs = [bytes_tensor("IMAGE", [image])]
    if options.labels:
        inputs.append(bytes_tensor("LABELS", options.labels))
    if options.points:
        inputs.append(Input("POINTS", "FP32", np.array([[p.x, p.y] for p in options.points], np.float32)))
        inputs.append(Input("POINT_LABELS", "INT32", np.array([int(p.positive) for p in options.points], np.int32)))
    if options.boxes:
        inputs.append(Input("BOXES", "FP32", np.array([b.as_list() for b in options.boxes], np.float32)))
    for name in ("score_threshold", "max_results", "mask_threshold", "nms_iou_threshold"):
        if (value := getattr(options, name)) is not None:
            parameters[name] = value
    for name in ("points_per_side", "pred_iou_thresh", "stability_score_thresh", "min_mask_region_area"):
        if (value := getattr(options.automatic, name)) is not None:
            parameters[name] = value
    return Call("infer", model_name(service, task), inputs=inputs, parameters=parameters)


def assert_same(task: Task, expected: Result, got: dict[str, Any]) -> None:
    """An OIP answer (tritonclient's as_numpy arrays) holds what VisionModelService answered."""
    assert "error" not in got, got
    out = got["outputs"]
    if task == Task.ZERO_SHOT_CLASSIFICATION:
        assert [s.label.name.encode() for s in expected.scores] == out["LABELS"].tolist()
        assert np.array_equal(np.float32([s.label.score for s in expected.scores]), out["SCORES"])
        assert np.array_equal(np.float32([s.similarity for s in expected.scores]), out["SIMILARITIES"])
        return
    if task == Task.SEMANTIC_SEGMENTATION:
        assert expected.label_map is not None
        assert [n.encode() for n in expected.label_map.class_names] == out["CLASS_NAMES"].tolist()
        assert out["LABEL_MAP"].dtype == np.uint16 and np.array_equal(expected.label_map.indices, out["LABEL_MAP"])
        return
    instances = expected.instances
    n = len(instances)
    assert out["BOXES"].shape == (n, 4) and out["SCORES"].shape == (n,)
    assert np.array_equal(np.float32([i.box.as_list() for i in instances]).reshape(n, 4), out["BOXES"])
    assert np.array_equal(np.float32([i.score for i in instances]), out["SCORES"])
    if "LABELS" in out:
        assert [i.label.name.encode() if i.label else b"" for i in instances] == out["LABELS"].tolist()
    if "MASKS" in out:
        assert [i.mask.rle.counts if i.mask else b"" for i in instances] == out["MASKS"].tolist()
    if "PREDICTED_IOU" in out:
        assert np.array_equal(np.float32([i.predicted_iou for i in instances]), out["PREDICTED_IOU"])
    if "STABILITY_SCORE" in out:
        assert np.array_equal(np.float32([i.stability_score for i in instances]), out["STABILITY_SCORE"])
    if task == Task.KEYPOINT_DETECTION:
        names = [k.name.encode() for k in instances[0].keypoints] if instances else []
        assert out["KEYPOINT_NAMES"].tolist() == names
        points = np.float32([[[k.x, k.y, k.score] for k in i.keypoints] for i in instances])
        assert np.array_equal(points.reshape(n, len(names), 3), out["KEYPOINTS"])


def maskrcnn_server() -> ServerThread:
    settings = MaskRCNNSettings(**SERVER)  # the shipped shapes weights, keypoints on
    return ServerThread(MaskRCNNModel(settings), settings)


def samclip_server() -> ServerThread:
    settings = SamClipSettings(**SERVER, device="cpu")  # the shipped shapes weights
    return ServerThread(SamClipModel(settings), settings)


@pytest.fixture(scope="module", params=["maskrcnn", "samclip"])
def service(request: pytest.FixtureRequest) -> Iterator[tuple[str, ServerThread]]:
    with maskrcnn_server() if request.param == "maskrcnn" else samclip_server() as srv:
        yield request.param, srv


def test_every_served_task_answers_as_through_vision_model_service(service: tuple[str, ServerThread]) -> None:
    name, srv = service
    requests = REQUESTS[name]
    with VisionModelClient(srv.address, timeout=300) as client:
        served = {t.task for t in client.capabilities().tasks}
        assert served == set(requests), "a served task is missing from this test"
        expected = {task: client.run(PNG, task, options) for task, options in requests.items()}
    calls = [
        Call("live"),
        Call("ready"),
        Call("server_metadata"),
        *(Call("model_ready", model_name(name, t)) for t in requests),
        *(Call("model_metadata", model_name(name, t)) for t in requests),
        *(oip_call(name, t, o) for t, o in requests.items()),
        # masks as UINT8 [N, H, W] on request, the same pixels as the RLE
        oip_call(name, Task.INSTANCE_SEGMENTATION, requests[Task.INSTANCE_SEGMENTATION], mask_format="uint8"),
    ]
    results = iter(run_calls(srv.address, calls))
    assert next(results) == {"live": True} and next(results) == {"ready": True}
    assert next(results)["name"] == f"visioncompare-{name}"
    assert all(next(results) == {"ready": True} for _ in requests)
    for task in requests:
        metadata = next(results)
        assert metadata["name"] == model_name(name, task) and metadata["versions"] == ["1"]
        assert metadata["inputs"][0] == {"name": "IMAGE", "datatype": "BYTES", "shape": ["1"]}
    for task in requests:
        got = next(results)
        assert_same(task, expected[task], got)
        assert got["model_name"] == model_name(name, task) and got["id"] == "oip-test"
        assert got["parameters"]["batch_size"]["int64_param"] == "1"
    uint8 = next(results)
    assert uint8["datatypes"]["MASKS"] == "UINT8"
    segmented = expected[Task.INSTANCE_SEGMENTATION]
    masks = uint8["outputs"]["MASKS"]
    assert masks.shape == (len(segmented.instances), *SCENE.shape[:2])
    for mask, instance in zip(masks, segmented.instances, strict=True):
        assert instance.mask is not None and np.array_equal(mask.astype(bool), decode_rle(instance.mask.rle))
    assert segmented.instances, "the shapes scene should hold objects"


def test_metadata_lists_what_each_task_sends(service: tuple[str, ServerThread]) -> None:
    """ModelMetadata's outputs are exactly the tensors ModelInfer sends, with their datatypes."""
    name, srv = service
    requests = REQUESTS[name]
    calls = [Call("model_metadata", model_name(name, t)) for t in requests]
    calls += [oip_call(name, t, o) for t, o in requests.items()]
    results = run_calls(srv.address, calls)
    for metadata, answer in zip(results[: len(requests)], results[len(requests) :], strict=True):
        assert [(o["name"], o["datatype"]) for o in metadata["outputs"]] == list(answer["datatypes"].items())
        for output in metadata["outputs"]:
            shape = [int(d) for d in output["shape"]]
            got = answer["outputs"][output["name"]].shape
            assert len(got) == len(shape) and all(d in (-1, g) for d, g in zip(shape, got, strict=True))


# --- the tiny model: readiness, codes -------------------------------------------------------------


def test_readiness_metadata_and_bad_tensor_codes_through_tritonclient() -> None:
    image = bytes_tensor("IMAGE", [encode(np.full((16, 16, 3), 200, np.uint8))])
    model = "bright.instance-segmentation"
    with ServerThread(BrightSpotModel()) as srv:
        results = run_calls(
            srv.address,
            [
                Call("model_ready", "bright.semantic-segmentation"),
                Call("model_metadata", "nope"),
                Call("infer", model, inputs=[Input("IMAGE", "FP32", np.zeros(1, np.float32))]),
                Call("infer", model, inputs=[bytes_tensor("PICTURE", [b"x"])]),
                Call("infer", model, inputs=[bytes_tensor("LABELS", ["bright"])]),  # no IMAGE
                Call("infer", model, inputs=[bytes_tensor("IMAGE", [b"a", b"b"])]),  # shape [2]
                Call("infer", model, inputs=[Input("IMAGE", "BYTES", image.data, shape=[2])]),  # raw != shape
                Call("infer", model, inputs=[image], parameters={"score_threshold": "high"}),
                Call("infer", model, inputs=[image], outputs=["KEYPOINTS"]),
                Call("infer", model, inputs=[image], version="7"),
                Call("infer", model, inputs=[image]),
                Call("model_config", model),  # Triton's extensions, as perf_analyzer reads them
                Call("statistics", model),
            ],
        )
    stats, config = results.pop()["model_stats"], results.pop()["config"]
    assert config["name"] == model and config.get("max_batch_size", 0) == 0
    assert [(i["name"], i["data_type"], i["dims"], i.get("optional", False)) for i in config["input"]] == [
        ("IMAGE", "TYPE_STRING", ["1"], False),
        ("LABELS", "TYPE_STRING", ["-1"], True),
        ("PROMPT_TEMPLATES", "TYPE_STRING", ["-1"], True),
    ]
    assert [o["name"] for o in config["output"]] == ["BOXES", "SCORES", "LABELS", "MASKS"]
    [stat] = stats
    assert (stat["name"], stat["version"], stat["inference_count"]) == (model, "1", "1")
    assert stat["inference_stats"]["fail"]["count"] == "7" and stat["inference_stats"]["success"]["count"] == "1"
    codes = [r["error"]["code"] if "error" in r else "OK" for r in results]
    assert codes == [
        "StatusCode.NOT_FOUND",
        "StatusCode.NOT_FOUND",
        *["StatusCode.INVALID_ARGUMENT"] * 6,
        "StatusCode.INVALID_ARGUMENT",
        "StatusCode.NOT_FOUND",
        "OK",
    ], results
    messages = [r["error"]["message"] for r in results[2:9]]
    for message, tensor in zip(
        messages, ["IMAGE", "PICTURE", "IMAGE", "IMAGE", "IMAGE", "score_threshold", "KEYPOINTS"], strict=True
    ):
        assert tensor in message, message
    assert results[-1]["outputs"]["LABELS"].tolist() == [b"bright"]
