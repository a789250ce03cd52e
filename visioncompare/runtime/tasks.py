"""The task table: for every Task, the RPC that carries it and the options that apply.

One typed table instead of names spread over the code: the servicer answers each
RPC with it, the gateway calls the right RPC and files the response with it, and
`check_options` (run by every VisionModel's `validate`) refuses a set option that
the model does not accept for the task, with one message for every model.

    >>> spec(Task.KEYPOINT_DETECTION).rpc.name
    'Detect'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from visioncompare.runtime.convert import PredictionFields, pb_enum
from visioncompare.runtime.errors import InvalidArgument
from visioncompare.runtime.types import (
    Capabilities,
    InferenceRequest,
    PromptKind,
    Task,
    TaskCapability,
    TaskOption,
    TaskOptions,
    Vocabulary,
)
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import vision_model_service_pb2 as vms

#: An Rpc's response message type.
_Response = TypeVar("_Response", bound=Message, covariant=True)


@dataclass(frozen=True)
class Rpc(Generic[_Response]):
    """One VisionModelService method that runs tasks."""

    name: str  # the method, e.g. "Detect"
    request_type: type[Message]
    response_type: type[_Response]
    #: The field of ComparisonService's ModelResult.output that holds this RPC's response.
    result_field: str
    #: The task an unset request.task means (None: the task is required).
    default_task: Task | None
    #: The method on a VisionModelService stub (blocking or asyncio).
    method: Callable[[Any], Callable[..., Any]]
    #: Builds a request_type from the task, image and options (through the generated
    #: class's own typed constructor: `Message` itself takes no fields).
    new_request: Callable[[Task, pb.Image, pb.TaskOptions], Message]
    #: Builds a response_type from a prediction's proto fields (those it has) and the info.
    new_response: Callable[[PredictionFields, pb.InferenceInfo], _Response]

    @cached_property
    def takes_task(self) -> bool:
        """Whether the request names its task (ClassifyRequest does not: it has one)."""
        return "task" in self.request_type.DESCRIPTOR.fields_by_name

    def request(self, task: Task, image: pb.Image, options: pb.TaskOptions) -> Message:
        return self.new_request(task, image, options)

    def response(self, fields: PredictionFields, info: pb.InferenceInfo) -> _Response:
        """The response from a prediction's proto fields (`convert.prediction_fields`):
        those the response type has; the others are empty for this RPC's tasks."""
        return self.new_response(fields, info)


DETECT = Rpc(
    "Detect",
    vms.DetectRequest,
    vms.DetectResponse,
    "detect",
    Task.OBJECT_DETECTION,
    lambda stub: stub.Detect,
    new_request=lambda task, image, options: vms.DetectRequest(
        image=image, task=pb_enum(pb.Task, task), options=options
    ),
    new_response=lambda fields, info: vms.DetectResponse(instances=fields.get("instances"), info=info),
)
SEGMENT = Rpc(
    "Segment",
    vms.SegmentRequest,
    vms.SegmentResponse,
    "segment",
    None,
    lambda stub: stub.Segment,
    new_request=lambda task, image, options: vms.SegmentRequest(
        image=image, task=pb_enum(pb.Task, task), options=options
    ),
    new_response=lambda fields, info: vms.SegmentResponse(
        instances=fields.get("instances"), label_map=fields.get("label_map"), info=info
    ),
)
CLASSIFY = Rpc(
    "Classify",
    vms.ClassifyRequest,
    vms.ClassifyResponse,
    "classify",
    Task.ZERO_SHOT_CLASSIFICATION,
    lambda stub: stub.Classify,
    new_request=lambda task, image, options: vms.ClassifyRequest(image=image, options=options),  # one task
    new_response=lambda fields, info: vms.ClassifyResponse(scores=fields.get("scores"), info=info),
)
RPCS = (DETECT, SEGMENT, CLASSIFY)


@dataclass(frozen=True)
class TaskSpec:
    task: Task
    rpc: Rpc[Message]
    #: The TaskOptions fields that apply to the task in this API. A model may accept
    #: fewer (TaskCapability.accepted_options); none accepts more.
    options: frozenset[TaskOption]


_O = TaskOption
_TEXT = frozenset({_O.LABELS, _O.PROMPT_TEMPLATES})
_RESULTS = frozenset({_O.SCORE_THRESHOLD, _O.MAX_RESULTS, _O.NMS_IOU_THRESHOLD})
_DETECTOR = _RESULTS | _TEXT | {_O.RESIZE, _O.AUTOMATIC}  # fixed- or open-vocabulary detectors

TASK_TABLE: Mapping[Task, TaskSpec] = {
    s.task: s
    for s in (
        TaskSpec(Task.OBJECT_DETECTION, DETECT, _DETECTOR),
        TaskSpec(Task.INSTANCE_SEGMENTATION, SEGMENT, _DETECTOR | {_O.MASK_THRESHOLD}),
        TaskSpec(Task.KEYPOINT_DETECTION, DETECT, _RESULTS | {_O.LABELS, _O.RESIZE}),
        TaskSpec(Task.ZERO_SHOT_CLASSIFICATION, CLASSIFY, _TEXT | {_O.SCORE_THRESHOLD, _O.MAX_RESULTS}),
        TaskSpec(Task.PROMPTED_SEGMENTATION, SEGMENT, frozenset({_O.PROMPTS, _O.MASK_THRESHOLD})),
        TaskSpec(Task.AUTOMATIC_SEGMENTATION, SEGMENT, _RESULTS | {_O.AUTOMATIC}),
        TaskSpec(Task.SEMANTIC_SEGMENTATION, SEGMENT, _TEXT | {_O.SCORE_THRESHOLD, _O.AUTOMATIC}),
    )
}

