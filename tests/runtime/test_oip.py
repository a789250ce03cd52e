"""The Open Inference Protocol front-end (visioncompare/runtime/oip/) through real gRPC with the
tiny model and the project's own generated stubs: readiness, metadata, tensors in both
encodings, the bad-tensor statuses, and the runtime it shares with VisionModelService
(batching, token, metrics, health, reflection, limits). tests/runtime/test_oip_tritonclient.py
runs the same service through Triton's client."""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status

from visioncompare.oip import grpc_predict_v2_pb2 as oip
from visioncompare.oip import grpc_predict_v2_pb2_grpc as oip_grpc
from visioncompare.runtime.client import VisionModelClient, channel_credentials
from visioncompare.runtime.oip import join_bytes, split_bytes
from visioncompare.runtime.settings import ServerSettings
from visioncompare.runtime.types import Task
from visioncompare.testing.certs import make_certs
from visioncompare.testing.images import encode, png_bomb, scene
from visioncompare.testing.serving import ServerThread
from visioncompare.testing.tiny_model import BrightSpotModel

SEGMENT = "bright.instance-segmentation"
PROMPTED = "bright.prompted-segmentation"
TASKS = (Task.OBJECT_DETECTION, Task.INSTANCE_SEGMENTATION, Task.PROMPTED_SEGMENTATION)
IMAGE = scene(64, 48, (10, 8, 30, 20))

Tensor = oip.ModelInferRequest.InferInputTensor


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(BrightSpotModel(tasks=TASKS), max_image_pixels=1_000_000) as srv:
        yield srv


