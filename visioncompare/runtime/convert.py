"""Protobuf <-> domain types. The only module that knows both."""

from __future__ import annotations

from typing import TypedDict, TypeVar, cast

import numpy as np

from visioncompare.runtime.errors import InvalidArgument
from visioncompare.runtime.types import (
    AutomaticOptions,
    Box,
    Capabilities,
    ClassScore,
    Instance,
    Keypoint,
    Label,
    LabelMap,
    Mask,
    ModelCard,
    ModelComponent,
    Point,
    Prediction,
    PromptKind,
    RleMask,
    RuntimeInfo,
    Task,
    TaskCapability,
    TaskOption,
    TaskOptions,
    Timing,
    Vocabulary,
)
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import vision_model_service_pb2 as vms

ENGINES = {"torch": vms.ENGINE_TORCH, "onnxruntime": vms.ENGINE_ONNXRUNTIME}

_PbEnum = TypeVar("_PbEnum", bound=int)


def pb_enum(enum: type[_PbEnum], value: int) -> _PbEnum:
    """`value` as a value of the generated enum `enum` (e.g. `pb_enum(pb.Task, Task.OBJECT_DETECTION)`).

    protoc's stubs declare each enum as a subclass of int whose values are its instances, but
    at run time the values are plain ints and the enum (an EnumTypeWrapper) is not callable:
    a value from elsewhere (one of our IntEnums, a number) reaches the type only by a cast.
    """
    return cast(_PbEnum, int(value))


# --- requests ----------------------------------------------------------------


def task_from_proto(value: int, *, default: Task | None = None) -> Task:
    if value == pb.TASK_UNSPECIFIED:
        if default is None:
            names = ", ".join(pb.Task.Name(t) for t in pb.Task.values() if t)
            raise InvalidArgument(f"task is required; one of {names}", field="task")
        return default
    try:
        return Task(value)
    except ValueError:
        raise InvalidArgument(f"unknown task value {value}", field="task") from None


def box_from_proto(b: pb.BoundingBox) -> Box:
    return Box(b.x1, b.y1, b.x2, b.y2)


#: The options of a request that sets none: shared (TaskOptions is frozen), not built per request.
NO_OPTIONS = TaskOptions()


def options_from_proto(o: pb.TaskOptions) -> TaskOptions:
    if not o.ByteSize():  # nothing set (most requests): the defaults
        return NO_OPTIONS
    a = o.automatic
    return TaskOptions(
        score_threshold=o.score_threshold if o.HasField("score_threshold") else None,
        max_results=o.max_results if o.HasField("max_results") else None,
        labels=tuple(o.labels),
        prompt_templates=tuple(o.prompt_templates),
        mask_threshold=o.mask_threshold if o.HasField("mask_threshold") else None,
        min_size=o.resize.min_size or None,
        max_size=o.resize.max_size or None,
        points=tuple(Point(p.x, p.y, p.positive) for p in o.prompts.points),
        boxes=tuple(box_from_proto(b) for b in o.prompts.boxes),
        multimask_output=o.prompts.multimask_output,
        automatic=AutomaticOptions(
            points_per_side=a.points_per_side if a.HasField("points_per_side") else None,
            pred_iou_thresh=a.pred_iou_thresh if a.HasField("pred_iou_thresh") else None,
            stability_score_thresh=a.stability_score_thresh if a.HasField("stability_score_thresh") else None,
            min_mask_region_area=a.min_mask_region_area if a.HasField("min_mask_region_area") else None,
        ),
        nms_iou_threshold=o.nms_iou_threshold if o.HasField("nms_iou_threshold") else None,
    )


def box_to_proto(b: Box) -> pb.BoundingBox:
    return pb.BoundingBox(x1=b.x1, y1=b.y1, x2=b.x2, y2=b.y2)


