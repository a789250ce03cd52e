"""The Open Inference Protocol (KServe v2, `inference.GRPCInferenceService`) over the same runtime.

A second protocol front-end beside `VisionModelServicer`: it translates tensors to
the runtime's domain types (InferenceRequest, TaskOptions), lets the model validate,
submits through the same BatchScheduler and translates the Prediction back to
tensors. It is registered on the same grpc.aio server (`services.runtime.server`),
so the interceptor's bearer token, error codes and request metrics, the message
limits, TLS, health and the dynamic batcher are the project's own.

Models: one OIP model per served task, named `<service>.<task>`, e.g.
`maskrcnn.instance-segmentation` or `samclip.prompted-segmentation` (the task's
short name, as the gateway spells it); version "1". Its ModelMetadata lists the
inputs the model reads for that task and the outputs the task produces:

    inputs   IMAGE            BYTES [1]      the encoded file (JPEG, PNG, WebP, BMP, GIF, TIFF)
             LABELS           BYTES [-1]     text labels (tasks that take labels)
             PROMPT_TEMPLATES BYTES [-1]     CLIP prompt templates (SAM-CLIP's text tasks)
             POINTS           FP32 [-1, 2]   point prompts, pixels (prompted segmentation)
             POINT_LABELS     INT32 [-1]     1 foreground, 0 background (default: all 1)
             BOXES            FP32 [-1, 4]   box prompts, x1 y1 x2 y2 pixels
    outputs  BOXES FP32 [-1, 4], SCORES FP32 [-1], LABELS BYTES [-1] (detections), MASKS
             (COCO RLE counts, BYTES [-1]; UINT8 [-1, H, W] with mask_format=uint8),
             KEYPOINTS FP32 [-1, K, 3] (x, y, score) with KEYPOINT_NAMES BYTES [K],
             PREDICTED_IOU / STABILITY_SCORE FP32 [-1] (SAM), class LABELS, SCORES and
             SIMILARITIES (classification), LABEL_MAP UINT16 [H, W] with CLASS_NAMES
             BYTES [C] (semantic segmentation).

Task options are request parameters (`score_threshold`, `max_results`, ... and
`mask_format`); `OUTPUTS` and `PARAMETERS` below are the tables. Every output is
sent in `raw_output_contents`, BYTES elements each preceded by its length as a
4-byte little-endian unsigned integer, as the protocol says. A bad tensor (unknown
name, wrong datatype or shape, raw contents that do not match the shape, a missing
IMAGE) or parameter is INVALID_ARGUMENT naming it; an unknown model NOT_FOUND.

Two of Triton's extensions are served too, because perf_analyzer calls them:
ModelConfig (max_batch_size 0: requests carry no batch dimension, the server
batches requests itself; every input but IMAGE optional) and ModelStatistics (the
counts and durations of each model's ModelInfer calls).
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import grpc
import numpy as np
from inference import grpc_predict_v2_pb2 as oip
from inference import grpc_predict_v2_pb2_grpc as oip_grpc
from inference import model_config_pb2 as config_pb

from services.runtime.errors import InvalidArgument, ModelNotReady, NotFound, ServiceError
from services.runtime.images import decode_bytes
from services.runtime.interceptors import task_var
from services.runtime.logs import request_id_var
from services.runtime.masks import decode_rle
from services.runtime.servicer import VisionModelServicer
from services.runtime.types import (
    AutomaticOptions,
    Box,
    Capabilities,
    InferenceRequest,
    Instance,
    Point,
    Prediction,
    Task,
    TaskCapability,
    TaskOption,
    TaskOptions,
)

Context = grpc.aio.ServicerContext[Any, Any]

SERVICE_NAME = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
MODEL_VERSION = "1"
#: What ServerMetadata lists: request parameters carry the task options; and two of Triton's
#: extensions, which perf_analyzer calls: ModelConfig and ModelStatistics.
EXTENSIONS = ("parameters", "model_configuration", "statistics")

#: numpy dtypes of the numeric datatypes used here, little-endian as the protocol's raw contents are.
DTYPES: Mapping[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "INT32": np.dtype("<i4"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
}
#: The InferTensorContents field that holds each datatype's typed (non-raw) contents.
CONTENTS_FIELD: Mapping[str, str] = {
    "BYTES": "bytes_contents",
    "FP32": "fp32_contents",
    "INT32": "int_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
}


def task_slug(task: Task) -> str:
    """A task's short name, e.g. "instance-segmentation"."""
    return task.name.lower().replace("_", "-")


