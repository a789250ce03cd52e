"""The one exception hierarchy of the project.

Domain code raises these; `visioncompare.runtime.interceptors.RuntimeInterceptor` is the
only place that turns them into gRPC statuses with google.rpc rich details.
Anything else that escapes a handler becomes INTERNAL with a generic message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import grpc

ERROR_DOMAIN = "visioncompare"

# What a message fit for clients never holds: Python reprs, memory addresses, server paths.
_REPR = re.compile(r"<(?:[\w.]*\.)?(?P<name>\w+)? ?[^<>]*?(?:object at|at 0x|class '|function |module ')[^<>]*>")
_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{4,}\b")
_PATH = re.compile(r"(?<![\w:/.~-])(?:~|\.{1,2})?/(?:[^\s/:'\"<>()\[\],;]+/)+(?P<base>[^\s/:'\"<>()\[\],;]*)")


def client_text(text: str) -> str:
    """`text` with any Python repr, memory address or filesystem path taken out.

    The guard every message that leaves a server passes through (the gRPC
    interceptor, the gateway's HTTP errors and per-model statuses): a message
    built from a library's exception text cannot leak internals.
    """
    text = _REPR.sub(lambda m: f"a {m['name']}" if m["name"] else "an object", text)
    text = _ADDRESS.sub("an address", text)
    return _PATH.sub(lambda m: m["base"] or "a path", text)


class ServiceError(Exception):
    """Base class: a failure with a canonical code and a message fit for clients."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        field_violations: Sequence[tuple[str, str]] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.field_violations = list(field_violations)
        self.metadata = dict(metadata or {})


class InvalidArgument(ServiceError):
    """The request is malformed; the message says what to fix."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        reason: str | None = None,
        field_violations: Sequence[tuple[str, str]] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        violations = field_violations or ([(field, message)] if field else [])
        super().__init__(message, reason=reason, field_violations=violations, metadata=metadata)


class Unimplemented(ServiceError):
    """The model does not serve this task."""

    code = grpc.StatusCode.UNIMPLEMENTED
    reason = "TASK_NOT_SERVED"


class FailedPrecondition(ServiceError):
    """The system is not in a state to run this request (e.g. no model serves the task)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class ModelNotReady(ServiceError):
    """The model is loading, warming up or draining."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "MODEL_NOT_READY"


class Overloaded(ServiceError):
    """The inference queue is full; retry with backoff."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "QUEUE_FULL"


class TooLarge(InvalidArgument):
    """An input exceeds a configured size limit (e.g. pixels); retrying won't help."""

    reason = "INPUT_TOO_LARGE"


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class ConfigurationError(Exception):
    """Bad settings or missing weights at start-up. Never sent to clients."""
