"""The one interceptor: request ids, bearer-token auth, error mapping and RPC metrics.

Domain code raises `ServiceError`s; here they become canonical status codes with
google.rpc rich details (ErrorInfo, BadRequest). Anything else is logged with
its stack trace and the request id, and the client sees only a generic INTERNAL.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from visioncompare.runtime.errors import ERROR_DOMAIN, ServiceError, Unauthenticated, client_text
from visioncompare.runtime.logs import request_id_var
from visioncompare.runtime.metrics import ServerMetrics

log = logging.getLogger(__name__)

#: Set by servicers so that metrics can break requests down by task.
task_var: contextvars.ContextVar[str] = contextvars.ContextVar("task", default="")

REQUEST_ID_KEY = "x-request-id"
UNAUTHENTICATED_METHODS = ("/grpc.health.v1.Health/",)


def to_status(error: ServiceError) -> status_pb2.Status:
    """A ServiceError as google.rpc.Status with ErrorInfo and BadRequest details.

    Message and field descriptions pass through `client_text`: no repr, memory
    address or server path reaches a client, whatever a domain error was built from.
    """
    details = []
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata))
    details.append(info)
    if error.field_violations:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=client_text(d))
                    for f, d in error.field_violations
                ]
            )
        )
        details.append(bad)
    return status_pb2.Status(code=error.code.value[0], message=client_text(error.message), details=details)


def internal_status(request_id: str) -> status_pb2.Status:
    return status_pb2.Status(
        code=code_pb2.INTERNAL, message=f"internal error; request id {request_id} is in the server log"
    )


def new_request_id() -> str:
    """16 random hex digits, for a request that brings no x-request-id."""
    return os.urandom(8).hex()


class RuntimeInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each method's handler once, on its first call, and reuses the wrapper: grpc.aio
    asks the interceptor for every RPC, and the method's handler is the same object each time."""

    def __init__(self, metrics: ServerMetrics | None, auth_token: str | None = None) -> None:
        self.metrics = metrics
        self.auth_token = auth_token
        #: method -> (its handler, that handler wrapped)
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]] = {}
        #: (rpc, task, code) -> the requests counter's child: prometheus_client's labels() costs
        #: more than the increment
        self._counters: dict[tuple[str, str, str], Any] = {}

    def _authorized(self, context: grpc.aio.ServicerContext[Any, Any]) -> bool:
        if self.auth_token is None:
            return True
        metadata = dict(context.invocation_metadata() or ())
        header = metadata.get("authorization", "")
        scheme, _, token = str(header).partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), self.auth_token.encode())

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None:
            return handler
        method: str = details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None and wrapped[0] is handler:
            return wrapped[1]
        new = self._wrap(handler, method)
        self._wrapped[method] = (handler, new)
        return new

    def _wrap(self, handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
        needs_auth = self.auth_token is not None and not method.startswith(UNAUTHENTICATED_METHODS)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method, needs_auth),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if needs_auth and handler.stream_stream is not None:  # server reflection
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_stream(handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _wrap_stream(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapper(request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if not self._authorized(context):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
            async for response in behavior(request_iterator, context):
                yield response

        return wrapper

    def _count(self, rpc: str, task: str, code: grpc.StatusCode) -> None:
        assert self.metrics is not None
        key = (rpc, task, code.name)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.metrics.requests.labels(rpc=rpc, task=task, code=code.name)
        counter.inc()

    def _wrap_unary(self, behavior: Callable[..., Any], method: str, needs_auth: bool) -> Callable[..., Any]:
        rpc = method.rsplit("/", 1)[-1]
        latency = self.metrics.request_latency.labels(rpc=rpc) if self.metrics is not None else None

        async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            metadata = dict(context.invocation_metadata() or ())
            request_id = str(metadata.get(REQUEST_ID_KEY) or new_request_id())
            request_id_var.set(request_id)
            task_var.set("")
            context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            status: status_pb2.Status | None = None
            try:
                if needs_auth and not self._authorized(context):
                    raise Unauthenticated(
                        "missing or wrong bearer token: send metadata 'authorization: Bearer <token>'"
                    )
                return await behavior(request, context)
            except ServiceError as exc:
                code = exc.code
                status = to_status(exc)
                log.info("%s failed: %s %s", rpc, exc.code.name, exc.message)
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                status = internal_status(request_id)
                log.exception("%s failed with an unexpected error", rpc)
            finally:
                if latency is not None:
                    self._count(rpc, task_var.get(), code)
                    latency.observe(time.perf_counter() - start)
            assert status is not None  # only reached from an except branch above
            grpc_status = rpc_status.to_status(status)
            await context.abort(
                grpc_status.code,
                grpc_status.details,
                trailing_metadata=(*grpc_status.trailing_metadata, (REQUEST_ID_KEY, request_id)),
            )

        return wrapper