TASKS_BY_SLUG: Mapping[str, Task] = {task_slug(t): t for t in Task}


def model_name(service: str, task: Task) -> str:
    """The OIP model that runs `task` on `service`, e.g. "maskrcnn.instance-segmentation"."""
    return f"{service}.{task_slug(task)}"


@dataclass(frozen=True)
class Tensor:
    """One tensor of a model's metadata: name, datatype and shape (-1: any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def metadata(self) -> oip.ModelMetadataResponse.TensorMetadata:
        return oip.ModelMetadataResponse.TensorMetadata(name=self.name, datatype=self.datatype, shape=self.shape)

    @property
    def config_type(self) -> str:
        """The name of Triton's model-configuration DataType (BYTES is TYPE_STRING there)."""
        return config_pb.DataType.Name(config_pb.DataType.Value(f"TYPE_{self.datatype}".replace("BYTES", "STRING")))


# --- inputs -------------------------------------------------------------------------

IMAGE = Tensor("IMAGE", "BYTES", (1,))
LABELS_IN = Tensor("LABELS", "BYTES", (-1,))
PROMPT_TEMPLATES = Tensor("PROMPT_TEMPLATES", "BYTES", (-1,))
POINTS = Tensor("POINTS", "FP32", (-1, 2))
POINT_LABELS = Tensor("POINT_LABELS", "INT32", (-1,))
BOXES_IN = Tensor("BOXES", "FP32", (-1, 4))

#: The optional inputs each task option brings; a model's inputs for a task are IMAGE and
#: those of the options its capability accepts (TaskCapability.accepted_options).
OPTION_INPUTS: Mapping[TaskOption, tuple[Tensor, ...]] = {
    TaskOption.LABELS: (LABELS_IN,),
    TaskOption.PROMPT_TEMPLATES: (PROMPT_TEMPLATES,),
    TaskOption.PROMPTS: (POINTS, POINT_LABELS, BOXES_IN),
}


def inputs_of(capability: TaskCapability) -> tuple[Tensor, ...]:
    accepted = set(capability.accepted_options)
    return (IMAGE, *(t for o, tensors in OPTION_INPUTS.items() if o in accepted for t in tensors))


# --- outputs ------------------------------------------------------------------------

BOXES = Tensor("BOXES", "FP32", (-1, 4))
SCORES = Tensor("SCORES", "FP32", (-1,))
LABELS = Tensor("LABELS", "BYTES", (-1,))
MASKS = Tensor("MASKS", "BYTES", (-1,))  # COCO RLE; UINT8 [-1, H, W] with mask_format=uint8
KEYPOINTS = Tensor("KEYPOINTS", "FP32", (-1, -1, 3))
KEYPOINT_NAMES = Tensor("KEYPOINT_NAMES", "BYTES", (-1,))
PREDICTED_IOU = Tensor("PREDICTED_IOU", "FP32", (-1,))
STABILITY_SCORE = Tensor("STABILITY_SCORE", "FP32", (-1,))
SIMILARITIES = Tensor("SIMILARITIES", "FP32", (-1,))
LABEL_MAP = Tensor("LABEL_MAP", "UINT16", (-1, -1))
CLASS_NAMES = Tensor("CLASS_NAMES", "BYTES", (-1,))

#: The outputs of each task, in the order a response sends them (all, unless the request names some).
OUTPUTS: Mapping[Task, tuple[Tensor, ...]] = {
    Task.OBJECT_DETECTION: (BOXES, SCORES, LABELS),
    Task.INSTANCE_SEGMENTATION: (BOXES, SCORES, LABELS, MASKS),
    Task.KEYPOINT_DETECTION: (BOXES, SCORES, LABELS, KEYPOINTS, KEYPOINT_NAMES),
    Task.ZERO_SHOT_CLASSIFICATION: (LABELS, SCORES, SIMILARITIES),
    Task.PROMPTED_SEGMENTATION: (BOXES, SCORES, MASKS, PREDICTED_IOU),
    Task.AUTOMATIC_SEGMENTATION: (BOXES, SCORES, MASKS, PREDICTED_IOU, STABILITY_SCORE),
    Task.SEMANTIC_SEGMENTATION: (LABEL_MAP, CLASS_NAMES),
}


# --- parameters ---------------------------------------------------------------------


