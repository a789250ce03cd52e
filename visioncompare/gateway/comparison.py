"""The fan-out: one request to every model serving its task, side by side.

Shared by the gRPC ComparisonService and the HTTP API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import CollectorRegistry, Counter, Histogram

from visioncompare.gateway.agreement import pairwise
from visioncompare.gateway.settings import GatewaySettings
from visioncompare.gateway.targets import Target, TargetRegistry
from visioncompare.runtime.convert import task_from_proto
from visioncompare.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    ModelNotReady,
    ServiceError,
    TooLarge,
    client_text,
)
from visioncompare.runtime.images import check_image
from visioncompare.runtime.metrics import LATENCY_BUCKETS
from visioncompare.runtime.tasks import Rpc, spec
from visioncompare.runtime.types import Task
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import comparison_service_pb2 as cs
from visioncompare.v1 import vision_model_service_pb2 as vms

log = logging.getLogger(__name__)

STATUS_DETAILS_KEY = "grpc-status-details-bin"


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "model_calls",
            "Model calls by model and status",
            ["model", "code"],
            namespace="visioncompare_gateway",
            registry=registry,
        )
        self.latency = Histogram(
            "model_latency_seconds",
            "Model call latency seen by the gateway",
            ["model"],
            namespace="visioncompare_gateway",
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )


def status_from_error(error: grpc.aio.AioRpcError) -> cs.ModelStatus:
    """The model service's status with its google.rpc rich details, passed through."""
    status = cs.ModelStatus(code=error.code().value[0], message=client_text(error.details() or ""))
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY:
            rich = status_pb2.Status.FromString(value)
            status.details.extend(rich.details)
    return status


@dataclass
class RichDetails:
    """A status's google.rpc ErrorInfo and BadRequest details, unpacked."""

    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def of(cls, status: cs.ModelStatus) -> RichDetails:
        out = cls()
        for detail in status.details:
            info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
            if detail.Unpack(info):
                out.reason, out.metadata = info.reason, dict(info.metadata)
            elif detail.Unpack(bad):
                out.violations.extend((v.field, v.description) for v in bad.field_violations)
        return out


def image_error(results: list[cs.ModelResult]) -> ServiceError | None:
    """The error to fail the whole call with when every model rejected the image itself.

    The gateway checks the header only; a file damaged past its header (e.g. a
    truncated JPEG) is found by the models when they decode it. When every model
    answered INVALID_ARGUMENT with a field violation on the image, the request is
    bad for all of them: it fails whole, with the first model's message and details.
    """
    rejected = []
    for result in results:
        details = RichDetails.of(result.status)
        about_image = any(f == "image" or f.startswith("image.") for f, _ in details.violations)
        if result.status.code != grpc.StatusCode.INVALID_ARGUMENT.value[0] or not about_image:
            return None
        rejected.append((result, details))
    if not rejected:
        return None
    first, details = rejected[0]
    names = ", ".join(r.model_name for r, _ in rejected)
    kind = TooLarge if details.reason == TooLarge.reason else InvalidArgument
    return kind(
        f"{first.status.message} (every model rejected the image: {names})",
        field_violations=details.violations,
        metadata=details.metadata,
    )


