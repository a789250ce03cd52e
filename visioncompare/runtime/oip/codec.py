"""The Open Inference Protocol's tensors and parameters, and the runtime's domain types.

The tables of the protocol as this project serves it (`visioncompare.runtime.oip` describes
them): the OIP model of each task, the input tensors each task option brings, the output
tensors of each task and the request parameters; decoding an input tensor (typed or raw
contents) against its spec, and encoding a prediction as output tensors.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from visioncompare.oip import grpc_predict_v2_pb2 as oip
from visioncompare.oip import model_config_pb2 as config_pb
from visioncompare.runtime.dataplane import Inference
from visioncompare.runtime.errors import InvalidArgument, ServiceError
from visioncompare.runtime.images import decode_bytes
from visioncompare.runtime.masks import decode_rle
from visioncompare.runtime.tasks import TASKS_BY_SHORT_NAME, short_name
from visioncompare.runtime.types import (
    AutomaticOptions,
    Box,
    InferenceRequest,
    Instance,
    Point,
    Prediction,
    Task,
    TaskCapability,
    TaskOption,
    TaskOptions,
)

MODEL_VERSION = "1"

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


#: A task's part of an OIP model name: its short name (the task table's), e.g. "instance-segmentation".
task_slug = short_name
TASKS_BY_SLUG = TASKS_BY_SHORT_NAME


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


def param_value(name: str, value: oip.InferParameter, kind: type) -> Any:
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


def bad_input(tensor: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"input {tensor}: {message}", field=f"inputs.{tensor}")


def split_bytes(raw: bytes, count: int, tensor: str) -> list[bytes]:
    """The elements of a raw BYTES tensor: each a 4-byte little-endian length, then its bytes."""
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise bad_input(tensor, f"raw contents end inside an element's 4-byte length prefix (at byte {offset})")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise bad_input(tensor, f"raw element {len(items)} claims {size} bytes but only {len(raw) - offset} remain")
        items.append(raw[offset : offset + size])
        offset += size
    if len(items) != count:
        raise bad_input(tensor, f"raw contents hold {len(items)} BYTES elements; its shape says {count}")
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
        raise bad_input(spec.name, f"shape {list(shape)} does not fit {expected} (-1: any size)")
    return shape


def decode_input(
    spec: Tensor, tensor: oip.ModelInferRequest.InferInputTensor, raw: bytes | None
) -> np.ndarray | list[bytes]:
    """One input tensor as numpy (numeric) or a list of bytes (BYTES), checked against its spec."""
    if tensor.datatype != spec.datatype:
        raise bad_input(spec.name, f"datatype {tensor.datatype or '(none)'} is not {spec.datatype}")
    shape = _check_shape(spec, tensor)
    count = int(np.prod(shape, dtype=np.int64))
    typed = getattr(tensor.contents, CONTENTS_FIELD[spec.datatype])
    if raw is not None and tensor.HasField("contents") and tensor.contents.ByteSize():
        raise bad_input(spec.name, "has both contents and raw_input_contents; send one")
    if spec.datatype == "BYTES":
        if raw is not None:
            return split_bytes(raw, count, spec.name)
        if len(typed) != count:
            raise bad_input(spec.name, f"contents hold {len(typed)} elements; its shape {list(shape)} says {count}")
        return list(typed)
    dtype = DTYPES[spec.datatype]
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise bad_input(
                spec.name,
                f"raw contents have {len(raw)} bytes; shape {list(shape)} of {spec.datatype} needs "
                f"{count * dtype.itemsize}",
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    if len(typed) != count:
        raise bad_input(spec.name, f"contents hold {len(typed)} elements; its shape {list(shape)} says {count}")
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


def parameter(value: int | float | str | bool) -> oip.InferParameter:
    if isinstance(value, bool):
        return oip.InferParameter(bool_param=value)
    if isinstance(value, int):
        return oip.InferParameter(int64_param=value)
    if isinstance(value, float):
        return oip.InferParameter(double_param=value)
    return oip.InferParameter(string_param=value)


def decode_image_tensor(data: bytes, max_pixels: int) -> np.ndarray:
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


def prompts_and_text(options: TaskOptions, tensors: Mapping[str, np.ndarray | list[bytes]]) -> TaskOptions:
    """The optional input tensors as TaskOptions fields."""
    updates: dict[str, Any] = {}
    for key, field in (("LABELS", "labels"), ("PROMPT_TEMPLATES", "prompt_templates")):
        if key in tensors:
            try:
                updates[field] = tuple(bytes(b).decode() for b in tensors[key])
            except UnicodeDecodeError:
                raise bad_input(key, "elements must be UTF-8 text") from None
    points = tensors.get("POINTS")
    point_labels = tensors.get("POINT_LABELS")
    if point_labels is not None:
        assert isinstance(point_labels, np.ndarray)
        if points is None:
            raise bad_input("POINT_LABELS", "given without POINTS")
        if len(point_labels) != len(points):
            raise bad_input("POINT_LABELS", f"has {len(point_labels)} labels for {len(points)} POINTS; one per point")
        if not np.isin(point_labels, (0, 1)).all():
            raise bad_input("POINT_LABELS", "values must be 1 (foreground) or 0 (background)")
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


# --- requests and responses ---------------------------------------------------------------


def read_parameters(
    request: oip.ModelInferRequest, task: Task, capability: TaskCapability, name: str
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


def requested_outputs(request: oip.ModelInferRequest, task: Task, name: str) -> list[str]:
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


def read_inputs(
    request: oip.ModelInferRequest, capability: TaskCapability, name: str
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


@dataclass(frozen=True)
class InferCall:
    """A ModelInferRequest read into the runtime's domain values."""

    image: bytes  # the encoded file of tensor IMAGE
    options: TaskOptions
    mask_format: str  # "rle" or "uint8"
    timeout_s: float | None  # the request's `timeout` parameter, in seconds
    outputs: tuple[str, ...]  # the output tensors to send, in order


