"""GRPCInferenceService (the Open Inference Protocol) over the runtime's data plane.

The second protocol front-end beside `VisionModelServicer`, on the same `DataPlane`
(`visioncompare.runtime.dataplane`): the same model, scheduler, readiness, capabilities, image
limit and decoding threads. It maps model names to tasks, reads tensors and parameters
into domain values and writes the answer as tensors (`visioncompare.runtime.oip.codec`), and
keeps the statistics of Triton's extension.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import grpc

from visioncompare.oip import grpc_predict_v2_pb2 as oip
from visioncompare.oip import grpc_predict_v2_pb2_grpc as oip_grpc
from visioncompare.runtime.dataplane import DataPlane, deadline_in
from visioncompare.runtime.errors import NotFound
from visioncompare.runtime.interceptors import task_var
from visioncompare.runtime.oip.codec import (
    MODEL_VERSION,
    TASKS_BY_SLUG,
    decode_image_tensor,
    infer_response,
    model_config,
    model_metadata,
    model_name,
    outputs_of,
    read_infer_request,
)
from visioncompare.runtime.types import Task, TaskCapability

Context = grpc.aio.ServicerContext[Any, Any]

SERVICE_NAME = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
#: What ServerMetadata lists: request parameters carry the task options; and two of Triton's
#: extensions, which perf_analyzer calls: ModelConfig and ModelStatistics.
EXTENSIONS = ("parameters", "model_configuration", "statistics")


def _duration(count: int, seconds: float) -> oip.StatisticDuration:
    return oip.StatisticDuration(count=count, ns=max(int(seconds * 1e9), 0))


@dataclass
class ModelStats:
    """What ModelStatistics reports for one OIP model: its ModelInfer calls (VisionModelService
    requests for the same task are in the Prometheus metrics, not here)."""

    success: int = 0
    success_s: float = 0.0
    fail: int = 0
    fail_s: float = 0.0
    queue_s: float = 0.0
    input_s: float = 0.0  # image decoding and the model's preprocessing
    infer_s: float = 0.0
    output_s: float = 0.0  # the model's postprocessing and building the output tensors
    executions: float = 0.0  # each request is 1/batch size of one model execution
    last_inference_ms: int = 0

    def to_proto(self, name: str) -> oip.ModelStatistics:
        n = self.success
        return oip.ModelStatistics(
            name=name,
            version=MODEL_VERSION,
            last_inference=self.last_inference_ms,
            inference_count=n,
            execution_count=round(self.executions),
            inference_stats=oip.InferStatistics(
                success=_duration(n, self.success_s),
                fail=_duration(self.fail, self.fail_s),
                queue=_duration(n, self.queue_s),
                compute_input=_duration(n, self.input_s),
                compute_infer=_duration(n, self.infer_s),
                compute_output=_duration(n, self.output_s),
                cache_hit=_duration(0, 0),
                cache_miss=_duration(0, 0),
            ),
        )


class OipServicer(oip_grpc.GRPCInferenceServiceServicer):
    """GRPCInferenceService over `plane`, the data plane VisionModelService runs on too."""

    def __init__(self, plane: DataPlane, *, server_version: str) -> None:
        self.plane = plane
        self.server_version = server_version
        self.stats: dict[Task, ModelStats] = {}

    # --- health and metadata ---

    @property
    def ready(self) -> bool:
        """Loaded, warm, not draining and the inference worker healthy: as grpc.health.v1 SERVING."""
        return self.plane.serving

    async def ServerLive(self, request: oip.ServerLiveRequest, context: Context) -> oip.ServerLiveResponse:
        return oip.ServerLiveResponse(live=True)

    async def ServerReady(self, request: oip.ServerReadyRequest, context: Context) -> oip.ServerReadyResponse:
        return oip.ServerReadyResponse(ready=self.ready)

    async def ServerMetadata(self, request: oip.ServerMetadataRequest, context: Context) -> oip.ServerMetadataResponse:
        return oip.ServerMetadataResponse(
            name=f"visioncompare-{self.plane.name}", version=self.server_version, extensions=EXTENSIONS
        )

    def _task(self, name: str, version: str) -> Task:
        """The task an OIP model name stands for; NOT_FOUND unless this server serves it."""
        prefix, _, slug = name.partition(".")
        task = TASKS_BY_SLUG.get(slug) if prefix == self.plane.name else None
        if task is not None:
            task_var.set(task.name)
        served = self.plane.served_tasks() if self.plane.ready else None  # before load: any task may be
        if task is None or (served is not None and task not in served):
            models = ", ".join(model_name(self.plane.name, t) for t in (served or sorted(Task)))
            raise NotFound(
                f"no model {name!r} on this server; its models are: {models}",
                metadata={"model": name},
            )
        if version not in ("", MODEL_VERSION):
            raise NotFound(
                f"model {name!r} has no version {version!r}; its only version is {MODEL_VERSION!r}",
                metadata={"model": name, "version": version},
            )
        return task

    def _capability(self, task: Task) -> TaskCapability:
        capability = self.plane.capabilities.capability(task)
        assert capability is not None  # _task checked it is served
        return capability

    def model_names(self) -> list[str]:
        """The OIP models this server serves (after load)."""
        return [model_name(self.plane.name, t.task) for t in self.plane.capabilities.tasks]

    async def ModelReady(self, request: oip.ModelReadyRequest, context: Context) -> oip.ModelReadyResponse:
        self._task(request.name, request.version)
        return oip.ModelReadyResponse(ready=self.ready)

    async def ModelMetadata(self, request: oip.ModelMetadataRequest, context: Context) -> oip.ModelMetadataResponse:
        task = self._task(request.name, request.version)
        capability = self._capability(task)
        return model_metadata(request.name, task, capability, self.plane.capabilities.runtime.engine)

    async def ModelConfig(self, request: oip.ModelConfigRequest, context: Context) -> oip.ModelConfigResponse:
        """Triton's extension, which perf_analyzer reads (`codec.model_config`)."""
        task = self._task(request.name, request.version)
        capability = self._capability(task)
        return model_config(request.name, task, capability, self.plane.capabilities.runtime.engine)

    async def ModelStatistics(
        self, request: oip.ModelStatisticsRequest, context: Context
    ) -> oip.ModelStatisticsResponse:
        """Triton's extension: one model's statistics, or every served model's without a name."""
        if request.name:
            tasks = [self._task(request.name, request.version)]
        else:
            tasks = sorted(self.plane.served_tasks())
        return oip.ModelStatisticsResponse(
            model_stats=[self.stats.get(t, ModelStats()).to_proto(model_name(self.plane.name, t)) for t in tasks]
        )

    # --- inference ---

    async def ModelInfer(self, request: oip.ModelInferRequest, context: Context) -> oip.ModelInferResponse:
        task = self._task(request.model_name, request.model_version)
        stats = self.stats.setdefault(task, ModelStats())
        start = time.perf_counter()
        try:
            return await self._infer(request, task, context, stats)
        except BaseException:
            stats.fail += 1
            stats.fail_s += time.perf_counter() - start
            raise
        finally:
            stats.last_inference_ms = int(time.time() * 1000)

    async def _infer(
        self, request: oip.ModelInferRequest, task: Task, context: Context, stats: ModelStats
    ) -> oip.ModelInferResponse:
        start = time.perf_counter()
        name = model_name(self.plane.name, task)
        call = read_infer_request(request, task, self._capability(task), name)
        remaining = context.time_remaining()
        if call.timeout_s is not None:  # the `timeout` parameter bounds the wait like a deadline
            remaining = call.timeout_s if remaining is None else min(remaining, call.timeout_s)
        deadline = deadline_in(remaining)
        read = time.perf_counter()
        inference = await self.plane.infer(task, call.image, call.options, deadline, decode=decode_image_tensor)
        answered = time.perf_counter()
        prediction = inference.prediction
        if call.mask_format == "uint8":  # decoding every mask is CPU work: off the event loop
            outputs = await self.plane.run_cpu(outputs_of, prediction, inference.request, call.mask_format)
        else:
            outputs = outputs_of(prediction, inference.request, call.mask_format)
        response = infer_response(request.id, name, inference, outputs, call.outputs)
        done = time.perf_counter()
        t = prediction.timing
        stats.success += 1
        stats.success_s += done - start
        stats.queue_s += t.queue_ms / 1000
        stats.input_s += read - start + inference.decode_s + t.preprocess_ms / 1000
        stats.infer_s += t.inference_ms / 1000
        stats.output_s += t.postprocess_ms / 1000 + done - answered
        stats.executions += 1 / max(prediction.batch_size, 1)
        return response


def add_to_server(servicer: OipServicer, server: grpc.aio.Server) -> None:
    oip_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