def options_to_proto(o: TaskOptions) -> pb.TaskOptions:
    msg = pb.TaskOptions(labels=o.labels, prompt_templates=o.prompt_templates)
    for name in ("score_threshold", "max_results", "mask_threshold", "nms_iou_threshold"):
        if (value := getattr(o, name)) is not None:
            setattr(msg, name, value)
    if o.min_size or o.max_size:
        msg.resize.min_size = o.min_size or 0
        msg.resize.max_size = o.max_size or 0
    if o.points or o.boxes or o.multimask_output:
        msg.prompts.points.extend(pb.PointPrompt(x=p.x, y=p.y, positive=p.positive) for p in o.points)
        msg.prompts.boxes.extend(box_to_proto(b) for b in o.boxes)
        msg.prompts.multimask_output = o.multimask_output
    a = o.automatic
    for name in ("points_per_side", "pred_iou_thresh", "stability_score_thresh", "min_mask_region_area"):
        if (value := getattr(a, name)) is not None:
            setattr(msg.automatic, name, value)
    return msg


# --- predictions -------------------------------------------------------------


def instance_to_proto(i: Instance) -> pb.Instance:
    # Fields set in place: no message built only to be copied (half the time of an instance
    # with a label and a mask).
    b = i.box
    msg = pb.Instance(box=pb.BoundingBox(x1=b.x1, y1=b.y1, x2=b.x2, y2=b.y2), score=i.score)
    if i.label is not None:
        label = msg.label
        label.id, label.name, label.score = i.label.id, i.label.name, i.label.score
    if i.mask is not None:
        r, mb, mask = i.mask.rle, i.mask.bbox, msg.mask
        rle, bbox = mask.rle, mask.bbox
        rle.height, rle.width, rle.counts = r.height, r.width, r.counts
        bbox.x1, bbox.y1, bbox.x2, bbox.y2 = mb.x1, mb.y1, mb.x2, mb.y2
        mask.area_pixels = i.mask.area
    if i.keypoints:
        msg.keypoints.extend(pb.Keypoint(name=k.name, x=k.x, y=k.y, score=k.score) for k in i.keypoints)
    if i.predicted_iou is not None:
        msg.predicted_iou = i.predicted_iou
    if i.stability_score is not None:
        msg.stability_score = i.stability_score
    return msg


def instance_from_proto(m: pb.Instance) -> Instance:
    label = Label(m.label.id, m.label.name, m.label.score) if m.HasField("label") else None
    mask = None
    if m.HasField("mask"):
        r = m.mask.rle
        mask = Mask(RleMask(r.height, r.width, r.counts), box_from_proto(m.mask.bbox), m.mask.area_pixels)
    return Instance(
        box=box_from_proto(m.box),
        score=m.score,
        label=label,
        mask=mask,
        keypoints=[Keypoint(k.name, k.x, k.y, k.score) for k in m.keypoints],
        predicted_iou=m.predicted_iou if m.HasField("predicted_iou") else None,
        stability_score=m.stability_score if m.HasField("stability_score") else None,
    )


def label_map_to_proto(lm: LabelMap) -> pb.LabelMap:
    h, w = lm.indices.shape
    return pb.LabelMap(
        width=w,
        height=h,
        class_names=lm.class_names,
        class_indices_u16le=np.ascontiguousarray(lm.indices, dtype="<u2").tobytes(),
    )


def label_map_from_proto(m: pb.LabelMap) -> LabelMap:
    indices = np.frombuffer(m.class_indices_u16le, dtype="<u2").reshape(m.height, m.width)
    return LabelMap(class_names=list(m.class_names), indices=indices)


def timing_to_proto(t: Timing) -> pb.Timing:
    return pb.Timing(
        queue_ms=t.queue_ms,
        preprocess_ms=t.preprocess_ms,
        inference_ms=t.inference_ms,
        postprocess_ms=t.postprocess_ms,
    )


