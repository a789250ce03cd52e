"""The shared runtime, through real gRPC servers on port 0 with the tiny test model."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status

from visioncompare.runtime.client import VisionModelClient, channel_credentials
from visioncompare.runtime.settings import ServerSettings
from visioncompare.runtime.types import InferenceRequest, Task
from visioncompare.testing.certs import make_certs
from visioncompare.testing.images import encode, png_bomb, scene
from visioncompare.testing.serving import ServerThread
from visioncompare.testing.tiny_model import BrightSpotModel
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import vision_model_service_pb2 as vms
from visioncompare.v1 import vision_model_service_pb2_grpc as vms_grpc


def health_status(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


def detect(address: str, image: bytes, **kwargs: object) -> vms.DetectResponse:
    with grpc.insecure_channel(address) as channel:
        stub = vms_grpc.VisionModelServiceStub(channel)
        return stub.Detect(vms.DetectRequest(image=pb.Image(encoded=image)), timeout=10, **kwargs)


def test_health_reports_serving_only_after_load_and_warmup() -> None:
    gate = threading.Event()
    model = BrightSpotModel(load_gate=gate)
    with ServerThread(model, wait_ready=False) as srv:
        assert health_status(srv.address) == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as err:
            detect(srv.address, encode(scene()))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "not serving yet" in err.value.details()
        gate.set()
        srv.ready()
        assert model.warmed_up
        assert health_status(srv.address) == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services() -> None:
    with ServerThread(BrightSpotModel()) as srv, grpc.insecure_channel(srv.address) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"visioncompare.v1.VisionModelService", "grpc.health.v1.Health"} <= services


def test_detect_and_segment_round_trip_through_the_client() -> None:
    image = scene(64, 48, (10, 8, 30, 20))
    with ServerThread(BrightSpotModel()) as srv, VisionModelClient(srv.address) as client:
        result = client.segment(encode(image), Task.INSTANCE_SEGMENTATION)
        raw = client.detect(image)  # raw RGB path
        caps = client.capabilities()
    assert (result.image_width, result.image_height) == (64, 48)
    [instance] = result.instances
    assert (instance.box.x1, instance.box.y1, instance.box.x2, instance.box.y2) == (10, 8, 30, 20)
    masks = result.masks()
    assert masks.shape == (1, 48, 64) and masks[0].sum() == 20 * 12 and masks[0, 8:20, 10:30].all()
    assert result.pretrained is False and "random weights" in result.warnings
    assert raw.instances[0].box == instance.box and raw.instances[0].mask is None
    assert caps.card.name == "Bright spot (bright)" and caps.runtime.weights == "random"


def test_errors_carry_rich_details_the_client_can_read() -> None:
    with ServerThread(BrightSpotModel()) as srv, grpc.insecure_channel(srv.address) as channel:
        stub = vms_grpc.VisionModelServiceStub(channel)
        request = vms.DetectRequest(image=pb.Image(encoded=encode(scene())), options=pb.TaskOptions(labels=["cat"]))
        with pytest.raises(grpc.RpcError) as err:
            stub.Detect(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(err.value)
        assert status is not None and "unknown label 'cat'" in status.message
        info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
        assert status.details[0].Unpack(info) and info.reason == "INVALID_ARGUMENT"
        assert info.domain == "visioncompare"
        assert status.details[1].Unpack(bad) and bad.field_violations[0].field == "options.labels"
        # A task this model does not serve: UNIMPLEMENTED naming the served tasks.
        with pytest.raises(grpc.RpcError) as err:
            stub.Classify(vms.ClassifyRequest(image=pb.Image(encoded=encode(scene()))), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "OBJECT_DETECTION" in err.value.details() and "INSTANCE_SEGMENTATION" in err.value.details()
        # A task sent to the wrong RPC.
        with pytest.raises(grpc.RpcError) as err:
            stub.Detect(vms.DetectRequest(image=request.image, task=pb.TASK_INSTANCE_SEGMENTATION), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "call Segment" in err.value.details()
        # The server still serves.
        assert stub.Detect(vms.DetectRequest(image=request.image), timeout=10).instances


class ExplodingModel(BrightSpotModel):
    def predict(self, requests):  # type: ignore[no-untyped-def]
        if any(r.image.shape[0] == 13 for r in requests):
            raise RuntimeError("secret internal detail /etc/passwd")
        return super().predict(requests)


def test_unexpected_errors_are_internal_without_a_stack_trace() -> None:
    with ServerThread(ExplodingModel()) as srv:
        with pytest.raises(grpc.RpcError) as err:
            detect(srv.address, encode(scene(20, 13)))
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert "secret" not in err.value.details() and "Traceback" not in err.value.details()
        assert "request id" in err.value.details()
        assert detect(srv.address, encode(scene())).instances  # still up


class ShortAnswerModel(BrightSpotModel):
    """Answers one request too few for a batch holding a 13-pixel-high image."""

    def predict(self, requests):  # type: ignore[no-untyped-def]
        answers = super().predict(requests)
        return answers[:-1] if any(r.image.shape[0] == 13 for r in requests) else answers


class WorkerKiller(BaseException):
    """Not an Exception: what no per-batch handler may swallow."""


class FatalModel(BrightSpotModel):
    def predict(self, requests):  # type: ignore[no-untyped-def]
        if any(r.image.shape[0] == 13 for r in requests):
            raise WorkerKiller("the model cannot go on")
        return super().predict(requests)


def test_a_batch_answered_with_the_wrong_count_is_internal_and_the_worker_goes_on() -> None:
    with ServerThread(ShortAnswerModel()) as srv:
        start = time.perf_counter()
        with pytest.raises(grpc.RpcError) as err:
            detect(srv.address, encode(scene(20, 13)))
        assert err.value.code() == grpc.StatusCode.INTERNAL and time.perf_counter() - start < 5
        assert "request id" in err.value.details() and "IndexError" not in err.value.details()
        assert detect(srv.address, encode(scene())).instances  # the worker goes on
        assert health_status(srv.address) == health_pb2.HealthCheckResponse.SERVING
        assert srv.server is not None
        srv.run(srv.server.stop(0), timeout=10)  # stop() returns: no spinning on a stranded queue
        srv.server = None


def test_a_worker_that_cannot_go_on_turns_health_not_serving(caplog: pytest.LogCaptureFixture) -> None:
    with ServerThread(FatalModel()) as srv:
        with pytest.raises(grpc.RpcError) as err:
            detect(srv.address, encode(scene(20, 13)))
        assert err.value.code() == grpc.StatusCode.INTERNAL and "WorkerKiller" not in err.value.details()
        for _ in range(50):
            if health_status(srv.address) == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            time.sleep(0.05)
        assert health_status(srv.address) == health_pb2.HealthCheckResponse.NOT_SERVING
        start = time.perf_counter()
        with pytest.raises(grpc.RpcError) as err:
            detect(srv.address, encode(scene()))  # refused at once, not queued forever
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and time.perf_counter() - start < 5
        assert "not serving" in err.value.details() and "retry on another replica" in err.value.details()
        assert any(r.levelname == "CRITICAL" and "inference worker" in r.getMessage() for r in caplog.records)
        assert srv.server is not None
        srv.run(srv.server.stop(0), timeout=10)
        srv.server = None


class GatedModel(BrightSpotModel):
    """Inference on a 13-pixel-high image blocks until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def predict(self, requests):  # type: ignore[no-untyped-def]
        if any(r.image.shape[0] == 13 for r in requests):
            self.release.wait(30)
        return super().predict(requests)


