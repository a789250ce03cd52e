"""The gateway's HTTP API, served by the gateway process on the same fan-out code."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from visioncompare.testing.gateway_support import GatewayThread
from visioncompare.testing.images import encode, scene
from visioncompare.testing.odd_images import assert_clean_message, bad_files, odd_but_valid_files
from visioncompare.testing.processes import ServiceProcess, free_port, tiny_service

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


def test_compare_png_is_the_side_by_side_picture(http: httpx.Client) -> None:
    for request in (
        {"files": {"image": ("scene.png", PNG, "image/png")}, "data": {"task": "object-detection"}},
        {"json": {"image_base64": base64.b64encode(PNG).decode(), "task": "object-detection"}},
    ):
        response = http.post("/v1/compare/png", **request)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        assert response.headers["content-disposition"] == 'attachment; filename="side_by_side-object-detection.png"'
        picture = Image.open(io.BytesIO(response.content))
        assert picture.format == "PNG"
        # Two panels (one, two), each the 64x48 scene scaled to 480 px wide, 8 px apart, under a header.
        assert picture.width == 2 * 480 + 8 and picture.height > 360


def test_compare_names_its_answer_by_the_tasks_short_name_however_the_task_is_spelled(http: httpx.Client) -> None:
    for task in ("TASK_OBJECT_DETECTION", "object-detection"):
        response = http.post("/v1/compare", json={"image_base64": base64.b64encode(PNG).decode(), "task": task})
        assert response.status_code == 200, response.text
        assert response.headers["content-disposition"] == 'inline; filename="comparison-object-detection.json"'


@pytest.mark.parametrize(
    ("kwargs", "status", "needle"),
    [
        ({"json": {"image_base64": base64.b64encode(PNG).decode(), "task": "flying"}}, 400, "unknown task"),
        (
            {"files": {"image": ("x.png", b"not an image", "image/png")}, "data": {"task": "object-detection"}},
            400,
            "not a readable JPEG",
        ),
        (
            {"content": b"task=object-detection", "headers": {"content-type": "text/plain"}},
            415,
            "send application/json",
        ),
    ],
)
def test_compare_png_errors_are_json(http: httpx.Client, kwargs: dict, status: int, needle: str) -> None:
    response = http.post("/v1/compare/png", **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert needle in response.json()["message"]


def test_openapi_documents_the_png_answer(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    png = spec["paths"]["/v1/compare/png"]["post"]
    assert png["requestBody"] == spec["paths"]["/v1/compare"]["post"]["requestBody"]
    assert list(png["responses"]["200"]["content"]) == ["image/png"]
    for status in ("400", "401", "404", "413", "415", "429", "500", "503", "504"):
        assert png["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"
        }, status


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
        (
            {"files": {"image": ("x.png", b"not an image", "image/png")}, "data": {"task": "object-detection"}},
            400,
            "not a readable JPEG, PNG, WebP, BMP, GIF or TIFF image",
        ),
        ({"json": {"image_base64": "%%%", "task": "object-detection"}}, 400, "not valid base64"),
        ({"json": {"image_base64": base64.b64encode(PNG).decode(), "task": "flying"}}, 400, "unknown task"),
        (
            {"json": {"image_base64": base64.b64encode(PNG).decode(), "task": "zero-shot-classification"}},
            400,
            "no model serves TASK_ZERO_SHOT_CLASSIFICATION",
        ),
        ({"content": b"x" * 300_000, "headers": {"content-type": "application/json"}}, 413, "over the limit"),
    ],
)
def test_errors_are_json_with_matching_status(http: httpx.Client, kwargs: dict, status: int, needle: str) -> None:
    response = http.post("/v1/compare", **kwargs)
    assert response.status_code == status, response.text
    assert needle in response.json()["message"]


@pytest.mark.parametrize("name", sorted(bad_files()))
def test_unreadable_images_fail_whole_with_clean_json_errors(http: httpx.Client, name: str) -> None:
    data = bad_files()[name]
    response = http.post(
        "/v1/compare", files={"image": ("upload", data, "application/octet-stream")}, data={"task": "object-detection"}
    )
    assert response.status_code == (413 if "bomb" in name else 400), response.text
    body = response.json()
    assert body["code"] == "INVALID_ARGUMENT" and "results" not in body
    assert [v["field"] for v in body["field_violations"]] == ["image.encoded"]
    assert_clean_message(body["message"])
    assert_clean_message(body["field_violations"][0]["description"])


@pytest.mark.parametrize("name", sorted(odd_but_valid_files()))
def test_unusual_images_pillow_reads_are_compared(http: httpx.Client, name: str) -> None:
    data = odd_but_valid_files()[name]
    response = http.post(
        "/v1/compare", json={"image_base64": base64.b64encode(data).decode(), "task": "object-detection"}
    )
    assert response.status_code == 200, response.text
    assert [r["model_name"] for r in response.json()["results"] if "detect" in r] == ["one", "two"]


def test_invalid_json_body_names_the_fields_without_echoing_the_input(http: httpx.Client) -> None:
    secret = base64.b64encode(b"x" * 50).decode()
    response = http.post("/v1/compare", json={"image_base64": secret, "timeout_s": -1})
    assert response.status_code == 400
    body = response.json()
    assert {v["field"] for v in body["field_violations"]} == {"task", "timeout_s"}
    assert secret not in response.text and "input_value" not in response.text


def test_unexpected_error_is_500_with_a_request_id_only(services: list[ServiceProcess]) -> None:
    with GatewayThread({"one": f"dns:///{services[0].address}"}, http_port=0) as gw:
        assert gw.server is not None

        async def explode(*args: object) -> None:
            raise RuntimeError("secret detail in /srv/app/gateway/comparison.py")

        gw.server.comparator.compare = explode  # type: ignore[method-assign]
        with httpx.Client(base_url=f"http://127.0.0.1:{gw.server.http_port}", timeout=30) as client:
            response = client.post(
                "/v1/compare", json={"image_base64": base64.b64encode(PNG).decode(), "task": "object-detection"}
            )
            assert response.status_code == 500
            body = response.json()
            assert body["code"] == "INTERNAL" and "request id" in body["message"]
            assert "secret" not in response.text and "Traceback" not in response.text
            assert client.get("/v1/models").status_code == 200  # still serving


def test_openapi_task_is_an_enum_and_errors_are_documented(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    compare = spec["paths"]["/v1/compare"]["post"]
    content = compare["requestBody"]["content"]
    assert compare["requestBody"]["required"] is True
    for media in ("application/json", "multipart/form-data"):
        task = content[media]["schema"]["properties"]["task"]
        assert "TASK_OBJECT_DETECTION" in task["enum"] and "object-detection" in task["enum"]
        assert "TASK_UNSPECIFIED" not in task["enum"]
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for status in ("400", "401", "404", "413", "415", "429", "500", "503", "504"):
        assert compare["responses"][status]["content"]["application/json"]["schema"] == error_ref, status
    assert set(spec["components"]["schemas"]["ErrorBody"]["required"]) >= {"code", "message", "field_violations"}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PATCH", "/v1/compare", "POST"),
        ("OPTIONS", "/v1/compare", "POST"),
        ("POST", "/v1/models", "GET"),
        ("DELETE", "/healthz", "GET"),
        ("POST", "/", "GET"),
    ],
)
def test_wrong_method_is_405_with_the_allowed_ones(http: httpx.Client, method: str, path: str, allow: str) -> None:
    response = http.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json()["reason"] == "METHOD_NOT_ALLOWED"


def test_page_assets_and_unknown_paths(http: httpx.Client) -> None:
    assert "/static/app.js" in http.get("/").text
    assert http.get("/static/app.js").status_code == 200
    missing = http.get("/nope")
    assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("kwargs", "status", "field", "needle"),
    [
        ({"json": {"image_base64": "\u00dd", "task": "object-detection"}}, 400, "image_base64", "not valid base64"),
        (
            {"json": {"image_base64": base64.b64encode(PNG).decode(), "task": "object-detection", "options": []}},
            400,
            "options",
            None,
        ),
        (
            {"files": {"image": ("x.png", PNG, "image/png")}, "data": {"task": "object-detection", "options": "1.5"}},
            400,
            "options",
            "must be a JSON object",
        ),
        (
            {"files": {"image": ("x.png", PNG, "image/png"), "task": ("t", b"object-detection", "text/plain")}},
            400,
            "task",
            "must be text, not a file",
        ),
        (
            {"json": {"image_base64": base64.b64encode(PNG).decode(), "task": "Object_Detection"}},
            400,
            "task",
            "unknown task",
        ),
        (
            {"json": {"image_base64": base64.b64encode(PNG).decode(), "task": "object-detection", "image": "x"}},
            400,
            "image",
            None,
        ),
        (
            {"content": b"task=object-detection", "headers": {"content-type": "text/plain"}},
            415,
            None,
            "send application/json",
        ),
    ],
)
def test_malformed_requests_are_4xx_not_500(
    http: httpx.Client, kwargs: dict, status: int, field: str | None, needle: str | None
) -> None:
    response = http.post("/v1/compare", **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert [v["field"] for v in body["field_violations"]] == ([field] if field else [])
    assert needle is None or needle in body["message"]


def test_no_reachable_model_is_503() -> None:
    dead = f"dns:///127.0.0.1:{free_port()}"
    with GatewayThread({"ghost": dead}, http_port=0) as gw:
        assert gw.server is not None
        with httpx.Client(base_url=f"http://127.0.0.1:{gw.server.http_port}", timeout=30) as client:
            response = client.post(
                "/v1/compare", json={"image_base64": base64.b64encode(PNG).decode(), "task": "object-detection"}
            )
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


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_docs_load_nothing_from_another_host(page: str) -> None:
    """/docs and /redoc were blank offline (Swagger UI from a CDN): every script, stylesheet and
    icon they name is the gateway's own, and the gateway serves it."""
    from fastapi.testclient import TestClient

    from visioncompare.gateway.http import create_app
    from visioncompare.gateway.settings import GatewaySettings

    app = create_app(None, GatewaySettings(targets={"none": "127.0.0.1:1"}))  # type: ignore[arg-type]
    with TestClient(app) as client:
        html = client.get(page)
        assert html.status_code == 200
        urls = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]+)['"]|url:\s*['"]([^'"]+)['"]""", html.text)
        urls = [a or b for a, b in urls]
        assert urls and not [u for u in urls if re.match(r"(https?:)?//", u)], urls
        for url in urls:
            answer = client.get(url)
            assert answer.status_code == 200 and answer.content, url
        assert any(u.endswith(".js") for u in urls)


# --- the schema says exactly what the gateway accepts (issue 29) ---------------------------------


def test_the_schema_lists_the_tasks_served_now_and_which_models_serve_each(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    body = spec["paths"]["/v1/compare"]["post"]["requestBody"]["content"]
    json_body, form = body["application/json"]["schema"], body["multipart/form-data"]["schema"]
    served = ["TASK_OBJECT_DETECTION", "object-detection", "TASK_INSTANCE_SEGMENTATION", "instance-segmentation"]
    assert json_body["properties"]["task"]["enum"] == served == form["properties"]["task"]["enum"]
    assert json_body["properties"]["model_names"]["items"]["enum"] == ["one", "two"]
    # "two" serves object detection only: instance segmentation may not name it alone
    [branch] = [
        b
        for b in json_body["dependentSchemas"]["model_names"]["anyOf"]
        if "instance-segmentation" in b["properties"]["task"]["enum"]
    ]
    assert branch["properties"]["model_names"]["anyOf"][1] == {"contains": {"enum": ["one"]}}
    refused = http.post(
        "/v1/compare",
        json={"image_base64": base64.b64encode(PNG).decode(), "task": "instance-segmentation", "model_names": ["two"]},
    )
    assert refused.status_code == 400 and refused.json()["code"] == "FAILED_PRECONDITION"
    image = json_body["properties"]["image_base64"]
    assert (image["format"], image["contentEncoding"], image["minLength"]) == ("image-base64", "base64", 4)
    assert form["properties"]["image"]["minLength"] == 1
    assert "image/png" in body["multipart/form-data"]["encoding"]["image"]["contentType"]
    options = json_body["properties"]["options"]
    assert options["additionalProperties"] is False and options["properties"]["max_results"]["maximum"] == 2**32 - 1
    assert form["properties"]["options"]["properties"] == options["properties"]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"score_threshold": None}, "options.score_threshold"),  # null: refused, as the schema says
        ({"score_threshold": "0.5"}, "options.score_threshold"),  # a string is no number
        ({"max_results": True}, "options.max_results"),
        ({"max_results": -1}, "options.max_results"),
        ({"max_results": 2.5}, "options.max_results"),
        ({"mask_threshold": 1e16}, "options.mask_threshold"),
        ({"prompts": {"points": [{"x": 1, "z": 2}]}}, "options.prompts.points.0.z"),
        ({"colour": "red"}, "options.colour"),
    ],
)
def test_options_outside_the_schema_are_400_naming_the_field(http: httpx.Client, options: dict, field: str) -> None:
    for request in (
        {"json": {"image_base64": base64.b64encode(PNG).decode(), "task": "object-detection", "options": options}},
        {
            "files": {"image": ("x.png", PNG, "image/png")},
            "data": {"task": "object-detection", "options": json.dumps(options)},
        },
    ):
        response = http.post("/v1/compare", **request)
        assert response.status_code == 400, response.text
        assert [v["field"] for v in response.json()["field_violations"]] == [field]


