"""GRPCInferenceService (the Open Inference Protocol) over the runtime's model and scheduler.

A second protocol front-end beside `VisionModelServicer`: it translates tensors to
the runtime's domain types with `services.runtime.oip.codec`, lets the model validate,
submits through the same BatchScheduler and translates the Prediction back to tensors.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from inference import grpc_predict_v2_pb2 as oip
from inference import grpc_predict_v2_pb2_grpc as oip_grpc
from inference import model_config_pb2 as config_pb

from services.runtime.errors import InvalidArgument, ModelNotReady, NotFound
from services.runtime.interceptors import task_var
from services.runtime.logs import request_id_var
from services.runtime.oip.codec import (
    CLIENT_PARAMETERS,
    IMAGE,
    MASK_FORMATS,
    MODEL_VERSION,
    OUTPUTS,
    PARAMETERS,
    TASKS_BY_SLUG,
    bad_input,
    decode_image_tensor,
    decode_input,
    inputs_of,
    model_name,
    outputs_of,
    param_value,
    parameter,
    parameters_of,
    prompts_and_text,
)
from services.runtime.servicer import VisionModelServicer
from services.runtime.types import (
    AutomaticOptions,
    Capabilities,
    InferenceRequest,
    Task,
    TaskCapability,
    TaskOption,
    TaskOptions,
)

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
    """GRPCInferenceService beside `vision` (the project's servicer), sharing its model,
    scheduler, readiness, capabilities, image limit and decoding threads."""

    def __init__(self, vision: VisionModelServicer, *, server_version: str) -> None:
        self.vision = vision
        self.model = vision.model
        self.scheduler = vision.scheduler
        self.server_version = server_version
        self.stats: dict[Task, ModelStats] = {}

    # --- health and metadata ---

    @property
    def ready(self) -> bool:
        """Loaded, warm, not draining and the inference worker healthy: as grpc.health.v1 SERVING."""
        return self.vision.ready and self.scheduler.healthy

    async def ServerLive(self, request: oip.ServerLiveRequest, context: Context) -> oip.ServerLiveResponse:
        return oip.ServerLiveResponse(live=True)

    async def ServerReady(self, request: oip.ServerReadyRequest, context: Context) -> oip.ServerReadyResponse:
        return oip.ServerReadyResponse(ready=self.ready)

    async def ServerMetadata(self, request: oip.ServerMetadataRequest, context: Context) -> oip.ServerMetadataResponse:
        return oip.ServerMetadataResponse(
            name=f"visioncompare-{self.model.name}", version=self.server_version, extensions=EXTENSIONS
        )

    def _task(self, name: str, version: str) -> Task:
        """The task an OIP model name stands for; NOT_FOUND unless this server serves it."""
        prefix, _, slug = name.partition(".")
        task = TASKS_BY_SLUG.get(slug) if prefix == self.model.name else None
        if task is not None:
            task_var.set(task.name)
        served = self._served() if self.vision.ready else None  # before load: any task may be
        if task is None or (served is not None and task not in served):
            models = ", ".join(model_name(self.model.name, t) for t in (served or sorted(Task)))
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

    def _served(self) -> frozenset[Task]:
        return frozenset(t.task for t in self._capabilities().tasks)

    def _capabilities(self) -> Capabilities:
        if not self.vision.ready:
            raise ModelNotReady(f"{self.model.name} is not serving yet (loading or warming up); retry shortly")
        return self.vision.capabilities

    def model_names(self) -> list[str]:
        """The OIP models this server serves (after load)."""
        return [model_name(self.model.name, t.task) for t in self._capabilities().tasks]

    async def ModelReady(self, request: oip.ModelReadyRequest, context: Context) -> oip.ModelReadyResponse:
        self._task(request.name, request.version)
        return oip.ModelReadyResponse(ready=self.ready)

    async def ModelMetadata(self, request: oip.ModelMetadataRequest, context: Context) -> oip.ModelMetadataResponse:
        task = self._task(request.name, request.version)
        caps = self._capabilities()
        capability = caps.capability(task)
        assert capability is not None  # _task checked it is served
        return oip.ModelMetadataResponse(
            name=request.name,
            versions=[MODEL_VERSION],
            platform=f"visioncompare_{caps.runtime.backend}",
            inputs=[t.metadata() for t in inputs_of(capability)],
            outputs=[t.metadata() for t in OUTPUTS[task]],
        )

    async def ModelConfig(self, request: oip.ModelConfigRequest, context: Context) -> oip.ModelConfigResponse:
        """Triton's extension, as perf_analyzer reads it: max_batch_size 0 (requests carry no batch
        dimension; the server batches requests itself), the inputs and outputs of ModelMetadata,
        every input but IMAGE optional."""
        task = self._task(request.name, request.version)
        caps = self._capabilities()
        capability = caps.capability(task)
        assert capability is not None
        config = config_pb.ModelConfig(
            name=request.name,
            platform=f"visioncompare_{caps.runtime.backend}",
            backend="visioncompare",
            max_batch_size=0,
            input=[
                config_pb.ModelInput(name=t.name, data_type=t.config_type, dims=t.shape, optional=t is not IMAGE)
                for t in inputs_of(capability)
            ],
            output=[config_pb.ModelOutput(name=t.name, data_type=t.config_type, dims=t.shape) for t in OUTPUTS[task]],
        )
        return oip.ModelConfigResponse(config=config)

    async def ModelStatistics(
        self, request: oip.ModelStatisticsRequest, context: Context
    ) -> oip.ModelStatisticsResponse:
        """Triton's extension: one model's statistics, or every served model's without a name."""
        if request.name:
            tasks = [self._task(request.name, request.version)]
        else:
            tasks = sorted(self._served())
        return oip.ModelStatisticsResponse(
            model_stats=[self.stats.get(t, ModelStats()).to_proto(model_name(self.model.name, t)) for t in tasks]
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
        capability = self._capabilities().capability(task)
        assert capability is not None
        name = model_name(self.model.name, task)
        options, mask_format, timeout_s = self._parameters(request, task, capability, name)
        wanted = self._requested_outputs(request, task, name)
        tensors = self._inputs(request, capability, name)
        image_bytes = tensors.pop("IMAGE")
        options = prompts_and_text(options, tensors)
        # The project's servicer's decoding threads: one bound on decoding work for both protocols.
        image = await asyncio.get_running_loop().run_in_executor(
            self.vision._decoder, decode_image_tensor, image_bytes[0], self.vision.max_image_pixels
        )
        decoded = time.perf_counter()
        inference = InferenceRequest(task=task, image=image, options=options, request_id=request_id_var.get())
        self.model.validate(inference)
        remaining = context.time_remaining()
        if timeout_s is not None:
            remaining = timeout_s if remaining is None else min(remaining, timeout_s)
        prediction = await self.scheduler.submit(inference, remaining)
        answered = time.perf_counter()
        if mask_format == "uint8":  # decoding every mask is CPU work: off the event loop
            outputs = await asyncio.get_running_loop().run_in_executor(
                self.vision._decoder, outputs_of, prediction, inference, mask_format
            )
        else:
            outputs = outputs_of(prediction, inference, mask_format)
        caps = self.vision.capabilities
        response = oip.ModelInferResponse(model_name=name, model_version=MODEL_VERSION, id=request.id)
        params: dict[str, int | float | str | bool] = {
            "request_id": inference.request_id,
            "image_width": inference.width,
            "image_height": inference.height,
            "batch_size": prediction.batch_size,
            "queue_ms": prediction.timing.queue_ms,
            "inference_ms": prediction.timing.inference_ms,
            "weights": caps.runtime.weights,
            "pretrained": caps.runtime.pretrained,
            "backend": caps.runtime.backend,
            "warnings": "\n".join(dict.fromkeys([*caps.runtime.warnings, *prediction.warnings])),
        }
        for key, value in params.items():
            response.parameters[key].CopyFrom(parameter(value))
        for out_name in wanted or [t.name for t in OUTPUTS[task]]:
            out = outputs[out_name]
            tensor = response.outputs.add(name=out_name, datatype=out.datatype, shape=out.shape)
            for key, value in (out.parameters or {}).items():
                tensor.parameters[key].CopyFrom(parameter(value))
            response.raw_output_contents.append(out.data)
        done = time.perf_counter()
        t = prediction.timing
        stats.success += 1
        stats.success_s += done - start
        stats.queue_s += t.queue_ms / 1000
        stats.input_s += decoded - start + t.preprocess_ms / 1000
        stats.infer_s += t.inference_ms / 1000
        stats.output_s += t.postprocess_ms / 1000 + done - answered
        stats.executions += 1 / max(prediction.batch_size, 1)
        return response

    def _parameters(
        self, request: oip.ModelInferRequest, task: Task, capability: TaskCapability, name: str
    ) -> tuple[TaskOptions, str, float | None]:
        allowed = parameters_of(task, capability)
        values: dict[str, Any] = {}
        timeout_s = None
        for key in sorted(request.parameters):
            value = request.parameters[key]
            if key in CLIENT_PARAMETERS:
                if key == "timeout" and value.WhichOneof("parameter_choice") in ("int64_param", "uint64_param"):
                    timeout_s = max(int(getattr(value, value.WhichOneof("parameter_choice"))), 0) / 1e6
                continue
            if key not in allowed:
                what = "is unknown" if key not in PARAMETERS else f"does not apply to model {name}"
                raise InvalidArgument(
                    f"parameter {key!r} {what}; model {name} takes: {', '.join(allowed) or 'no parameters'}",
                    field=f"parameters.{key}",
                )
            values[key] = param_value(key, value, PARAMETERS[key].kind)
        mask_format = values.pop("mask_format", "rle")
        if mask_format not in MASK_FORMATS:
            raise InvalidArgument(
                f"parameter 'mask_format' is {mask_format!r}; one of {', '.join(MASK_FORMATS)}",
                field="parameters.mask_format",
            )
        automatic = {k: values.pop(k) for k in list(values) if PARAMETERS[k].option == TaskOption.AUTOMATIC}
        options = TaskOptions(**values, automatic=AutomaticOptions(**automatic))
        return options, mask_format, timeout_s

    def _requested_outputs(self, request: oip.ModelInferRequest, task: Task, name: str) -> list[str]:
        names = [t.name for t in OUTPUTS[task]]
        wanted = []
        for i, output in enumerate(request.outputs):
            if output.name not in names:
                raise InvalidArgument(
                    f"output {output.name!r} is not an output of model {name}; its outputs are: {', '.join(names)}",
                    field=f"outputs[{i}].name",
                )
            if output.parameters:
                keys = ", ".join(sorted(output.parameters))
                raise InvalidArgument(
                    f"output {output.name}: parameters ({keys}) are not supported; set mask_format on the request",
                    field=f"outputs[{i}].parameters",
                )
            wanted.append(output.name)
        return wanted

    def _inputs(
        self, request: oip.ModelInferRequest, capability: TaskCapability, name: str
    ) -> dict[str, np.ndarray | list[bytes]]:
        specs = {t.name: t for t in inputs_of(capability)}
        raw = list(request.raw_input_contents)
        if raw and len(raw) != len(request.inputs):
            raise InvalidArgument(
                f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: send one per input, in order",
                field="raw_input_contents",
            )
        tensors: dict[str, np.ndarray | list[bytes]] = {}
        for i, tensor in enumerate(request.inputs):
            spec = specs.get(tensor.name)
            if spec is None:
                raise InvalidArgument(
                    f"input {tensor.name!r} is not an input of model {name}; its inputs are: {', '.join(specs)}",
                    field=f"inputs.{tensor.name}",
                )
            if tensor.name in tensors:
                raise bad_input(tensor.name, "is given twice")
            if tensor.parameters:
                raise bad_input(
                    tensor.name, f"tensor parameters ({', '.join(sorted(tensor.parameters))}) are not supported"
                )
            tensors[tensor.name] = decode_input(spec, tensor, raw[i] if raw else None)
        if "IMAGE" not in tensors:
            raise bad_input("IMAGE", "is missing: send the encoded image file as BYTES, shape [1]")
        return tensors


def add_to_server(servicer: OipServicer, server: grpc.aio.Server) -> None:
    oip_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
