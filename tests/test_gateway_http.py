"""The gateway's HTTP API, served by the gateway process on the same fan-out code."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import pytest

from tests.gateway_support import GatewayThread
from tests.images import encode, scene
from tests.processes import ServiceProcess, free_port, tiny_service

PNG = encode(scene(64, 48, (10, 8, 30, 20)))


@pytest.fixture(scope="module")
def services() -> Iterator[list[ServiceProcess]]:
    procs = [tiny_service("one"), tiny_service("two", tasks="OBJECT_DETECTION")]
    for p in procs:
        p.start()
    yield procs
    for p in procs:
        p.stop()


@pytest.fixture(scope="module")
def http(services: list[ServiceProcess]) -> Iterator[httpx.Client]:
    targets = {p.name: f"dns:///{p.address}" for p in services}
    with GatewayThread(targets, http_port=0, max_message_bytes=200_000) as gw:
        gw.wait_serving()
        assert gw.server is not None
        with httpx.Client(base_url=f"http://127.0.0.1:{gw.server.http_port}", timeout=30) as client:
            yield client


def test_models_health_and_docs(http: httpx.Client) -> None:
    models = http.get("/v1/models").json()["models"]
    assert [m["model_name"] for m in models] == ["one", "two"]
    assert models[0]["state"] == "MODEL_STATE_SERVING"
    assert models[0]["capabilities"]["card"]["name"] == "Bright spot (one)"
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json() == {"serving": ["one", "two"]}
    assert http.get("/docs").status_code == 200
    spec = http.get("/openapi.json").json()
    assert "/v1/compare" in spec["paths"]
    page = http.get("/")
    assert page.status_code == 200 and "Compare vision models live" in page.text
    assert http.get("/v1/samples").json() == ["shapes-scene.png"]


def test_compare_multipart(http: httpx.Client) -> None:
    response = http.post(
        "/v1/compare",
        files={"image": ("scene.png", PNG, "image/png")},
        data={"task": "object-detection", "options": json.dumps({"score_threshold": 0.5})},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["model_name"] for r in body["results"]] == ["one", "two"]
    box = body["results"][0]["detect"]["instances"][0]["box"]
    assert (box["x1"], box["y1"], box["x2"], box["y2"]) == (10, 8, 30, 20)
    assert body["agreements"][0]["instances"]["mean_iou"] == pytest.approx(1.0)


def test_compare_json_base64_with_masks_as_rle(http: httpx.Client) -> None:
    response = http.post(
        "/v1/compare",
        json={"image_base64": base64.b64encode(PNG).decode(), "task": "TASK_INSTANCE_SEGMENTATION"},
    )
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    rle = result["segment"]["instances"][0]["mask"]["rle"]
    assert (rle["height"], rle["width"]) == (48, 64) and base64.b64decode(rle["counts"])


@pytest.mark.parametrize(
    ("kwargs", "status", "needle"),
    [
        ({"files": {"image": ("x.png", b"not an image", "image/png")}, "data": {"task": "object-detection"}},
         400, "not a JPEG, PNG, WebP or BMP"),
        ({"json": {"image_base64": "%%%", "task": "object-detection"}}, 400, "not valid base64"),
        ({"json": {"image_base64": base64.b64encode(PNG).decode(), "task": "flying"}}, 400, "unknown task"),
        ({"json": {"image_base64": base64.b64encode(PNG).decode(), "task": "zero-shot-classification"}},
         400, "no model serves TASK_ZERO_SHOT_CLASSIFICATION"),
        ({"content": b"x" * 300_000, "headers": {"content-type": "application/json"}}, 413, "over the limit"),
    ],
)
def test_errors_are_json_with_matching_status(http: httpx.Client, kwargs: dict, status: int, needle: str) -> None:
    response = http.post("/v1/compare", **kwargs)
    assert response.status_code == status, response.text
    assert needle in response.json()["message"]


def test_no_reachable_model_is_503() -> None:
    dead = f"dns:///127.0.0.1:{free_port()}"
    with GatewayThread({"ghost": dead}, http_port=0) as gw:
        assert gw.server is not None
        with httpx.Client(base_url=f"http://127.0.0.1:{gw.server.http_port}", timeout=30) as client:
            response = client.post("/v1/compare", json={"image_base64": base64.b64encode(PNG).decode(),
                                                        "task": "object-detection"})
            assert response.status_code == 503
            assert "no model service is reachable" in response.json()["message"]
            assert client.get("/readyz").status_code == 503


def test_http_requires_the_token_when_set(services: list[ServiceProcess]) -> None:
    with GatewayThread({"one": f"dns:///{services[0].address}"}, http_port=0, auth_token="tok") as gw:
        assert gw.server is not None
        base = f"http://127.0.0.1:{gw.server.http_port}"
        assert httpx.get(f"{base}/v1/models").status_code == 401
        assert httpx.get(f"{base}/v1/models", headers={"authorization": "Bearer tok"}).status_code == 200
        assert httpx.get(f"{base}/healthz").status_code == 200
