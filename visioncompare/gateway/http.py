"""The gateway's HTTP face: JSON API and the comparison page, on the same fan-out code.

    GET  /v1/models      capability table (JSON)
    POST /v1/compare     multipart upload or JSON with base64 image
    POST /v1/compare/png the same request; answers the side-by-side PNG the CLI draws
    GET  /healthz        the process is up
    GET  /readyz         at least one model serves
    GET  /               the comparison page (assets under /static/, its icon also at /favicon.ico);
                         /docs has the OpenAPI docs (Swagger UI, and ReDoc at /redoc, served from the
                         gateway: no CDN)

Every error, on every path, is the same JSON body (`ErrorBody`) with the HTTP
status of its canonical code; /openapi.json documents each one an operation returns.

The handlers are module-level functions on three routers (`probes`, `api` under /v1, `page_routes`).
`create_app` builds the app around them and puts the shared state on `app.state`: the
`Comparator` and the settings, which handlers get through dependencies (`get_comparator`,
`get_settings`; `read_compare` reads a compare body); `limits_and_auth` applies the token and the
body limit to /v1/.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import io
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from google.protobuf import json_format
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException

from visioncompare.gateway.comparison import Comparator
from visioncompare.gateway.http_schema import (
    COMPARE_BODY,
    TASK_NAMES,
    CompareJson,
    TaskOptionsJson,
    json_string_array,
    live_openapi,
    options_dict,
    split_list,
)
from visioncompare.gateway.render import side_by_side, task_name
from visioncompare.gateway.settings import GatewaySettings
from visioncompare.runtime.convert import pb_enum
from visioncompare.runtime.errors import InvalidArgument, ServiceError, TooLarge, Unauthenticated, client_text
from visioncompare.runtime.tasks import TASKS_BY_SHORT_NAME
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import comparison_service_pb2 as cs

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


# Starlette's own errors: HTTP status -> the body's canonical code and ErrorInfo reason.
HTTP_ERRORS = {
    400: (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    404: (grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
    405: (grpc.StatusCode.UNIMPLEMENTED, "METHOD_NOT_ALLOWED"),
}


class UnsupportedMediaType(InvalidArgument):
    """A body that is neither JSON nor multipart: INVALID_ARGUMENT, answered with HTTP 415."""


def draw_png(image: bytes, response: cs.CompareResponse) -> bytes:
    """The side-by-side PNG of a comparison (visioncompare.gateway.render.side_by_side)."""
    buffer = io.BytesIO()
    try:
        side_by_side(image, response).save(buffer, format="PNG")
    except (OSError, ValueError) as exc:  # pixels the models read but Pillow cannot draw
        raise InvalidArgument(f"the image cannot be drawn: {exc}", field="image") from None
    return buffer.getvalue()


class FieldViolation(BaseModel):
    """One bad field of the request (google.rpc.BadRequest.FieldViolation)."""

    field: str = Field(description='the field, e.g. "image.encoded" or "task"')
    description: str = Field(description="what is wrong with it and how to fix it")


class ErrorBody(BaseModel):
    """Every error answer: the canonical code, a message and the google.rpc details."""

    code: str = Field(description='canonical gRPC status code name, e.g. "INVALID_ARGUMENT"')
    message: str = Field(description="what went wrong and how to fix it")
    reason: str = Field(description='google.rpc.ErrorInfo reason, e.g. "INPUT_TOO_LARGE"')
    field_violations: list[FieldViolation] = Field(description="the bad fields, for invalid requests")


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses an operation can answer, each with ErrorBody."""
    return {status: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[status]} for status in statuses}


ERROR_DESCRIPTIONS = {
    400: "INVALID_ARGUMENT (bad field, unreadable image; see field_violations) or FAILED_PRECONDITION "
    "(no model serves the task now)",
    401: "UNAUTHENTICATED: the gateway has a token and the request's `Authorization: Bearer` is missing or wrong",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT with reason INPUT_TOO_LARGE: the body or the image's pixels are over the gateway's limit",
    415: "INVALID_ARGUMENT: the body is neither application/json nor multipart/form-data",
    429: "RESOURCE_EXHAUSTED: retry with backoff",
    500: "INTERNAL: an unexpected error; the message holds the request id that is in the server log",
    503: "UNAVAILABLE: no model service is reachable; retry when they are up",
    504: "DEADLINE_EXCEEDED",
}


