"""The gateway's HTTP face: JSON API and the comparison page, on the same fan-out code.

    GET  /v1/models      capability table (JSON)
    POST /v1/compare     multipart upload or JSON with base64 image
    GET  /healthz        the process is up
    GET  /readyz         at least one model serves
    GET  /               the comparison page; /docs has the OpenAPI docs
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from google.protobuf import json_format
from pydantic import BaseModel, Field, ValidationError
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import comparison_service_pb2 as cs

from gateway.comparison import Comparator
from gateway.settings import GatewaySettings
from services.runtime.errors import InvalidArgument, ServiceError, TooLarge, Unauthenticated, client_text

log = logging.getLogger(__name__)
WEB_DIR = Path(__file__).parent / "web"
SAMPLES_DIR = Path(__file__).parent / "samples"

# google.rpc code -> HTTP status (as in google/rpc/code.proto's HTTP mapping).
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class CompareJson(BaseModel):
    """JSON body of POST /v1/compare; `options` uses the TaskOptions JSON mapping."""

    image_base64: str = Field(description="the image file, base64-encoded")
    task: str = Field(description='task name, e.g. "TASK_INSTANCE_SEGMENTATION" or "instance-segmentation"')
    options: dict[str, Any] = Field(default_factory=dict, description="visioncompare.v1.TaskOptions as JSON")
    model_names: list[str] = Field(default_factory=list)
    timeout_s: float | None = Field(None, gt=0, le=600)


def to_json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def parse_task(name: str) -> int:
    key = name.strip().upper().replace("-", "_")
    key = key if key.startswith("TASK_") else f"TASK_{key}"
    if key not in pb.Task.keys() or key == "TASK_UNSPECIFIED":
        valid = ", ".join(k for k in pb.Task.keys() if k != "TASK_UNSPECIFIED")
        raise InvalidArgument(f"unknown task {name!r}; one of {valid}", field="task")
    return pb.Task.Value(key)


def parse_options(raw: dict[str, Any] | str | None) -> pb.TaskOptions:
    try:
        data = json.loads(raw) if isinstance(raw, str) else (raw or {})
        return json_format.ParseDict(data, pb.TaskOptions())
    except (json.JSONDecodeError, json_format.ParseError) as exc:
        raise InvalidArgument(f"options is not valid TaskOptions JSON: {exc}", field="options") from None


def invalid_body(exc: ValidationError) -> InvalidArgument:
    """Pydantic's errors as field violations, without its repr of the input."""
    violations = [(".".join(str(p) for p in e["loc"]) or "body", e["msg"]) for e in exc.errors()]
    summary = "; ".join(f"{f}: {d}" for f, d in violations)
    return InvalidArgument(f"request body is not a valid compare request: {summary}", field_violations=violations)


def error_response(exc: ServiceError) -> JSONResponse:
    """The JSON error body; like the gRPC interceptor, it lets no repr, address or path out."""
    body = {
        "code": exc.code.name,
        "message": client_text(exc.message),
        "reason": exc.reason,
        "field_violations": [{"field": f, "description": client_text(d)} for f, d in exc.field_violations],
    }
    status = 413 if isinstance(exc, TooLarge) else HTTP_STATUS.get(exc.code, 500)
    return JSONResponse(body, status_code=status)


def internal_error_response() -> JSONResponse:
    """An unexpected error: logged with its stack trace and an id; the caller gets only the id."""
    request_id = uuid.uuid4().hex[:16]
    log.exception("HTTP request failed with an unexpected error; request id %s", request_id)
    body = {
        "code": grpc.StatusCode.INTERNAL.name,
        "message": f"internal error; request id {request_id} is in the server log",
        "reason": "INTERNAL",
        "field_violations": [],
    }
    return JSONResponse(body, status_code=500)


def create_app(comparator: Comparator, settings: GatewaySettings) -> FastAPI:
    app = FastAPI(
        title="visioncompare gateway",
        summary="Run one image through every model that serves a task; compare the outputs side by side.",
        version="1",
    )
    token = settings.auth_token.get_secret_value() if settings.auth_token else None
    limit = settings.max_message_bytes

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc)

    @app.middleware("http")
    async def _limits_and_auth(request: Request, call_next: Any) -> Response:
        if request.url.path.startswith("/v1/"):
            if token is not None:
                scheme, _, given = request.headers.get("authorization", "").partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
                    return error_response(Unauthenticated("missing or wrong bearer token"))
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                return error_response(TooLarge(f"request body is {length} bytes, over the limit of {limit}"))
        try:
            return await call_next(request)
        except Exception:  # noqa: BLE001 - nothing unexpected reaches the caller but an id
            return internal_error_response()

    @app.get("/healthz", summary="The gateway process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="At least one model service is serving")
    async def readyz() -> JSONResponse:
        serving = [t.name for t in comparator.registry.targets.values() if t.serving]
        return JSONResponse({"serving": serving}, status_code=200 if serving else 503)

    @app.get("/v1/models", summary="The capability table, built from live Capabilities")
    async def models() -> dict[str, Any]:
        return to_json(comparator.list_models())

    @app.get("/v1/samples", summary="Bundled sample images")
    async def samples() -> list[str]:
        return sorted(p.name for p in SAMPLES_DIR.glob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})

    @app.post(
        "/v1/compare",
        summary="Compare every model serving the task on one image",
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {"schema": CompareJson.model_json_schema()},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["image", "task"],
                            "properties": {
                                "image": {"type": "string", "format": "binary"},
                                "task": {"type": "string"},
                                "options": {"type": "string", "description": "TaskOptions as JSON"},
                                "model_names": {"type": "string", "description": "comma-separated"},
                            },
                        }
                    },
                }
            }
        },
    )
    async def compare(request: Request) -> dict[str, Any]:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            form = await request.form(max_part_size=limit)
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise InvalidArgument("multipart field 'image' must be a file", field="image")
            data = await upload.read()
            task = parse_task(str(form.get("task", "")))
            options = parse_options(str(form.get("options") or "{}"))
            names = [n.strip() for n in str(form.get("model_names") or "").split(",") if n.strip()]
            timeout = None
        else:
            try:
                body = CompareJson.model_validate_json(await request.body())
            except ValidationError as exc:
                raise invalid_body(exc) from None
            try:
                data = base64.b64decode(body.image_base64, validate=True)
            except binascii.Error:
                raise InvalidArgument("image_base64 is not valid base64", field="image_base64") from None
            task, options = parse_task(body.task), parse_options(body.options)
            names, timeout = body.model_names, body.timeout_s
        if len(data) > limit:
            raise TooLarge(f"image is {len(data)} bytes, over the limit of {limit}", field="image")
        message = cs.CompareRequest(image=pb.Image(encoded=data), task=task, options=options, model_names=names)
        return to_json(await comparator.compare(message, timeout))

    app.mount("/samples", StaticFiles(directory=SAMPLES_DIR, check_dir=False), name="samples")
    app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app