def test_options_in_the_schema_are_accepted(http: httpx.Client) -> None:
    for options in ({"max_results": 3.0}, {"maxResults": 3}, {"score_threshold": 0}, {}):  # 3.0 is JSON's 3
        response = http.post(
            "/v1/compare",
            json={"image_base64": base64.b64encode(PNG).decode(), "task": "object-detection", "options": options},
        )
        assert response.status_code == 200, (options, response.text)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"options": ""}, "options"),  # an options part must be a JSON object, even an empty one
        ({"open_vocabulary_labels": "cat, dog"}, "open_vocabulary_labels"),  # a JSON array of strings
        ({"open_vocabulary_labels": "5"}, "open_vocabulary_labels"),
        ({"model_names": "one;two"}, "model_names"),
    ],
)
def test_multipart_fields_outside_the_schema_are_400(http: httpx.Client, data: dict, field: str) -> None:
    response = http.post(
        "/v1/compare", files={"image": ("x.png", PNG, "image/png")}, data={"task": "object-detection", **data}
    )
    assert response.status_code == 400, response.text
    assert [v["field"] for v in response.json()["field_violations"]] == [field]


def test_an_empty_image_is_outside_the_schema(http: httpx.Client) -> None:
    response = http.post("/v1/compare/png", json={"image_base64": "", "task": "object-detection"})
    assert response.status_code == 400 and "not valid base64" in response.json()["message"]