class Comparator:
    def __init__(self, settings: GatewaySettings, registry: TargetRegistry, metrics: GatewayMetrics) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics

    def available_tasks(self) -> list[str]:
        tasks = {
            t.task
            for target in self.registry.targets.values()
            if target.capabilities and target.serving
            for t in target.capabilities.tasks
        }
        return [pb.Task.Name(t) for t in sorted(tasks)]

    def select(self, request: cs.CompareRequest) -> list[Target]:
        """The targets to call: named ones, or every one that advertises the task."""
        targets = self.registry.targets
        unknown = [n for n in request.model_names if n not in targets]
        if unknown:
            raise InvalidArgument(f"unknown model(s) {unknown}; configured: {sorted(targets)}", field="model_names")
        candidates = [targets[n] for n in request.model_names] if request.model_names else list(targets.values())
        if not any(t.serving for t in candidates):
            down = "; ".join(f"{t.name}: {t.error}" for t in candidates)
            raise ModelNotReady(f"no model service is reachable ({down}); retry when they are up")
        chosen = [t for t in candidates if t.serves(request.task)]
        if not chosen:
            available = ", ".join(self.available_tasks()) or "none"
            raise FailedPrecondition(
                f"no model serves {pb.Task.Name(request.task)}; tasks available now: {available}",
                reason="TASK_NOT_AVAILABLE",
                metadata={"available_tasks": available},
            )
        return chosen

    @staticmethod
    def shared_vocabulary(
        task: int, options: pb.TaskOptions, targets: list[Target], open_vocabulary_labels: Sequence[str] = ()
    ) -> list[str]:
        """The labels for the open-vocabulary models taking part: the caller's
        `open_vocabulary_labels`, else the fixed-vocabulary model's label set.

        Empty when the caller gave options.labels or no open-vocabulary model takes part.
        """
        caps = [t.task_capability(task) for t in targets]
        if options.labels or not any(c is not None and c.vocabulary == vms.VOCABULARY_OPEN for c in caps):
            return []
        if open_vocabulary_labels:
            return list(open_vocabulary_labels)
        for target in targets:
            cap = target.task_capability(task)
            if cap is not None and cap.vocabulary == vms.VOCABULARY_FIXED and cap.label_names:
                return list(cap.label_names)
        return []

    async def compare(self, request: cs.CompareRequest, timeout_s: float | None) -> cs.CompareResponse:
        task = task_from_proto(request.task)  # validates
        check_image(request.image, self.settings.max_image_pixels)  # header only: format, size, pixel limit
        targets = self.select(request)
        labels_used = self.shared_vocabulary(request.task, request.options, targets, request.open_vocabulary_labels)
        budget = timeout_s if timeout_s is not None else self.settings.default_timeout_s
        deadline = time.monotonic() + budget - self.settings.deadline_margin_ms / 1000.0
        results = await asyncio.gather(*(self._call(t, request, task, labels_used, deadline) for t in targets))
        error = image_error(list(results))
        if error is not None:
            raise error
        return cs.CompareResponse(
            task=request.task,
            results=results,
            labels_used=labels_used,
            agreements=pairwise(results, self.settings.iou_threshold),
        )

    def _model_request(
        self, target: Target, request: cs.CompareRequest, task: Task, labels: list[str]
    ) -> tuple[Rpc, Any]:
        options = pb.TaskOptions()
        options.CopyFrom(request.options)
        cap = target.task_capability(task)
        if labels and cap is not None and cap.vocabulary == vms.VOCABULARY_OPEN:
            options.labels.extend(labels)
        rpc = spec(task).rpc
        return rpc, rpc.request(task, request.image, options)

    async def _call(
        self, target: Target, request: cs.CompareRequest, task: Task, labels: list[str], deadline: float
    ) -> cs.ModelResult:
        result = cs.ModelResult(model_name=target.name, endpoint=target.address)
        if not target.serving:
            result.status.CopyFrom(
                cs.ModelStatus(
                    code=grpc.StatusCode.UNAVAILABLE.value[0], message=client_text(f"model unavailable: {target.error}")
                )
            )
            self.metrics.calls.labels(model=target.name, code="UNAVAILABLE").inc()
            return result
        rpc, model_request = self._model_request(target, request, task, labels)
        start = time.monotonic()
        timeout = max(deadline - start, 0.001)
        code = grpc.StatusCode.OK
        try:
            response = await rpc.method(target.stub)(model_request, timeout=timeout, metadata=target.metadata)
            getattr(result, rpc.result_field).CopyFrom(response)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            result.status.CopyFrom(status_from_error(exc))
        finally:
            elapsed = time.monotonic() - start
            result.latency_ms = elapsed * 1000.0
            self.metrics.calls.labels(model=target.name, code=code.name).inc()
            self.metrics.latency.labels(model=target.name).observe(elapsed)
        return result

    def list_models(self) -> cs.ListModelsResponse:
        rows = []
        for target in self.registry.targets.values():
            row = cs.ModelRow(
                model_name=target.name,
                endpoint=target.address,
                state=cs.MODEL_STATE_SERVING if target.serving else cs.MODEL_STATE_UNAVAILABLE,
                error="" if target.serving else target.error,
            )
            if target.capabilities is not None:
                row.capabilities.CopyFrom(target.capabilities)
            rows.append(row)
        return cs.ListModelsResponse(models=rows)