def wait_for_health(address: str, status: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while (got := health_status(address)) != status and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


def test_an_inference_past_the_watchdog_reports_not_serving(caplog: pytest.LogCaptureFixture) -> None:
    model = GatedModel()
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    with ServerThread(model, inference_watchdog_s=0.3, max_batch_size=1) as srv, ThreadPoolExecutor(2) as pool:
        stuck = pool.submit(detect, srv.address, encode(scene(20, 13)))
        assert wait_for_health(srv.address, not_serving) == not_serving
        assert any(r.levelname == "CRITICAL" and "WATCHDOG" in r.getMessage() for r in caplog.records)
        with pytest.raises(grpc.RpcError) as err:
            detect(srv.address, encode(scene()))  # refused while the inference hangs
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "watchdog" in err.value.details()
        model.release.set()  # it was only slow: it answers, and the service serves again
        assert stuck.result(10).instances
        assert wait_for_health(srv.address, serving) == serving
        assert detect(srv.address, encode(scene())).instances


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"", "empty"),
        (b"this is not an image at all", "not a readable"),
        (encode(scene())[:60], "corrupt or truncated"),
    ],
)
def test_corrupt_and_empty_images_are_invalid_argument(payload: bytes, needle: str) -> None:
    with ServerThread(BrightSpotModel()) as srv:
        with pytest.raises(grpc.RpcError) as err:
            detect(srv.address, payload)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert needle in err.value.details()