#: What each option is, in words, for messages.
OPTION_NOUNS: Mapping[TaskOption, str] = {
    _O.SCORE_THRESHOLD: "score threshold",
    _O.MAX_RESULTS: "result limit",
    _O.LABELS: "text labels",
    _O.PROMPT_TEMPLATES: "text prompt templates",
    _O.MASK_THRESHOLD: "mask threshold",
    _O.RESIZE: "input resize bounds",
    _O.PROMPTS: "point or box prompts",
    _O.AUTOMATIC: "automatic mask generation settings",
    _O.NMS_IOU_THRESHOLD: "NMS IoU threshold",
}


def spec(task: Task) -> TaskSpec:
    return TASK_TABLE[task]


def tasks_of(rpc: Rpc) -> tuple[Task, ...]:
    return tuple(t for t, s in TASK_TABLE.items() if s.rpc is rpc)


def short_name(task: Task) -> str:
    """The task's short name, e.g. "instance-segmentation": the one spelling of the CLI, the
    gateway's HTTP API and page, `vcompare evaluate` and the OIP model names."""
    return task.name.lower().replace("_", "-")


#: Every task by its short name.
TASKS_BY_SHORT_NAME: Mapping[str, Task] = {short_name(t): t for t in Task}


def accepted(task: Task, *, without: Iterable[TaskOption] = ()) -> tuple[TaskOption, ...]:
    """The options of `task` in the table, less those a model does not read: for
    TaskCapability.accepted_options."""
    return tuple(sorted(spec(task).options - set(without)))


def task_capability(
    task: Task,
    vocabulary: Vocabulary,
    label_names: tuple[str, ...] = (),
    prompt_kinds: tuple[PromptKind, ...] = (),
    accepted_options: tuple[TaskOption, ...] | None = None,
) -> TaskCapability:
    """A model's capability for `task`; accepted_options None: every option the table applies
    to the task (a model that reads fewer names them, e.g. with `accepted`)."""
    if accepted_options is None:
        accepted_options = tuple(sorted(spec(task).options))
    return TaskCapability(task, vocabulary, label_names, prompt_kinds, accepted_options=accepted_options)


def check_rpc_task(rpc: Rpc, task: Task) -> None:
    """Reject a task sent to the wrong RPC, naming the right one."""
    right = spec(task).rpc
    if right is not rpc:
        raise InvalidArgument(f"task {task.name} is not served by {rpc.name}; call {right.name} instead", field="task")


def _names(tasks: Iterable[Task]) -> str:
    return ", ".join(t.name for t in sorted(tasks))


def check_options(request: InferenceRequest, capabilities: Capabilities, model: str) -> None:
    """Refuse the options set in a request that the model does not read for its task.

    An option the table does not apply to the task gets the same words from every
    model; one the task may take but this model does not says so, naming the model.
    """
    task = request.task
    capability = capabilities.capability(task)
    if capability is None:  # not served: VisionModel.validate answers UNIMPLEMENTED
        return
    refused = [o for o in request.options.given() if o not in capability.accepted_options]
    if not refused:
        return
    table = spec(task).options
    fields = ", ".join(o.field for o in refused)
    if any(o in table for o in refused):  # the model's own choice
        subject = f"{model} does not use {fields} for {task.name}"
    else:  # the API's: the same words from every model
        subject = f"{task.name} does not use {fields}"
    reasons = []
    for o in refused:
        noun = OPTION_NOUNS[o]
        if o in table:
            users = [c.task for c in capabilities.tasks if o in c.accepted_options]
            reason = f"{model} takes no {noun} for {task.name}" + (
                f"; it reads {o.field} for {_names(users)}" if users else ""
            )
        else:
            users = [t for t, s in TASK_TABLE.items() if o in s.options]
            reason = f"{o.field} is not used by {task.name}, which takes no {noun}; it is for {_names(users)}"
        reasons.append((o.field, reason))
    raise InvalidArgument(
        f"{subject}; leave {'it' if len(refused) == 1 else 'them'} unset. " + ". ".join(r for _, r in reasons) + ".",
        field_violations=reasons,
    )


@dataclass(frozen=True)
class Range:
    """The values the API allows for a number option, the same for every model (the
    contract's comments); a model checks only its own limits, e.g. its largest max_results."""

    low: float
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False

    def holds(self, value: float) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return math.isfinite(value) and above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"at least {self.low:g}"
        return f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"


#: Each number option's path in a request, how to read it, and its range.
OPTION_RANGES: tuple[tuple[str, Callable[[TaskOptions], float | None], Range], ...] = (
    ("options.score_threshold", lambda o: o.score_threshold, Range(0.0, 1.0)),
    ("options.max_results", lambda o: o.max_results, Range(1)),
    ("options.mask_threshold", lambda o: o.mask_threshold, Range(0.0, 1.0, open_low=True, open_high=True)),
    ("options.nms_iou_threshold", lambda o: o.nms_iou_threshold, Range(0.0, 1.0, open_low=True)),
    ("options.automatic.pred_iou_thresh", lambda o: o.automatic.pred_iou_thresh, Range(0.0, 1.0)),
    ("options.automatic.stability_score_thresh", lambda o: o.automatic.stability_score_thresh, Range(0.0, 1.0)),
)


def check_range(field: str, value: float | None, allowed: Range, why: str = "") -> None:
    """Refuse a set number option outside `allowed`; `why` adds the reason for a model's own limit."""
    if value is not None and not allowed.holds(float(value)):
        raise InvalidArgument(
            f"{field} is {value:g}; it must be {allowed}{why}, or left unset for the model's default", field=field
        )


def check_ranges(options: TaskOptions) -> None:
    """Refuse a set number option outside the API's range, with one message for every model."""
    for field, read, allowed in OPTION_RANGES:
        check_range(field, read(options), allowed)