def class_score_to_proto(s: ClassScore) -> vms.ClassScore:
    return vms.ClassScore(
        label=pb.Label(id=s.label.id, name=s.label.name, score=s.label.score), similarity=s.similarity
    )


# --- capabilities --------------------------------------------------------------


def capabilities_to_proto(c: Capabilities) -> vms.CapabilitiesResponse:
    card, rt = c.card, c.runtime
    return vms.CapabilitiesResponse(
        card=vms.ModelCard(
            name=card.name,
            organization=card.organization,
            category=card.category,
            modality=card.modality,
            release_date=card.release_date,
            parameter_count=card.parameter_count,
            license=card.license,
            paper_url=card.paper_url,
            description=card.description,
            features=card.features,
        ),
        tasks=[
            vms.TaskCapability(
                task=pb_enum(pb.Task, t.task),
                vocabulary=pb_enum(vms.Vocabulary, t.vocabulary),
                label_names=t.label_names,
                prompt_kinds=[pb_enum(pb.PromptKind, k) for k in t.prompt_kinds],
                accepted_options=[pb_enum(pb.TaskOption, o) for o in t.accepted_options],
            )
            for t in c.tasks
        ],
        runtime=vms.RuntimeInfo(
            device=rt.device,
            engine=ENGINES.get(rt.engine, vms.ENGINE_UNSPECIFIED),
            precision=rt.precision,
            weights=rt.weights,
            pretrained=rt.pretrained,
            max_batch_size=rt.max_batch_size,
            software_version=rt.software_version,
            components=[
                vms.ModelComponent(
                    name=p.name, weights=p.weights, pretrained=p.pretrained, parameter_count=p.parameter_count
                )
                for p in rt.components
            ],
            warnings=rt.warnings,
            preset=rt.preset,
        ),
    )


def capabilities_from_proto(m: vms.CapabilitiesResponse) -> Capabilities:
    c, r = m.card, m.runtime
    engines = {v: k for k, v in ENGINES.items()}
    return Capabilities(
        card=ModelCard(
            name=c.name,
            organization=c.organization,
            category=c.category,
            modality=c.modality,
            release_date=c.release_date,
            parameter_count=c.parameter_count,
            license=c.license,
            paper_url=c.paper_url,
            description=c.description,
            features=tuple(c.features),
        ),
        tasks=tuple(
            TaskCapability(
                task=Task(t.task),
                vocabulary=Vocabulary(t.vocabulary),
                label_names=tuple(t.label_names),
                prompt_kinds=tuple(PromptKind(k) for k in t.prompt_kinds),
                accepted_options=tuple(TaskOption(o) for o in t.accepted_options if o in TaskOption._value2member_map_),
            )
            for t in m.tasks
            if t.task in Task._value2member_map_
        ),
        runtime=RuntimeInfo(
            device=r.device,
            engine=engines.get(r.engine, "unknown"),
            precision=r.precision,
            weights=r.weights,
            pretrained=r.pretrained,
            max_batch_size=r.max_batch_size,
            software_version=r.software_version,
            components=tuple(ModelComponent(p.name, p.weights, p.pretrained, p.parameter_count) for p in r.components),
            warnings=tuple(r.warnings),
            preset=r.preset,
        ),
    )


class PredictionFields(TypedDict, total=False):
    """A prediction's proto field values, by the response field that holds them
    (`visioncompare.runtime.tasks.Rpc.response` builds each RPC's response from those it has)."""

    instances: list[pb.Instance]
    label_map: pb.LabelMap
    scores: list[vms.ClassScore]


def prediction_fields(p: Prediction) -> PredictionFields:
    """Instances / label map / scores of a prediction as proto field values."""
    out = PredictionFields(instances=[instance_to_proto(i) for i in p.instances])
    if p.label_map is not None:
        out["label_map"] = label_map_to_proto(p.label_map)
    out["scores"] = [class_score_to_proto(s) for s in p.scores]
    return out