@pytest.mark.parametrize(("side", "needle"), [(5_000, "5000x5000"), (60_000, "3600000000 pixels")])
def test_decompression_bomb_is_rejected_fast_from_the_header(side: int, needle: str) -> None:
    bomb = png_bomb(side, side)  # up to 3.6 gigapixels claimed, ~10 GB if decoded
    assert len(bomb) < 1000
    with ServerThread(BrightSpotModel(), max_image_pixels=10_000_000) as srv:
        start = time.perf_counter()
        with pytest.raises(grpc.RpcError) as err:
            detect(srv.address, bomb)
        elapsed = time.perf_counter() - start
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert needle in err.value.details() and "limit of 10000000" in err.value.details()
        info = error_details_pb2.ErrorInfo()
        rpc_status.from_call(err.value).details[0].Unpack(info)
        assert info.reason == "INPUT_TOO_LARGE"
        assert elapsed < 2.0


def test_decompression_bomb_is_not_allocated() -> None:
    import tracemalloc

    from visioncompare.runtime.errors import TooLarge
    from visioncompare.runtime.images import decode_bytes

    tracemalloc.start()
    with pytest.raises(TooLarge):
        decode_bytes(png_bomb(5_000, 5_000), max_pixels=10_000_000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 5 * 1024 * 1024


def test_raw_image_with_wrong_byte_count_is_invalid_argument() -> None:
    with ServerThread(BrightSpotModel()) as srv, grpc.insecure_channel(srv.address) as channel:
        stub = vms_grpc.VisionModelServiceStub(channel)
        raw = pb.RawImage(width=4, height=4, rgb=b"\x00" * 10)
        with pytest.raises(grpc.RpcError) as err:
            stub.Detect(vms.DetectRequest(image=pb.Image(raw=raw)), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "needs 48" in err.value.details()


def test_exif_orientation_is_applied() -> None:
    image = scene(64, 32, (0, 0, 8, 4))  # bright block in the top-left corner
    rotated = encode(image, "JPEG", exif_orientation=6)  # viewer rotates 90° clockwise
    with ServerThread(BrightSpotModel()) as srv, VisionModelClient(srv.address) as client:
        result = client.detect(rotated)
    assert (result.image_width, result.image_height) == (32, 64)
    box = result.instances[0].box
    assert box.x1 >= 26 and box.y2 <= 10  # now in the top-right corner


def test_message_over_the_size_limit_is_resource_exhausted() -> None:
    big = np.random.default_rng(0).integers(0, 255, (700, 700, 3), dtype=np.uint8)
    payload = encode(big)  # ~1.4 MB of noise
    assert len(payload) > 1024 * 1024
    with ServerThread(BrightSpotModel(), max_message_bytes=1024 * 1024) as srv:
        with pytest.raises(grpc.RpcError) as err:
            detect(srv.address, payload)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert detect(srv.address, encode(scene())).instances


def _bucket(srv: ServerThread, le: str) -> float:
    assert srv.server is not None
    value = srv.server.metrics.registry.get_sample_value("visioncompare_batch_size_bucket", {"le": le})
    return value or 0.0


def test_concurrent_requests_are_batched_and_answered_individually() -> None:
    model = BrightSpotModel(delay_s=0.15)
    boxes = [(2 + i, 3, 20 + 2 * i, 12 + i) for i in range(8)]
    with ServerThread(model, max_batch_size=4, max_queue_delay_ms=100) as srv:
        with VisionModelClient(srv.address) as client, ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda b: client.detect(encode(scene(48, 32, b))), boxes))
        ones, fours = _bucket(srv, "1.0"), _bucket(srv, "4.0")
    for box, result in zip(boxes, results, strict=True):
        got = result.instances[0].box
        assert (got.x1, got.y1, got.x2, got.y2) == box
    assert max(model.batches) > 1 and sum(model.batches) == 8
    assert fours == len(model.batches) and ones < fours  # the histogram shows batches above 1
    assert max(r.batch_size for r in results) > 1


