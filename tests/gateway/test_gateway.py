"""The gateway in front of model services running as separate processes (tiny models)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from visioncompare.gateway.comparison import image_error
from visioncompare.testing.gateway_support import GatewayThread
from visioncompare.testing.images import encode, scene
from visioncompare.testing.odd_images import assert_clean_message, bad_files, odd_but_valid_files
from visioncompare.testing.processes import ServiceProcess, tiny_service
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import comparison_service_pb2 as cs

IMAGE = pb.Image(encoded=encode(scene(64, 48, (10, 8, 30, 20))))


@pytest.fixture(scope="module")
def services() -> Iterator[dict[str, ServiceProcess]]:
    procs = {
        "alpha": tiny_service("alpha"),
        "beta": tiny_service("beta", tasks="OBJECT_DETECTION"),  # no segmentation
        "slow": tiny_service("slow", delay=3.0),
    }
    for p in procs.values():
        p.start()
    yield procs
    for p in procs.values():
        p.stop()


@pytest.fixture
def gateway(services: dict[str, ServiceProcess]) -> Iterator[GatewayThread]:
    targets = {name: f"dns:///{p.address}" for name, p in services.items()}
    with GatewayThread(targets) as gw:
        gw.wait_serving()
        yield gw


def compare(gw: GatewayThread, task: int, timeout: float = 20, **fields: object) -> cs.CompareResponse:
    request = cs.CompareRequest(image=IMAGE, task=task, **fields)  # type: ignore[arg-type]
    return gw.stub.Compare(request, timeout=timeout)


def test_fans_out_to_every_model_serving_the_task(gateway: GatewayThread) -> None:
    response = compare(gateway, pb.TASK_OBJECT_DETECTION, model_names=["alpha", "beta"])
    assert [r.model_name for r in response.results] == ["alpha", "beta"]
    for r in response.results:
        assert r.status.code == 0 and r.latency_ms > 0
        box = r.detect.instances[0].box
        assert (box.x1, box.y1, box.x2, box.y2) == (10, 8, 30, 20)
        assert r.detect.info.model_name == r.model_name and r.endpoint.startswith("dns:///127.0.0.1:")
    [pair] = response.agreements
    assert (pair.model_a, pair.model_b) == ("alpha", "beta")
    assert pair.instances.mean_iou == pytest.approx(1.0) and pair.instances.label_agreement_rate == 1.0


def test_task_served_by_one_model_goes_only_to_it(gateway: GatewayThread) -> None:
    response = compare(gateway, pb.TASK_INSTANCE_SEGMENTATION, model_names=["alpha", "beta"])
    assert [r.model_name for r in response.results] == ["alpha"]
    assert response.results[0].segment.instances[0].mask.area_pixels == 20 * 12
    assert not response.agreements


def test_task_no_model_serves_is_failed_precondition(gateway: GatewayThread) -> None:
    with pytest.raises(grpc.RpcError) as err:
        compare(gateway, pb.TASK_ZERO_SHOT_CLASSIFICATION)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "TASK_OBJECT_DETECTION" in err.value.details() and "TASK_INSTANCE_SEGMENTATION" in err.value.details()


def test_bad_requests_fail_as_a_whole(gateway: GatewayThread) -> None:
    with pytest.raises(grpc.RpcError) as err:
        compare(gateway, pb.TASK_UNSPECIFIED)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        compare(gateway, pb.TASK_OBJECT_DETECTION, model_names=["nope"])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "alpha" in err.value.details()


def model_calls(gw: GatewayThread) -> float:
    assert gw.server is not None
    registry = gw.server.metrics.registry
    return sum(
        sample.value
        for metric in registry.collect()
        if metric.name == "visioncompare_gateway_model_calls"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def rejection(err: pytest.ExceptionInfo[grpc.RpcError]) -> tuple[str, list[str]]:
    """ErrorInfo reason and BadRequest fields of a failed call."""
    status = rpc_status.from_call(err.value)  # type: ignore[arg-type]
    assert status is not None
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(bad)
    return info.reason, [v.field for v in bad.field_violations]


@pytest.mark.parametrize(
    ("name", "reason", "needle"),
    [
        ("png bomb header", "INPUT_TOO_LARGE", "3600000000 pixels, over the limit of 40000000"),
        ("text file", "INVALID_ARGUMENT", "not a readable JPEG, PNG, WebP, BMP, GIF or TIFF image"),
        ("png 0x0", "INVALID_ARGUMENT", "not a readable"),
        ("empty", "INVALID_ARGUMENT", "image.encoded is empty"),
    ],
)
def test_image_no_model_can_read_fails_whole_before_fan_out(
    gateway: GatewayThread, name: str, reason: str, needle: str
) -> None:
    before = model_calls(gateway)
    with pytest.raises(grpc.RpcError) as err:
        gateway.stub.Compare(
            cs.CompareRequest(image=pb.Image(encoded=bad_files()[name]), task=pb.TASK_OBJECT_DETECTION), timeout=20
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in err.value.details()
    assert_clean_message(err.value.details())
    assert rejection(err) == (reason, ["image.encoded"])
    assert model_calls(gateway) == before  # no model was called


def test_gateway_pixel_limit_is_its_own_setting(services: dict[str, ServiceProcess]) -> None:
    with GatewayThread({"alpha": f"dns:///{services['alpha'].address}"}, max_image_pixels=64 * 48 - 1) as gw:
        gw.wait_serving()
        with pytest.raises(grpc.RpcError) as err:
            compare(gw, pb.TASK_OBJECT_DETECTION)  # 64 x 48: fine for the model, over the gateway's limit
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "64x48 = 3072 pixels, over the limit of 3071" in err.value.details()
        assert rejection(err) == ("INPUT_TOO_LARGE", ["image.encoded"])
        assert model_calls(gw) == 0


def test_truncated_image_every_model_rejects_fails_whole(gateway: GatewayThread) -> None:
    truncated = bad_files()["truncated jpeg"]  # its header is fine: only decoding finds the damage
    with pytest.raises(grpc.RpcError) as err:
        gateway.stub.Compare(
            cs.CompareRequest(
                image=pb.Image(encoded=truncated), task=pb.TASK_OBJECT_DETECTION, model_names=["alpha", "beta"]
            ),
            timeout=20,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "corrupt or truncated" in err.value.details()
    assert "every model rejected the image: alpha, beta" in err.value.details()
    assert rejection(err) == ("INVALID_ARGUMENT", ["image.encoded"])


def test_image_error_needs_every_model_to_reject_the_image() -> None:
    def result(name: str, code: grpc.StatusCode, field: str = "image.encoded") -> cs.ModelResult:
        status = cs.ModelStatus(code=code.value[0], message=f"{name} says no")
        bad = error_details_pb2.BadRequest(
            field_violations=[error_details_pb2.BadRequest.FieldViolation(field=field, description="no")]
        )
        status.details.add().Pack(bad)
        return cs.ModelResult(model_name=name, status=status)

    bad_image = grpc.StatusCode.INVALID_ARGUMENT
    error = image_error([result("a", bad_image), result("b", bad_image)])
    assert error is not None and error.message == "a says no (every model rejected the image: a, b)"
    assert error.field_violations == [("image.encoded", "no")]
    assert image_error([result("a", bad_image), result("b", grpc.StatusCode.UNAVAILABLE)]) is None
    assert image_error([result("a", bad_image), result("b", bad_image, field="options.labels")]) is None
    assert image_error([result("a", bad_image), cs.ModelResult(model_name="b")]) is None  # b answered
    assert image_error([]) is None


@pytest.mark.parametrize("name", ["gif", "animated gif (first frame)", "tiff"])
def test_gif_and_tiff_end_to_end(gateway: GatewayThread, name: str) -> None:
    request = cs.CompareRequest(
        image=pb.Image(encoded=odd_but_valid_files()[name]),
        task=pb.TASK_OBJECT_DETECTION,
        model_names=["alpha", "beta"],
    )
    response = gateway.stub.Compare(request, timeout=20)
    for r in response.results:
        assert r.status.code == 0, r.status.message
        box = r.detect.instances[0].box
        assert (box.x1, box.y1, box.x2, box.y2) == (10, 8, 30, 20)


def test_slow_model_times_out_alone_within_the_deadline(services: dict[str, ServiceProcess]) -> None:
    targets = {name: f"dns:///{p.address}" for name, p in services.items()}
    with GatewayThread(targets, deadline_margin_ms=300) as gw:  # margin generous for loaded CI machines
        gw.wait_serving()
        start = time.monotonic()
        response = compare(gw, pb.TASK_OBJECT_DETECTION, timeout=1.5, model_names=["alpha", "slow"])
        elapsed = time.monotonic() - start
    codes = {r.model_name: r.status.code for r in response.results}
    assert codes == {"alpha": 0, "slow": grpc.StatusCode.DEADLINE_EXCEEDED.value[0]}
    assert elapsed < 1.5


def test_model_service_rich_error_details_reach_the_caller(gateway: GatewayThread) -> None:
    options = pb.TaskOptions(labels=["unicorn"])
    response = compare(gateway, pb.TASK_OBJECT_DETECTION, options=options, model_names=["alpha"])
    [result] = response.results
    assert result.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "unknown label 'unicorn'" in result.status.message
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert result.status.details[0].Unpack(info) and info.reason == "INVALID_ARGUMENT"
    assert result.status.details[1].Unpack(bad) and bad.field_violations[0].field == "options.labels"


def test_list_models_is_the_capability_table(gateway: GatewayThread) -> None:
    rows = {r.model_name: r for r in gateway.stub.ListModels(cs.ListModelsRequest(), timeout=5).models}
    assert set(rows) == {"alpha", "beta", "slow"}
    alpha = rows["alpha"]
    assert alpha.state == cs.MODEL_STATE_SERVING
    assert alpha.capabilities.card.name == "Bright spot (alpha)"
    assert alpha.capabilities.runtime.pretrained is False
    assert [t.task for t in rows["beta"].capabilities.tasks] == [pb.TASK_OBJECT_DETECTION]


def test_killed_service_is_unavailable_and_comes_back_after_restart() -> None:
    a, b = tiny_service("a").start(), tiny_service("b").start()
    try:
        with GatewayThread({"a": f"dns:///{a.address}", "b": f"dns:///{b.address}"}) as gw:
            gw.wait_serving()
            b.kill()
            gw.wait_down("b")
            response = compare(gw, pb.TASK_OBJECT_DETECTION)
            codes = {r.model_name: r.status.code for r in response.results}
            assert codes == {"a": 0, "b": grpc.StatusCode.UNAVAILABLE.value[0]}
            row = {r.model_name: r for r in gw.stub.ListModels(cs.ListModelsRequest()).models}["b"]
            assert row.state == cs.MODEL_STATE_UNAVAILABLE and row.error
            b.start()  # same port
            gw.wait_serving(["b"])
            response = compare(gw, pb.TASK_OBJECT_DETECTION)
            assert {r.model_name: r.status.code for r in response.results} == {"a": 0, "b": 0}
    finally:
        a.stop()
        b.stop()