@dataclass(frozen=True)
class Parameter:
    """A request parameter: the task option it sets (None: a protocol choice) and its type."""

    name: str
    option: TaskOption | None
    kind: type  # float, int, bool or str


_O = TaskOption
PARAMETERS: Mapping[str, Parameter] = {
    p.name: p
    for p in (
        Parameter("score_threshold", _O.SCORE_THRESHOLD, float),
        Parameter("max_results", _O.MAX_RESULTS, int),
        Parameter("mask_threshold", _O.MASK_THRESHOLD, float),
        Parameter("nms_iou_threshold", _O.NMS_IOU_THRESHOLD, float),
        Parameter("min_size", _O.RESIZE, int),
        Parameter("max_size", _O.RESIZE, int),
        Parameter("multimask_output", _O.PROMPTS, bool),
        Parameter("points_per_side", _O.AUTOMATIC, int),
        Parameter("pred_iou_thresh", _O.AUTOMATIC, float),
        Parameter("stability_score_thresh", _O.AUTOMATIC, float),
        Parameter("min_mask_region_area", _O.AUTOMATIC, int),
        Parameter("mask_format", None, str),  # "rle" (default) or "uint8"; tasks with MASKS
    )
}
MASK_FORMATS = ("rle", "uint8")
#: Request parameters Triton's clients set themselves: `timeout` (microseconds) bounds the
#: wait like a deadline, `priority` is accepted and ignored (one queue).
CLIENT_PARAMETERS = ("timeout", "priority")


def parameters_of(task: Task, capability: TaskCapability) -> tuple[str, ...]:
    accepted = set(capability.accepted_options)
    names = [p.name for p in PARAMETERS.values() if p.option in accepted]
    if MASKS in OUTPUTS[task]:
        names.append("mask_format")
    return tuple(names)


def _param_value(name: str, value: oip.InferParameter, kind: type) -> Any:
    which = value.WhichOneof("parameter_choice")
    raw = getattr(value, which) if which else None
    if kind is bool and which == "bool_param":
        return raw
    if kind is int and which in ("int64_param", "uint64_param"):
        return int(raw)  # type: ignore[arg-type]
    if kind is float and which in ("double_param", "int64_param", "uint64_param"):
        return float(raw)  # type: ignore[arg-type]
    if kind is str and which == "string_param":
        return raw
    wanted = {bool: "bool_param", int: "int64_param", float: "double_param", str: "string_param"}[kind]
    raise InvalidArgument(
        f"parameter {name!r} must be a {kind.__name__} ({wanted}), not {which or 'empty'}",
        field=f"parameters.{name}",
    )


# --- tensor decoding and encoding -------------------------------------------------------


def _bad(tensor: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"input {tensor}: {message}", field=f"inputs.{tensor}")


def split_bytes(raw: bytes, count: int, tensor: str) -> list[bytes]:
    """The elements of a raw BYTES tensor: each a 4-byte little-endian length, then its bytes."""
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise _bad(tensor, f"raw contents end inside an element's 4-byte length prefix (at byte {offset})")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise _bad(tensor, f"raw element {len(items)} claims {size} bytes but only {len(raw) - offset} remain")
        items.append(raw[offset : offset + size])
        offset += size
    if len(items) != count:
        raise _bad(tensor, f"raw contents hold {len(items)} BYTES elements; its shape says {count}")
    return items