def test_the_page_has_an_icon(http: httpx.Client) -> None:
    page = http.get("/").text
    [href] = re.findall(r'<link rel="icon" href="([^"]+)"', page)
    for url in (href, "/favicon.ico"):
        icon = http.get(url)
        assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml"), url


def test_open_vocabulary_labels_go_to_the_open_models_only() -> None:
    """CompareRequest.open_vocabulary_labels over HTTP, in both bodies: the open-vocabulary model gets
    the caller's words, the fixed-vocabulary one keeps its own label set (visioncompare/testing/playground_model.py)."""
    procs = [playground_service("fixed", "fixed"), playground_service("open", "open")]
    for p in procs:
        p.start()
    try:
        with GatewayThread({p.name: f"dns:///{p.address}" for p in procs}, http_port=0) as gw:
            gw.wait_serving()
            assert gw.server is not None
            with httpx.Client(base_url=f"http://127.0.0.1:{gw.server.http_port}", timeout=30) as client:
                labels = ["moon", "sun"]
                for request in (
                    {
                        "json": {
                            "image_base64": base64.b64encode(PNG).decode(),
                            "task": "instance-segmentation",
                            "open_vocabulary_labels": labels,
                        }
                    },
                    {
                        "files": {"image": ("x.png", PNG, "image/png")},
                        "data": {"task": "instance-segmentation", "open_vocabulary_labels": json.dumps(labels)},
                    },
                ):
                    response = client.post("/v1/compare", **request)
                    assert response.status_code == 200, response.text
                    body = response.json()
                    assert body["labels_used"] == labels
                    found = {
                        r["model_name"]: sorted(i["label"]["name"] for i in r["segment"]["instances"])
                        for r in body["results"]
                    }
                    assert found == {"fixed": ["bright", "dark"], "open": ["moon", "sun"]}
    finally:
        for p in procs:
            p.stop()


def playground_service(name: str, vocabulary: str) -> ServiceProcess:
    port = free_port()
    args = [
        "-m",
        "visioncompare.testing.playground_service",
        "--port",
        str(port),
        "--name",
        name,
        "--vocabulary",
        vocabulary,
    ]
    return ServiceProcess(name, args, port)
