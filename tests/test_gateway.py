"""The gateway in front of model services running as separate processes (tiny models)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import comparison_service_pb2 as cs

from tests.gateway_support import GatewayThread
from tests.images import encode, scene
from tests.processes import ServiceProcess, tiny_service

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


def test_backend_rich_error_details_reach_the_caller(gateway: GatewayThread) -> None:
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