def join_bytes(items: Iterable[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def _check_shape(spec: Tensor, tensor: oip.ModelInferRequest.InferInputTensor) -> tuple[int, ...]:
    shape = tuple(int(d) for d in tensor.shape)
    expected = "[" + ", ".join(str(d) for d in spec.shape) + "]"
    if (
        len(shape) != len(spec.shape)
        or any(d < 0 for d in shape)
        or any(want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True))
    ):
        raise _bad(spec.name, f"shape {list(shape)} does not fit {expected} (-1: any size)")
    return shape


def decode_input(
    spec: Tensor, tensor: oip.ModelInferRequest.InferInputTensor, raw: bytes | None
) -> np.ndarray | list[bytes]:
    """One input tensor as numpy (numeric) or a list of bytes (BYTES), checked against its spec."""
    if tensor.datatype != spec.datatype:
        raise _bad(spec.name, f"datatype {tensor.datatype or '(none)'} is not {spec.datatype}")
    shape = _check_shape(spec, tensor)
    count = int(np.prod(shape, dtype=np.int64))
    typed = getattr(tensor.contents, CONTENTS_FIELD[spec.datatype])
    if raw is not None and tensor.HasField("contents") and tensor.contents.ByteSize():
        raise _bad(spec.name, "has both contents and raw_input_contents; send one")
    if spec.datatype == "BYTES":
        if raw is not None:
            return split_bytes(raw, count, spec.name)
        if len(typed) != count:
            raise _bad(spec.name, f"contents hold {len(typed)} elements; its shape {list(shape)} says {count}")
        return list(typed)
    dtype = DTYPES[spec.datatype]
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise _bad(
                spec.name,
                f"raw contents have {len(raw)} bytes; shape {list(shape)} of {spec.datatype} needs "
                f"{count * dtype.itemsize}",
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    if len(typed) != count:
        raise _bad(spec.name, f"contents hold {len(typed)} elements; its shape {list(shape)} says {count}")
    return np.asarray(typed, dtype=dtype).reshape(shape)


@dataclass
class _Output:
    tensor: Tensor
    shape: tuple[int, ...]
    data: bytes
    datatype: str = ""
    parameters: Mapping[str, int | str] | None = None


def _numeric(tensor: Tensor, values: Any, shape: tuple[int, ...], datatype: str | None = None) -> _Output:
    datatype = datatype or tensor.datatype
    array = np.asarray(values, dtype=DTYPES[datatype]).reshape(shape)
    return _Output(tensor, shape, np.ascontiguousarray(array).tobytes(), datatype)


def _strings(tensor: Tensor, items: Sequence[bytes | str]) -> _Output:
    data = [i.encode() if isinstance(i, str) else i for i in items]
    return _Output(tensor, (len(data),), join_bytes(data), tensor.datatype)


def _optional(values: Iterable[float | None]) -> list[float]:
    return [float("nan") if v is None else v for v in values]


def _masks(instances: Sequence[Instance], request: InferenceRequest, mask_format: str) -> _Output:
    size = {"height": request.height, "width": request.width}
    if mask_format == "uint8":
        masks = np.zeros((len(instances), request.height, request.width), np.uint8)
        for i, instance in enumerate(instances):
            if instance.mask is not None:
                masks[i] = decode_rle(instance.mask.rle)
        return _Output(MASKS, masks.shape, masks.tobytes(), "UINT8", {"format": "uint8", **size})
    counts = [i.mask.rle.counts if i.mask is not None else b"" for i in instances]
    out = _strings(MASKS, counts)
    out.parameters = {"format": "coco_rle", **size}
    return out


def outputs_of(prediction: Prediction, request: InferenceRequest, mask_format: str) -> dict[str, _Output]:
    """The task's output tensors of one prediction, by name."""
    instances = prediction.instances
    n = len(instances)
    makers: dict[str, Callable[[], _Output]] = {
        "BOXES": lambda: _numeric(BOXES, [i.box.as_list() for i in instances], (n, 4)),
        "SCORES": lambda: _numeric(SCORES, [i.score for i in instances], (n,)),
        "LABELS": lambda: _strings(LABELS, [i.label.name if i.label else "" for i in instances]),
        "MASKS": lambda: _masks(instances, request, mask_format),
        "PREDICTED_IOU": lambda: _numeric(PREDICTED_IOU, _optional(i.predicted_iou for i in instances), (n,)),
        "STABILITY_SCORE": lambda: _numeric(STABILITY_SCORE, _optional(i.stability_score for i in instances), (n,)),
    }
    if request.task == Task.KEYPOINT_DETECTION:
        names = [k.name for k in instances[0].keypoints] if instances else []
        points = [[[k.x, k.y, k.score] for k in i.keypoints] for i in instances]
        makers["KEYPOINTS"] = lambda: _numeric(KEYPOINTS, points, (n, len(names), 3))
        makers["KEYPOINT_NAMES"] = lambda: _strings(KEYPOINT_NAMES, names)
    if request.task == Task.ZERO_SHOT_CLASSIFICATION:
        scores = prediction.scores
        k = len(scores)
        makers["LABELS"] = lambda: _strings(LABELS, [s.label.name for s in scores])
        makers["SCORES"] = lambda: _numeric(SCORES, [s.label.score for s in scores], (k,))
        makers["SIMILARITIES"] = lambda: _numeric(SIMILARITIES, [s.similarity for s in scores], (k,))
    if request.task == Task.SEMANTIC_SEGMENTATION:
        lm = prediction.label_map
        indices = lm.indices if lm is not None else np.zeros((request.height, request.width), np.uint16)
        makers["LABEL_MAP"] = lambda: _numeric(LABEL_MAP, indices, tuple(indices.shape))
        makers["CLASS_NAMES"] = lambda: _strings(CLASS_NAMES, lm.class_names if lm is not None else [])
    return {t.name: makers[t.name]() for t in OUTPUTS[request.task]}


def _parameter(value: int | float | str | bool) -> oip.InferParameter:
    if isinstance(value, bool):
        return oip.InferParameter(bool_param=value)
    if isinstance(value, int):
        return oip.InferParameter(int64_param=value)
    if isinstance(value, float):
        return oip.InferParameter(double_param=value)
    return oip.InferParameter(string_param=value)


# --- statistics (Triton's "statistics" extension) -------------------------------------------


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


# --- the servicer -------------------------------------------------------------------


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
        options = _prompts_and_text(options, tensors)
        # The project's servicer's decoding threads: one bound on decoding work for both protocols.
        image = await asyncio.get_running_loop().run_in_executor(
            self.vision._decoder, _decode_image, image_bytes[0], self.vision.max_image_pixels
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
            response.parameters[key].CopyFrom(_parameter(value))
        for out_name in wanted or [t.name for t in OUTPUTS[task]]:
            out = outputs[out_name]
            tensor = response.outputs.add(name=out_name, datatype=out.datatype, shape=out.shape)
            for key, value in (out.parameters or {}).items():
                tensor.parameters[key].CopyFrom(_parameter(value))
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
            values[key] = _param_value(key, value, PARAMETERS[key].kind)
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
                raise _bad(tensor.name, "is given twice")
            if tensor.parameters:
                raise _bad(tensor.name, f"tensor parameters ({', '.join(sorted(tensor.parameters))}) are not supported")
            tensors[tensor.name] = decode_input(spec, tensor, raw[i] if raw else None)
        if "IMAGE" not in tensors:
            raise _bad("IMAGE", "is missing: send the encoded image file as BYTES, shape [1]")
        return tensors


def _decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """decode_bytes, its messages naming the IMAGE tensor rather than the project's image field."""
    try:
        return decode_bytes(data, max_pixels=max_pixels)
    except InvalidArgument as exc:
        raise _renamed(exc) from None


def _renamed(exc: InvalidArgument) -> ServiceError:
    def rename(text: str) -> str:
        return text.replace("image.encoded", "input IMAGE")

    return type(exc)(
        rename(exc.message),
        reason=exc.reason,
        field_violations=[("inputs.IMAGE", rename(d)) for _, d in exc.field_violations],
        metadata=exc.metadata,
    )


def _prompts_and_text(options: TaskOptions, tensors: Mapping[str, np.ndarray | list[bytes]]) -> TaskOptions:
    """The optional input tensors as TaskOptions fields."""
    updates: dict[str, Any] = {}
    for key, field in (("LABELS", "labels"), ("PROMPT_TEMPLATES", "prompt_templates")):
        if key in tensors:
            try:
                updates[field] = tuple(bytes(b).decode() for b in tensors[key])
            except UnicodeDecodeError:
                raise _bad(key, "elements must be UTF-8 text") from None
    points = tensors.get("POINTS")
    point_labels = tensors.get("POINT_LABELS")
    if point_labels is not None:
        assert isinstance(point_labels, np.ndarray)
        if points is None:
            raise _bad("POINT_LABELS", "given without POINTS")
        if len(point_labels) != len(points):
            raise _bad("POINT_LABELS", f"has {len(point_labels)} labels for {len(points)} POINTS; one per point")
        if not np.isin(point_labels, (0, 1)).all():
            raise _bad("POINT_LABELS", "values must be 1 (foreground) or 0 (background)")
    if points is not None:
        assert isinstance(points, np.ndarray)
        positive = point_labels if point_labels is not None else np.ones(len(points), np.int32)
        updates["points"] = tuple(
            Point(float(x), float(y), bool(p)) for (x, y), p in zip(points.tolist(), positive.tolist(), strict=True)
        )
    boxes = tensors.get("BOXES")
    if boxes is not None:
        assert isinstance(boxes, np.ndarray)
        updates["boxes"] = tuple(Box(*(float(v) for v in b)) for b in boxes.tolist())
    return replace(options, **updates) if updates else options


def add_to_server(servicer: OipServicer, server: grpc.aio.Server) -> None:
    oip_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