class Ready(BaseModel):
    """The model services that serve now."""

    serving: list[str]


def to_json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def parse_task(name: str) -> pb.Task:
    """A task by one of TASK_NAMES, exactly as the contract's enum spells them."""
    if name not in TASK_NAMES:
        valid = ", ".join(TASK_NAMES[1::2])
        raise InvalidArgument(
            f"unknown task {name!r}; one of {valid} (or the enum name, e.g. TASK_OBJECT_DETECTION)", field="task"
        )
    if name.startswith("TASK_"):
        return pb_enum(pb.Task, pb.Task.Value(name))
    return pb_enum(pb.Task, TASKS_BY_SHORT_NAME[name])


def parse_options(raw: BaseModel | str) -> pb.TaskOptions:
    """TaskOptions from a validated TaskOptionsJson, or from the JSON text of a multipart part."""
    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"options is not valid JSON: {exc}", field="options") from None
        if not isinstance(data, dict):
            raise InvalidArgument(
                'options must be a JSON object (visioncompare.v1.TaskOptions), e.g. {"score_threshold": 0.5}',
                field="options",
            )
        try:
            raw = TaskOptionsJson.model_validate_json(json.dumps(data))
        except ValidationError as exc:
            raise invalid_body(exc, "options", "options is not valid TaskOptions JSON") from None
    try:
        return json_format.ParseDict(options_dict(raw), pb.TaskOptions())
    except json_format.ParseError as exc:  # what the model above let through and the proto refuses
        raise InvalidArgument(f"options is not valid TaskOptions JSON: {exc}", field="options") from None


def form_text(form: Any, name: str) -> str:
    """A multipart field that must be text, not a file."""
    value = form.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidArgument(f"multipart field {name!r} must be text, not a file", field=name)
    return value or ""


BASE64_MESSAGE = "image_base64 is not valid base64: send the file's bytes in standard base64 (A-Z, a-z, 0-9, +, /, =)"


def parse_labels(text: str) -> list[str]:
    """The multipart `open_vocabulary_labels`: a JSON array of strings (http_schema.JSON_STRING_ARRAY)."""
    labels = json_string_array(text)
    if labels is None:
        raise InvalidArgument(
            'open_vocabulary_labels must be a JSON array of strings, e.g. ["cat", "dog"] (string escapes '
            "other than \\u are accepted)",
            field="open_vocabulary_labels",
        )
    return labels


def invalid_body(
    exc: ValidationError, prefix: str = "", summary: str = "request body is not a valid compare request"
) -> InvalidArgument:
    """Pydantic's errors as field violations (under `prefix`), without its repr of the input."""
    violations = []
    for e in exc.errors():
        field = ".".join([prefix, *(str(p) for p in e["loc"])] if prefix else [str(p) for p in e["loc"]]) or "body"
        message = BASE64_MESSAGE if field == "image_base64" and e["type"].startswith("string_") else e["msg"]
        violations.append((field, message))
    text = "; ".join(f"{f}: {d}" for f, d in violations)
    return InvalidArgument(f"{summary}: {text}", field_violations=violations)