@pytest.fixture
def stub(server: ServerThread) -> Iterator[oip_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield oip_grpc.GRPCInferenceServiceStub(channel)


def image_tensor(data: bytes | None = None) -> tuple[Tensor, bytes]:
    return Tensor(name="IMAGE", datatype="BYTES", shape=[1]), join_bytes([data or encode(IMAGE)])


def infer_request(model: str, *tensors: tuple[Tensor, bytes], **parameters: Any) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=model, id="req-1")
    for tensor, raw in tensors:
        request.inputs.append(tensor)
        request.raw_input_contents.append(raw)
    for key, value in parameters.items():
        param = request.parameters[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            param.int64_param = value
        elif isinstance(value, float):
            param.double_param = value
        else:
            param.string_param = value
    return request


def outputs(response: oip.ModelInferResponse) -> dict[str, Any]:
    """The raw outputs decoded the way a client would (BYTES length-prefixed)."""
    out: dict[str, Any] = {}
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        count = int(np.prod(tensor.shape))
        if tensor.datatype == "BYTES":
            out[tensor.name] = split_bytes(raw, count, tensor.name)
        else:
            dtype = {"FP32": "<f4", "UINT8": "u1", "UINT16": "<u2", "INT32": "<i4"}[tensor.datatype]
            out[tensor.name] = np.frombuffer(raw, dtype=dtype).reshape(tuple(tensor.shape))
    return out


def error_of(call: Any) -> tuple[grpc.StatusCode, str, list[str]]:
    """Status code, message and BadRequest fields of a failing call."""
    with pytest.raises(grpc.RpcError) as err:
        call()
    status = rpc_status.from_call(err.value)
    fields = []
    for detail in status.details if status else []:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    return err.value.code(), err.value.details() or "", fields


# --- health, readiness and metadata ----------------------------------------------------------


def test_readiness_follows_the_model_load() -> None:
    gate = threading.Event()
    with ServerThread(BrightSpotModel(load_gate=gate), wait_ready=False) as srv:
        with grpc.insecure_channel(srv.address) as channel:
            stub = oip_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerLive(oip.ServerLiveRequest(), timeout=5).live
            assert not stub.ServerReady(oip.ServerReadyRequest(), timeout=5).ready
            assert not stub.ModelReady(oip.ModelReadyRequest(name=SEGMENT), timeout=5).ready
            code, message, _ = error_of(lambda: stub.ModelInfer(infer_request(SEGMENT, image_tensor()), timeout=5))
            assert code == grpc.StatusCode.UNAVAILABLE and "not serving yet" in message
            code, _, _ = error_of(lambda: stub.ModelMetadata(oip.ModelMetadataRequest(name=SEGMENT), timeout=5))
            assert code == grpc.StatusCode.UNAVAILABLE
            gate.set()
            srv.ready()
            assert stub.ServerReady(oip.ServerReadyRequest(), timeout=5).ready
            assert stub.ModelReady(oip.ModelReadyRequest(name=SEGMENT), timeout=5).ready


def test_server_and_model_metadata(stub: oip_grpc.GRPCInferenceServiceStub) -> None:
    meta = stub.ServerMetadata(oip.ServerMetadataRequest(), timeout=5)
    assert meta.name == "visioncompare-bright" and meta.version
    assert list(meta.extensions) == ["parameters", "model_configuration", "statistics"]
    model = stub.ModelMetadata(oip.ModelMetadataRequest(name=SEGMENT), timeout=5)
    assert (model.name, list(model.versions), model.platform) == (SEGMENT, ["1"], "visioncompare_torch")
    # the tiny model takes labels for instance segmentation: the table's text options
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [
        ("IMAGE", "BYTES", [1]),
        ("LABELS", "BYTES", [-1]),
        ("PROMPT_TEMPLATES", "BYTES", [-1]),
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [
        ("BOXES", "FP32", [-1, 4]),
        ("SCORES", "FP32", [-1]),
        ("LABELS", "BYTES", [-1]),
        ("MASKS", "BYTES", [-1]),
    ]
    prompted = stub.ModelMetadata(oip.ModelMetadataRequest(name=PROMPTED, version="1"), timeout=5)
    assert [t.name for t in prompted.inputs] == ["IMAGE", "POINTS", "POINT_LABELS", "BOXES"]
    assert [t.name for t in prompted.outputs] == ["BOXES", "SCORES", "MASKS", "PREDICTED_IOU"]
    for task in TASKS:
        name = f"bright.{task.name.lower().replace('_', '-')}"
        assert stub.ModelReady(oip.ModelReadyRequest(name=name), timeout=5).ready


def test_model_config_for_perf_analyzer(stub: oip_grpc.GRPCInferenceServiceStub) -> None:
    """Triton's ModelConfig extension: no batch dimension in requests, ModelMetadata's tensors."""
    from visioncompare.oip import model_config_pb2 as config_pb

    config = stub.ModelConfig(oip.ModelConfigRequest(name=PROMPTED), timeout=5).config
    assert (config.name, config.max_batch_size, config.platform) == (PROMPTED, 0, "visioncompare_torch")
    assert [(i.name, config_pb.DataType.Name(i.data_type), list(i.dims), i.optional) for i in config.input] == [
        ("IMAGE", "TYPE_STRING", [1], False),
        ("POINTS", "TYPE_FP32", [-1, 2], True),
        ("POINT_LABELS", "TYPE_INT32", [-1], True),
        ("BOXES", "TYPE_FP32", [-1, 4], True),
    ]
    assert [(o.name, config_pb.DataType.Name(o.data_type)) for o in config.output] == [
        ("BOXES", "TYPE_FP32"),
        ("SCORES", "TYPE_FP32"),
        ("MASKS", "TYPE_STRING"),
        ("PREDICTED_IOU", "TYPE_FP32"),
    ]


def test_model_statistics_count_the_calls() -> None:
    with ServerThread(BrightSpotModel(tasks=TASKS)) as srv, grpc.insecure_channel(srv.address) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(2):
            stub.ModelInfer(infer_request(SEGMENT, image_tensor()), timeout=5)
        error_of(lambda: stub.ModelInfer(infer_request(SEGMENT), timeout=5))  # no IMAGE
        [stats] = stub.ModelStatistics(oip.ModelStatisticsRequest(name=SEGMENT), timeout=5).model_stats
        everything = stub.ModelStatistics(oip.ModelStatisticsRequest(), timeout=5).model_stats
    assert (stats.name, stats.version, stats.inference_count, stats.execution_count) == (SEGMENT, "1", 2, 2)
    s = stats.inference_stats
    assert (s.success.count, s.fail.count, s.queue.count, s.compute_infer.count) == (2, 1, 2, 2)
    assert s.success.ns >= s.queue.ns + s.compute_infer.ns > 0 and s.fail.ns > 0
    assert stats.last_inference > 1_700_000_000_000
    assert [m.name for m in everything] == [f"bright.{t.name.lower().replace('_', '-')}" for t in TASKS]
    assert [m.inference_count for m in everything] == [0, 2, 0]


@pytest.mark.parametrize(
    ("name", "version", "says"),
    [
        ("bright.keypoint-detection", "", "no model 'bright.keypoint-detection'"),  # a task it does not serve
        ("maskrcnn.object-detection", "", "its models are: bright.object-detection"),
        ("bright", "", "no model 'bright'"),
        (SEGMENT, "2", "its only version is '1'"),
    ],
)
def test_unknown_models_and_versions_are_not_found(
    stub: oip_grpc.GRPCInferenceServiceStub, name: str, version: str, says: str
) -> None:
    for call in (
        lambda: stub.ModelReady(oip.ModelReadyRequest(name=name, version=version), timeout=5),
        lambda: stub.ModelMetadata(oip.ModelMetadataRequest(name=name, version=version), timeout=5),
        lambda: stub.ModelInfer(
            oip.ModelInferRequest(model_name=name, model_version=version, inputs=[image_tensor()[0]]), timeout=5
        ),
    ):
        code, message, _ = error_of(call)
        assert code == grpc.StatusCode.NOT_FOUND and says in message, message


def test_reflection_and_health_list_the_protocol(server: ServerThread) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(server.address) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"), timeout=5
        )
    assert {"inference.GRPCInferenceService", "visioncompare.v1.VisionModelService"} <= services
    assert health.status == health_pb2.HealthCheckResponse.SERVING


# --- inference ----------------------------------------------------------------------------------


def test_infer_answers_like_segment(server: ServerThread, stub: oip_grpc.GRPCInferenceServiceStub) -> None:
    response = stub.ModelInfer(infer_request(SEGMENT, image_tensor(), score_threshold=0.5), timeout=10)
    with VisionModelClient(server.address) as client:
        expected = client.segment(encode(IMAGE), Task.INSTANCE_SEGMENTATION)
    assert (response.model_name, response.model_version, response.id) == (SEGMENT, "1", "req-1")
    out = outputs(response)
    [instance] = expected.instances
    assert instance.mask is not None and instance.label is not None
    assert out["BOXES"].tolist() == [instance.box.as_list()] and out["SCORES"].tolist() == [instance.score]
    assert out["LABELS"] == [b"bright"] and out["MASKS"] == [instance.mask.rle.counts]
    masks = {t.name: t for t in response.outputs}["MASKS"]
    assert masks.parameters["format"].string_param == "coco_rle"
    assert (masks.parameters["height"].int64_param, masks.parameters["width"].int64_param) == (48, 64)
    params = response.parameters
    assert params["image_width"].int64_param == 64 and params["weights"].string_param == "random"
    assert params["engine"].string_param == "torch"
    assert "random weights" in params["warnings"].string_param and params["request_id"].string_param


def test_typed_contents_masks_as_uint8_and_requested_outputs(stub: oip_grpc.GRPCInferenceServiceStub) -> None:
    request = oip.ModelInferRequest(model_name=SEGMENT)
    for name, value in (("IMAGE", encode(IMAGE)), ("LABELS", b"bright")):
        contents = oip.InferTensorContents(bytes_contents=[value])
        request.inputs.append(Tensor(name=name, datatype="BYTES", shape=[1], contents=contents))
    request.parameters["mask_format"].string_param = "uint8"
    request.outputs.add(name="MASKS")
    request.outputs.add(name="SCORES")
    response = stub.ModelInfer(request, timeout=10)
    assert [(t.name, t.datatype, list(t.shape)) for t in response.outputs] == [
        ("MASKS", "UINT8", [1, 48, 64]),
        ("SCORES", "FP32", [1]),
    ]
    mask = outputs(response)["MASKS"][0]
    assert mask.sum() == 20 * 12 and mask[8:20, 10:30].all()


def test_prompts_as_tensors(stub: oip_grpc.GRPCInferenceServiceStub) -> None:
    points = np.array([[40, 30], [5, 5]], "<f4")
    request = infer_request(
        PROMPTED,
        image_tensor(),
        (Tensor(name="POINTS", datatype="FP32", shape=[2, 2]), points.tobytes()),
        (Tensor(name="POINT_LABELS", datatype="INT32", shape=[2]), np.array([1, 0], "<i4").tobytes()),
    )
    out = outputs(stub.ModelInfer(request, timeout=10))
    assert out["BOXES"].tolist() == [[36, 26, 45, 35]]  # the tiny model's 9x9 square at the first point
    assert out["PREDICTED_IOU"].tolist() == pytest.approx([0.9])


def test_oip_and_project_requests_share_batches() -> None:
    model = BrightSpotModel(delay_s=0.3)
    with (
        ServerThread(model, max_batch_size=8, max_queue_delay_ms=200) as srv,
        grpc.insecure_channel(srv.address) as channel,
        VisionModelClient(srv.address) as client,
    ):
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        with ThreadPoolExecutor(4) as pool:
            calls = [
                pool.submit(stub.ModelInfer, infer_request("bright.object-detection", image_tensor()), timeout=10),
                pool.submit(stub.ModelInfer, infer_request("bright.object-detection", image_tensor()), timeout=10),
                pool.submit(client.detect, encode(IMAGE)),
                pool.submit(client.detect, encode(IMAGE)),
            ]
            results = [c.result() for c in calls]
        batch_sizes = [r.parameters["batch_size"].int64_param for r in results[:2]]
        batch_sizes += [r.batch_size for r in results[2:]]
        samples = {
            (s.labels["rpc"], s.labels["task"], s.labels["code"]): s.value
            for metric in srv.server.metrics.registry.collect()  # type: ignore[union-attr]
            if metric.name == "visioncompare_requests"
            for s in metric.samples
            if s.name.endswith("_total")
        }
    assert model.batches == [4] and batch_sizes == [4, 4, 4, 4]
    assert samples[("ModelInfer", "OBJECT_DETECTION", "OK")] == 2 and samples[("Detect", "OBJECT_DETECTION", "OK")] == 2


def test_the_bearer_token_guards_the_protocol_too() -> None:
    with ServerThread(BrightSpotModel(), auth_token="s3cret") as srv, grpc.insecure_channel(srv.address) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            code, _, _ = error_of(lambda m=metadata: stub.ServerReady(oip.ServerReadyRequest(), timeout=5, metadata=m))
            assert code == grpc.StatusCode.UNAUTHENTICATED
        good = (("authorization", "Bearer s3cret"),)
        assert stub.ServerReady(oip.ServerReadyRequest(), timeout=5, metadata=good).ready
        request = infer_request("bright.object-detection", image_tensor())
        assert stub.ModelInfer(request, timeout=5, metadata=good).outputs


def test_tls_serves_the_protocol_on_the_same_port(tmp_path_factory: pytest.TempPathFactory) -> None:
    certs = make_certs(tmp_path_factory.mktemp("certs"))
    settings = ServerSettings(
        host="127.0.0.1", port=0, metrics_port=None, tls_cert_file=certs.server_cert, tls_key_file=certs.server_key
    )
    with ServerThread(BrightSpotModel(), settings) as srv:
        creds = channel_credentials(certs.ca.read_bytes())
        with grpc.secure_channel(f"localhost:{srv.port}", creds) as channel:
            stub = oip_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ModelInfer(infer_request("bright.object-detection", image_tensor()), timeout=10).outputs
        with grpc.insecure_channel(srv.address) as channel:
            plaintext = oip_grpc.GRPCInferenceServiceStub(channel)
            code, _, _ = error_of(lambda: plaintext.ServerLive(oip.ServerLiveRequest(), timeout=3))
            assert code == grpc.StatusCode.UNAVAILABLE


# --- bad tensors and parameters ------------------------------------------------------------------

POINTS_2 = np.zeros((2, 2), "<f4").tobytes()


@pytest.mark.parametrize(
    ("model", "tensors", "parameters", "field", "says"),
    [
        (SEGMENT, [], {}, "inputs.IMAGE", "input IMAGE: is missing"),
        (
            SEGMENT,
            [(Tensor(name="PICTURE", datatype="BYTES", shape=[1]), join_bytes([b"x"]))],
            {},
            "inputs.PICTURE",
            "input 'PICTURE' is not an input of model bright.instance-segmentation",
        ),
        (
            SEGMENT,
            [(Tensor(name="IMAGE", datatype="FP32", shape=[1]), b"\0" * 4)],
            {},
            "inputs.IMAGE",
            "input IMAGE: datatype FP32 is not BYTES",
        ),
        (
            SEGMENT,
            [(Tensor(name="IMAGE", datatype="BYTES", shape=[2]), join_bytes([b"a", b"b"]))],
            {},
            "inputs.IMAGE",
            "shape [2] does not fit [1]",
        ),
        (
            SEGMENT,
            [(Tensor(name="IMAGE", datatype="BYTES", shape=[1]), join_bytes([b"a", b"b"]))],
            {},
            "inputs.IMAGE",
            "raw contents hold 2 BYTES elements; its shape says 1",
        ),
        (
            SEGMENT,
            [(Tensor(name="IMAGE", datatype="BYTES", shape=[1]), struct.pack("<I", 99) + b"abc")],
            {},
            "inputs.IMAGE",
            "claims 99 bytes but only 3 remain",
        ),
        (
            SEGMENT,
            [(Tensor(name="IMAGE", datatype="BYTES", shape=[1]), b"\x01\x00")],
            {},
            "inputs.IMAGE",
            "4-byte length prefix",
        ),
        (
            SEGMENT,
            [(Tensor(name="IMAGE", datatype="BYTES", shape=[1]), join_bytes([b"not an image"]))],
            {},
            "inputs.IMAGE",
            "input IMAGE",
        ),
        (SEGMENT, [image_tensor(png_bomb())], {}, "inputs.IMAGE", "input IMAGE"),
        (
            PROMPTED,
            [image_tensor(), (Tensor(name="POINTS", datatype="FP32", shape=[3, 2]), POINTS_2)],
            {},
            "inputs.POINTS",
            "raw contents have 16 bytes; shape [3, 2] of FP32 needs 24",
        ),
        (
            PROMPTED,
            [image_tensor(), (Tensor(name="POINTS", datatype="FP32", shape=[4]), POINTS_2)],
            {},
            "inputs.POINTS",
            "shape [4] does not fit [-1, 2]",
        ),
        (
            PROMPTED,
            [image_tensor(), (Tensor(name="POINTS", datatype="FP64", shape=[1, 2]), b"\0" * 16)],
            {},
            "inputs.POINTS",
            "datatype FP64 is not FP32",
        ),
        (
            PROMPTED,
            [
                image_tensor(),
                (Tensor(name="POINTS", datatype="FP32", shape=[2, 2]), POINTS_2),
                (Tensor(name="POINT_LABELS", datatype="INT32", shape=[1]), b"\1\0\0\0"),
            ],
            {},
            "inputs.POINT_LABELS",
            "has 1 labels for 2 POINTS",
        ),
        (
            PROMPTED,
            [
                image_tensor(),
                (Tensor(name="POINTS", datatype="FP32", shape=[2, 2]), POINTS_2),
                (Tensor(name="POINT_LABELS", datatype="INT32", shape=[2]), np.array([1, 7], "<i4").tobytes()),
            ],
            {},
            "inputs.POINT_LABELS",
            "1 (foreground) or 0 (background)",
        ),
        (
            PROMPTED,
            [image_tensor(), (Tensor(name="POINT_LABELS", datatype="INT32", shape=[1]), b"\1\0\0\0")],
            {},
            "inputs.POINT_LABELS",
            "given without POINTS",
        ),
        (SEGMENT, [image_tensor(), image_tensor()], {}, "inputs.IMAGE", "is given twice"),
        (SEGMENT, [image_tensor()], {"nope": 1}, "parameters.nope", "parameter 'nope' is unknown"),
        (
            SEGMENT,
            [image_tensor()],
            {"multimask_output": True},
            "parameters.multimask_output",
            "does not apply to model bright.instance-segmentation",
        ),
        (
            SEGMENT,
            [image_tensor()],
            {"score_threshold": "high"},
            "parameters.score_threshold",
            "must be a float (double_param), not string_param",
        ),
        (SEGMENT, [image_tensor()], {"mask_format": "png"}, "parameters.mask_format", "one of rle, uint8"),
        (
            "bright.object-detection",
            [image_tensor()],
            {"mask_format": "uint8"},
            "parameters.mask_format",
            "does not apply",
        ),
    ],
)
def test_bad_tensors_and_parameters_are_invalid_argument_naming_them(
    stub: oip_grpc.GRPCInferenceServiceStub,
    model: str,
    tensors: list[tuple[Tensor, bytes]],
    parameters: dict[str, Any],
    field: str,
    says: str,
) -> None:
    code, message, fields = error_of(lambda: stub.ModelInfer(infer_request(model, *tensors, **parameters), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, message
    assert says in message and fields == [field], (message, fields)


def test_raw_and_typed_contents_must_not_be_mixed(stub: oip_grpc.GRPCInferenceServiceStub) -> None:
    tensor, raw = image_tensor()
    tensor.contents.bytes_contents.append(encode(IMAGE))
    code, message, _ = error_of(lambda: stub.ModelInfer(infer_request(SEGMENT, (tensor, raw)), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "both contents and raw_input_contents" in message
    request = infer_request(SEGMENT, image_tensor())
    request.inputs.append(Tensor(name="LABELS", datatype="BYTES", shape=[1]))  # 2 inputs, 1 raw
    code, message, fields = error_of(lambda: stub.ModelInfer(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["raw_input_contents"], message
    typed = oip.ModelInferRequest(model_name=SEGMENT)
    typed.inputs.append(
        Tensor(name="IMAGE", datatype="BYTES", shape=[1], contents=oip.InferTensorContents(bytes_contents=[]))
    )
    code, message, _ = error_of(lambda: stub.ModelInfer(typed, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "contents hold 0 elements" in message


def test_unknown_outputs_and_model_checks_keep_their_codes(stub: oip_grpc.GRPCInferenceServiceStub) -> None:
    request = infer_request(SEGMENT, image_tensor())
    request.outputs.add(name="KEYPOINTS")
    code, message, fields = error_of(lambda: stub.ModelInfer(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["outputs[0].name"], message
    # the model's own validation, as through VisionModelService
    labels = (Tensor(name="LABELS", datatype="BYTES", shape=[1]), join_bytes([b"cat"]))
    code, message, fields = error_of(
        lambda: stub.ModelInfer(infer_request(SEGMENT, image_tensor(), labels), timeout=10)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown label 'cat'" in message