class SizeKeyedModel(BrightSpotModel):
    """Batches only images of one size, as Mask R-CNN's batch key does."""

    def batch_key(self, request: InferenceRequest) -> Hashable:
        return request.task, request.image.shape


def test_requests_of_another_batch_key_waiting_in_the_queue_do_not_break_batching() -> None:
    # Taking the requests of one key out of a queue that also holds another key's requests
    # must not compare requests (and their pixel arrays) with each other.
    model = SizeKeyedModel(delay_s=0.2)
    sizes = [(48, 32), (40, 30)] * 4
    with ServerThread(model, max_batch_size=4, max_queue_delay_ms=150) as srv:
        with VisionModelClient(srv.address) as client, ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda wh: client.detect(encode(scene(*wh))), sizes))
    assert [(r.image_width, r.image_height) for r in results] == sizes
    assert all(len(r.instances) == 1 for r in results)
    assert max(model.batches) > 1 and sum(model.batches) == len(sizes)


def test_full_queue_is_resource_exhausted_at_once() -> None:
    model = BrightSpotModel(delay_s=0.6)
    with ServerThread(model, max_batch_size=1, max_queue_size=1, max_queue_delay_ms=0) as srv:
        image = encode(scene())
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(detect, srv.address, image) for _ in range(4)]
            codes = []
            for f in futures:
                try:
                    f.result()
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as exc:
                    codes.append(exc.code())
                    if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        assert "queue is full" in exc.details()
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes and grpc.StatusCode.OK in codes


def test_request_whose_deadline_passes_in_the_queue_is_not_computed() -> None:
    model = BrightSpotModel(delay_s=0.8)
    with ServerThread(model, max_batch_size=1, max_queue_delay_ms=0) as srv:
        image = encode(scene())
        with ThreadPoolExecutor(2) as pool:
            slow = pool.submit(detect, srv.address, image, metadata=(("x-request-id", "first"),))
            time.sleep(0.2)  # "first" is now running
            with pytest.raises(grpc.RpcError) as err:
                with grpc.insecure_channel(srv.address) as channel:
                    vms_grpc.VisionModelServiceStub(channel).Detect(
                        vms.DetectRequest(image=pb.Image(encoded=image)),
                        timeout=0.3,
                        metadata=(("x-request-id", "late"),),
                    )
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            slow.result()
        time.sleep(0.2)
        assert srv.server is not None
        expired = srv.server.metrics.registry.get_sample_value(
            "visioncompare_dropped_requests_total", {"reason": "deadline"}
        )
    assert model.seen_request_ids == ["first"]
    assert expired == 1


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return make_certs(tmp_path_factory.mktemp("certs"))