def error_response(
    exc: ServiceError, status: int | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The JSON error body; like the gRPC interceptor, it lets no repr, address or path out."""
    body = {
        "code": exc.code.name,
        "message": client_text(exc.message),
        "reason": exc.reason,
        "field_violations": [{"field": f, "description": client_text(d)} for f, d in exc.field_violations],
    }
    if status is None:
        if isinstance(exc, UnsupportedMediaType):
            status = 415
        else:
            status = 413 if isinstance(exc, TooLarge) else HTTP_STATUS.get(exc.code, 500)
    return JSONResponse(body, status_code=status, headers=headers)


def http_error_response(exc: HTTPException) -> JSONResponse:
    """Starlette's own errors (unknown path, wrong method, unparsable form) as an ErrorBody."""
    code, reason = HTTP_ERRORS.get(exc.status_code, (grpc.StatusCode.UNKNOWN, "HTTP_ERROR"))
    error = ServiceError(str(exc.detail), reason=reason)
    error.code = code
    return error_response(error, exc.status_code, exc.headers)


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


#: Where /docs and /redoc load Swagger UI's and ReDoc's assets from: the gateway itself (the
#: fastapi-offline package ships them), not a CDN, so the docs work offline and call no one.
DOCS_ASSETS_URL = "/static-docs"


# --- shared state: what create_app puts on app.state, read through dependencies -------------------


def get_comparator(request: Request) -> Comparator:
    """The gateway's fan-out (app.state.comparator)."""
    comparator: Comparator = request.app.state.comparator
    return comparator


def get_settings(request: Request) -> GatewaySettings:
    """The gateway's settings (app.state.settings): the token and the message limit."""
    settings: GatewaySettings = request.app.state.settings
    return settings


ComparatorDep = Annotated[Comparator, Depends(get_comparator)]
SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]


async def read_compare(request: Request, settings: SettingsDep) -> tuple[cs.CompareRequest, float | None]:
    """The CompareRequest of a POST /v1/compare body (multipart or JSON), and its deadline."""
    limit = settings.max_message_bytes
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form(max_part_size=limit)
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise InvalidArgument("multipart field 'image' must be a file", field="image")
        data = await upload.read()
        task = parse_task(form_text(form, "task"))
        options_text = form_text(form, "options")
        options = parse_options(options_text if "options" in form else "{}")
        names = split_list(form_text(form, "model_names"))
        labels_text = form_text(form, "open_vocabulary_labels")
        open_labels = parse_labels(labels_text) if "open_vocabulary_labels" in form else []
        timeout = None
    elif content_type == "application/json":
        try:
            body = CompareJson.model_validate_json(await request.body())
        except ValidationError as exc:
            raise invalid_body(exc) from None
        try:
            data = base64.b64decode(body.image_base64, validate=True)
        except ValueError:  # binascii.Error, or a character outside ASCII
            raise InvalidArgument(BASE64_MESSAGE, field="image_base64") from None
        task, options = parse_task(body.task), parse_options(body.options)
        names, open_labels, timeout = body.model_names, body.open_vocabulary_labels, body.timeout_s
    else:
        raise UnsupportedMediaType(
            f"content type {content_type or '(none)'} is not supported; send application/json "
            "(image_base64) or multipart/form-data (an image file)",
            reason="UNSUPPORTED_MEDIA_TYPE",
        )
    if len(data) > limit:
        raise TooLarge(f"image is {len(data)} bytes, over the limit of {limit}", field="image")
    message = cs.CompareRequest(
        image=pb.Image(encoded=data),
        task=task,
        options=options,
        model_names=names,
        open_vocabulary_labels=open_labels,
    )
    return message, timeout


#: A POST /v1/compare body, read (the body is read by read_compare, not by FastAPI: the schema of
#: both bodies is COMPARE_BODY, given to each operation as its requestBody).
CompareInput = Annotated[tuple[cs.CompareRequest, float | None], Depends(read_compare)]


# --- errors, limits and the token, for every path ---------------------------------------------------


async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
    return error_response(exc)


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return http_error_response(exc)


async def limits_and_auth(request: Request, call_next: Any) -> Response:
    """The bearer token and the body limit on /v1/; nothing unexpected reaches the caller but an id."""
    if request.url.path.startswith("/v1/"):
        settings = get_settings(request)
        limit = settings.max_message_bytes
        if settings.auth_token is not None:
            token = settings.auth_token.get_secret_value()
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


# --- the routes ------------------------------------------------------------------------------------

#: The process's probes (no token: not under /v1/).
probes = APIRouter()
#: The JSON API, under the token and the body limit.
api = APIRouter(prefix="/v1")
#: The comparison page (its assets are mounted under /static by create_app).
page_routes = APIRouter(include_in_schema=False)