def read_infer_request(request: oip.ModelInferRequest, task: Task, capability: TaskCapability, name: str) -> InferCall:
    """The parameters, requested outputs and input tensors of a ModelInferRequest for model
    `name` (running `task`), checked in that order."""
    options, mask_format, timeout_s = read_parameters(request, task, capability, name)
    wanted = requested_outputs(request, task, name)
    tensors = read_inputs(request, capability, name)
    image = tensors.pop("IMAGE")[0]
    assert isinstance(image, bytes)  # a BYTES tensor's element
    options = prompts_and_text(options, tensors)
    return InferCall(image, options, mask_format, timeout_s, tuple(wanted) or tuple(t.name for t in OUTPUTS[task]))


def infer_response(
    request_id: str, name: str, inference: Inference, outputs: Mapping[str, _Output], wanted: Sequence[str]
) -> oip.ModelInferResponse:
    """The ModelInferResponse of model `name` to request `request_id` (the client's `id`):
    the answer's parameters (the project's InferenceInfo) and the `wanted` output tensors."""
    request, prediction, runtime = inference.request, inference.prediction, inference.runtime
    response = oip.ModelInferResponse(model_name=name, model_version=MODEL_VERSION, id=request_id)
    params: dict[str, int | float | str | bool] = {
        "request_id": request.request_id,
        "image_width": request.width,
        "image_height": request.height,
        "batch_size": prediction.batch_size,
        "queue_ms": prediction.timing.queue_ms,
        "inference_ms": prediction.timing.inference_ms,
        "weights": runtime.weights,
        "pretrained": runtime.pretrained,
        "engine": runtime.engine,
        "warnings": "\n".join(inference.warnings),
    }
    for key, value in params.items():
        response.parameters[key].CopyFrom(parameter(value))
    for out_name in wanted:
        out = outputs[out_name]
        tensor = response.outputs.add(name=out_name, datatype=out.datatype, shape=out.shape)
        for key, value in (out.parameters or {}).items():
            tensor.parameters[key].CopyFrom(parameter(value))
        response.raw_output_contents.append(out.data)
    return response


def model_metadata(name: str, task: Task, capability: TaskCapability, engine: str) -> oip.ModelMetadataResponse:
    return oip.ModelMetadataResponse(
        name=name,
        versions=[MODEL_VERSION],
        platform=f"visioncompare_{engine}",
        inputs=[t.metadata() for t in inputs_of(capability)],
        outputs=[t.metadata() for t in OUTPUTS[task]],
    )


def model_config(name: str, task: Task, capability: TaskCapability, engine: str) -> oip.ModelConfigResponse:
    """Triton's extension, as perf_analyzer reads it: max_batch_size 0 (requests carry no batch
    dimension; the server batches requests itself), the inputs and outputs of ModelMetadata,
    every input but IMAGE optional."""
    config = config_pb.ModelConfig(
        name=name,
        platform=f"visioncompare_{engine}",
        backend="visioncompare",
        max_batch_size=0,
        input=[
            config_pb.ModelInput(name=t.name, data_type=t.config_type, dims=t.shape, optional=t is not IMAGE)
            for t in inputs_of(capability)
        ],
        output=[config_pb.ModelOutput(name=t.name, data_type=t.config_type, dims=t.shape) for t in OUTPUTS[task]],
    )
    return oip.ModelConfigResponse(config=config)