def test_tls_round_trip(certs) -> None:  # type: ignore[no-untyped-def]
    settings = ServerSettings(
        host="127.0.0.1", port=0, metrics_port=None, tls_cert_file=certs.server_cert, tls_key_file=certs.server_key
    )
    with ServerThread(BrightSpotModel(), settings) as srv:
        creds = channel_credentials(certs.ca.read_bytes())
        with VisionModelClient(f"localhost:{srv.port}", credentials=creds) as client:
            assert client.detect(scene()).instances
        with VisionModelClient(srv.address, timeout=3) as plaintext, pytest.raises(grpc.RpcError):
            plaintext.detect(scene())


def test_mtls_requires_a_client_certificate(certs) -> None:  # type: ignore[no-untyped-def]
    settings = ServerSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        tls_cert_file=certs.server_cert,
        tls_key_file=certs.server_key,
        tls_client_ca_file=certs.ca,
    )
    with ServerThread(BrightSpotModel(), settings) as srv:
        ca = certs.ca.read_bytes()
        with_cert = channel_credentials(ca, certs.client_cert.read_bytes(), certs.client_key.read_bytes())
        with VisionModelClient(f"localhost:{srv.port}", credentials=with_cert) as client:
            assert client.detect(scene()).instances
        without = channel_credentials(ca)
        with VisionModelClient(f"localhost:{srv.port}", credentials=without, timeout=3) as client:
            with pytest.raises(grpc.RpcError) as err:
                client.detect(scene())
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_bearer_token_is_required_but_health_stays_open() -> None:
    with ServerThread(BrightSpotModel(), auth_token="s3cret") as srv:
        for token in (None, "wrong"):
            with VisionModelClient(srv.address, token=token) as client, pytest.raises(grpc.RpcError) as err:
                client.detect(scene())
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with VisionModelClient(srv.address, token="s3cret") as client:
            assert client.detect(scene()).instances
        assert health_status(srv.address) == health_pb2.HealthCheckResponse.SERVING
        with grpc.insecure_channel(srv.address) as channel, pytest.raises(grpc.RpcError) as err:
            ProtoReflectionDescriptorDatabase(channel).get_services()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_graceful_drain_finishes_in_flight_and_refuses_new() -> None:
    model = BrightSpotModel(delay_s=1.0)
    srv = ServerThread(model, max_batch_size=1).start()
    image = encode(scene())
    try:
        with ThreadPoolExecutor(2) as pool:
            in_flight = pool.submit(detect, srv.address, image)
            time.sleep(0.3)
            assert srv.server is not None
            stopping = pool.submit(srv.run, srv.server.stop(5.0))
            time.sleep(0.2)
            with pytest.raises(grpc.RpcError) as err:
                detect(srv.address, image)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert in_flight.result().instances  # finished despite the drain
            stopping.result()
        srv.server = None
    finally:
        srv.stop()


def test_a_health_watcher_does_not_hold_the_drain() -> None:
    """The gateway keeps a grpc.health.v1 Watch open on every model. When the model stops, that
    stream gets NOT_SERVING and ends, so the stop does not wait out the drain grace for it."""
    srv = ServerThread(BrightSpotModel(), max_batch_size=1).start()
    try:
        with grpc.insecure_channel(srv.address) as channel:
            stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
            assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
            assert srv.server is not None
            start = time.monotonic()
            srv.run(srv.server.stop(20.0), 60)
            took = time.monotonic() - start
            after = [response.status for response in stream]  # the stream ends (status OK)
        srv.server = None
    finally:
        srv.stop()
    assert after == [health_pb2.HealthCheckResponse.NOT_SERVING]
    assert took < 5, f"the stop took {took:.1f}s with a health watcher connected (drain grace 20s)"


def test_settings_are_validated_with_clear_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="must be set together"):
        ServerSettings(tls_cert_file=tmp_path / "x")
    with pytest.raises(ValueError, match="max_batch_size"):
        ServerSettings(max_batch_size=0)
    assert ServerSettings().inference_watchdog_s == 300.0  # the watchdog is on by default
    assert ServerSettings(inference_watchdog_s=None).inference_watchdog_s is None
    with pytest.raises(ValueError, match="inference_watchdog_s"):
        ServerSettings(inference_watchdog_s=0)