@probes.get("/healthz", summary="The gateway process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@probes.get(
    "/readyz",
    summary="At least one model service is serving",
    response_model=Ready,
    responses={503: {"model": Ready, "description": "no model service is serving"}},
)
async def readyz(comparator: ComparatorDep) -> JSONResponse:
    serving = [t.name for t in comparator.registry.targets.values() if t.serving]
    return JSONResponse({"serving": serving}, status_code=200 if serving else 503)


@api.get("/models", summary="The capability table, built from live Capabilities", responses=errors(401, 500))
async def models(comparator: ComparatorDep) -> dict[str, Any]:
    return to_json(comparator.list_models())


@api.get("/samples", summary="Bundled sample images", responses=errors(401, 500))
async def samples() -> list[str]:
    return sorted(p.name for p in SAMPLES_DIR.glob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})


def disposition(kind: str, stem: str, task: int, suffix: str) -> str:
    """The content-disposition of a comparison's answer: `kind` ("inline", "attachment") and the
    name to save it under, `<stem>-<the task's short name>.<suffix>`, which the page uses."""
    return f'{kind}; filename="{stem}-{task_name(task)}.{suffix}"'


@api.post(
    "/compare",
    summary="Compare every model serving the task on one image",
    description="A model that fails only fails its own result (its status is in the 200 answer); "
    "the error statuses below fail the whole call.",
    responses=errors(400, 401, 404, 413, 415, 429, 500, 503, 504),
    openapi_extra={"requestBody": COMPARE_BODY},
)
async def compare(given: CompareInput, comparator: ComparatorDep, reply: Response) -> dict[str, Any]:
    message, timeout = given
    reply.headers["content-disposition"] = disposition("inline", "comparison", message.task, "json")
    return to_json(await comparator.compare(message, timeout))


@api.post(
    "/compare/png",
    summary="Compare, and answer the side-by-side PNG (as `vcompare compare --out` draws it)",
    description="The same request as POST /v1/compare; the answer is one PNG with a panel per model "
    "(its output drawn on the image, under a header with its latency and status). A model that fails "
    "gets a grey panel; the error statuses below fail the whole call.",
    response_class=Response,
    responses={
        200: {
            "description": "the side-by-side picture",
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        },
        **errors(400, 401, 404, 413, 415, 429, 500, 503, 504),
    },
    openapi_extra={"requestBody": COMPARE_BODY},
)
async def compare_png(given: CompareInput, comparator: ComparatorDep) -> Response:
    message, timeout = given
    response = await comparator.compare(message, timeout)
    png = await asyncio.to_thread(draw_png, message.image.encoded, response)
    headers = {"content-disposition": disposition("attachment", "side_by_side", message.task, "png")}
    return Response(png, media_type="image/png", headers=headers)


@page_routes.get("/")
async def page() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html")


@page_routes.get("/favicon.ico")
async def favicon() -> FileResponse:  # the page links /static/favicon.svg; browsers also ask here
    return FileResponse(WEB_DIR / "favicon.svg", media_type="image/svg+xml")


def live_schema(app: FastAPI, built: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """/openapi.json: FastAPI's document (`built`, made once) narrowed to what the gateway can
    answer now (visioncompare.gateway.http_schema.live_openapi)."""
    return live_openapi(built(), app.state.comparator)


def create_app(comparator: Comparator, settings: GatewaySettings) -> FastAPI:
    """The HTTP app over `comparator`: the routers above, sharing it and `settings` through app.state."""
    app = FastAPIOffline(
        static_url=DOCS_ASSETS_URL,
        title="visioncompare gateway",
        summary="Run one image through every model that serves a task; compare the outputs side by side.",
        version="1",
        exception_handlers={ServiceError: service_error, HTTPException: http_error},
    )
    app.state.comparator = comparator
    app.state.settings = settings
    app.middleware("http")(limits_and_auth)
    for router in (probes, api, page_routes):
        app.include_router(router)
    # Not a catch-all mount at "/": that would answer every API path's wrong method (405) for itself.
    app.openapi = partial(live_schema, app, app.openapi)  # type: ignore[method-assign]
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="web")
    app.mount("/samples", StaticFiles(directory=SAMPLES_DIR, check_dir=False), name="samples")
    return app
