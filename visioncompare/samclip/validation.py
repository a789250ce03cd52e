"""Request checks for SAM-CLIP, run before a request is queued.

Every failure is an InvalidArgument whose message says what to change, with the
offending field in its field violation.
"""

from __future__ import annotations

import math

from visioncompare.runtime.errors import InvalidArgument
from visioncompare.runtime.tasks import Range, accepted, check_range
from visioncompare.runtime.types import AutomaticOptions, InferenceRequest, Task, TaskOption, TaskOptions
from visioncompare.samclip.settings import SamClipSettings

LABELLED = frozenset(
    {
        Task.ZERO_SHOT_CLASSIFICATION,
        Task.OBJECT_DETECTION,
        Task.INSTANCE_SEGMENTATION,
        Task.SEMANTIC_SEGMENTATION,
    }
)
MASK_PROPOSALS = frozenset(
    {Task.AUTOMATIC_SEGMENTATION, Task.OBJECT_DETECTION, Task.INSTANCE_SEGMENTATION, Task.SEMANTIC_SEGMENTATION}
)
#: Options the task table applies to SAM-CLIP's tasks that it does not read: SAM and
#: CLIP resize to their fixed input sizes, and its instances are SAM's automatic
#: proposals, which the automatic generator thresholds itself (mask_threshold is
#: read for prompted masks only).
NOT_READ: dict[Task, frozenset[TaskOption]] = {
    Task.OBJECT_DETECTION: frozenset({TaskOption.RESIZE}),
    Task.INSTANCE_SEGMENTATION: frozenset({TaskOption.RESIZE, TaskOption.MASK_THRESHOLD}),
}


def accepted_options(task: Task) -> tuple[TaskOption, ...]:
    """TaskCapability.accepted_options of `task`; the runtime refuses any other set option."""
    return accepted(task, without=NOT_READ.get(task, ()))


def check_labels(options: TaskOptions, task: Task, s: SamClipSettings) -> None:
    labels = options.labels
    if not labels:
        raise InvalidArgument(
            f'{task.name} needs labels: list the class names to look for in options.labels, e.g. ["cat", "dog"]',
            field="options.labels",
        )
    if len(labels) > s.max_labels:
        raise InvalidArgument(
            f"{len(labels)} labels given; at most {s.max_labels} are allowed per request "
            "(SAMCLIP_MAX_LABELS): split the vocabulary across requests",
            field="options.labels",
        )
    seen: set[str] = set()
    for i, label in enumerate(labels):
        field = f"options.labels[{i}]"
        if not label.strip():
            raise InvalidArgument(f"{field} is empty; give every label some text", field=field)
        if len(label) > s.max_label_chars:
            raise InvalidArgument(
                f"{field} has {len(label)} characters; at most {s.max_label_chars} are allowed: "
                "use a shorter class name",
                field=field,
            )
        if label in seen:
            raise InvalidArgument(f"{field} repeats {label!r}; give each label once", field=field)
        seen.add(label)
    if len(options.prompt_templates) > s.max_templates:
        raise InvalidArgument(
            f"{len(options.prompt_templates)} prompt templates given; at most {s.max_templates} are allowed",
            field="options.prompt_templates",
        )
    for i, template in enumerate(options.prompt_templates):
        field = f"options.prompt_templates[{i}]"
        if template.count("{}") != 1:
            raise InvalidArgument(
                f"{field} is {template!r}; a template must contain {{}} exactly once, "
                'where the label goes, e.g. "a photo of a {}."',
                field=field,
            )
        if len(template) > s.max_template_chars:
            raise InvalidArgument(
                f"{field} has {len(template)} characters; at most {s.max_template_chars} are allowed",
                field=field,
            )


def check_prompts(request: InferenceRequest, s: SamClipSettings) -> None:
    o, w, h = request.options, request.width, request.height
    if not o.points and not o.boxes:
        raise InvalidArgument(
            "PROMPTED_SEGMENTATION needs at least one point or box in options.prompts; "
            "for masks without prompts use AUTOMATIC_SEGMENTATION",
            field="options.prompts",
        )
    if len(o.points) > s.max_prompt_points:
        raise InvalidArgument(
            f"{len(o.points)} points given; at most {s.max_prompt_points} are allowed",
            field="options.prompts.points",
        )
    if len(o.boxes) > s.max_prompt_boxes:
        raise InvalidArgument(
            f"{len(o.boxes)} boxes given; at most {s.max_prompt_boxes} are allowed",
            field="options.prompts.boxes",
        )
    for i, p in enumerate(o.points):
        field = f"options.prompts.points[{i}]"
        if not (math.isfinite(p.x) and math.isfinite(p.y) and 0 <= p.x <= w and 0 <= p.y <= h):
            raise InvalidArgument(
                f"{field} ({p.x}, {p.y}) lies outside the {w}x{h} image; give x in [0, {w}] and "
                f"y in [0, {h}], in pixels of the original image",
                field=field,
            )
    for i, b in enumerate(o.boxes):
        field = f"options.prompts.boxes[{i}]"
        coords = (b.x1, b.y1, b.x2, b.y2)
        if not all(math.isfinite(c) for c in coords):
            raise InvalidArgument(
                f"{field} has a non-finite coordinate {coords}; give x1, y1, x2, y2 in pixels of the image",
                field=field,
            )
        if b.x2 < b.x1 or b.y2 < b.y1:
            raise InvalidArgument(
                f"{field} is ({b.x1}, {b.y1}, {b.x2}, {b.y2}) with x2 < x1 or y2 < y1; "
                "boxes are (x1, y1) top-left and (x2, y2) bottom-right",
                field=field,
            )
        if b.x2 == b.x1 or b.y2 == b.y1:
            raise InvalidArgument(
                f"{field} is ({b.x1}, {b.y1}, {b.x2}, {b.y2}) with x2 == x1 or y2 == y1: it has no area; "
                "give a box with x2 > x1 and y2 > y1 around the object, or a point prompt for one spot",
                field=field,
            )
        if b.x1 < 0 or b.y1 < 0 or b.x2 > w or b.y2 > h:
            raise InvalidArgument(
                f"{field} ({b.x1}, {b.y1}, {b.x2}, {b.y2}) lies outside the {w}x{h} image; "
                f"keep 0 <= x1 < x2 <= {w} and 0 <= y1 < y2 <= {h}",
                field=field,
            )
    if o.points and not o.boxes and not any(p.positive for p in o.points):
        raise InvalidArgument(
            "options.prompts.points are all negative and there is no box: negative points only say "
            "where the object is not; add a positive point or a box on the object to segment",
            field="options.prompts.points",
        )


def check_automatic(a: AutomaticOptions, s: SamClipSettings) -> None:
    f = "options.automatic."
    check_range(
        f + "points_per_side", a.points_per_side, Range(1, s.max_points_per_side), " (cost grows with its square)"
    )
    check_range(f + "min_mask_region_area", a.min_mask_region_area, Range(0, s.max_min_mask_region_area), " pixels")


def check_request(request: InferenceRequest, s: SamClipSettings) -> None:
    """Raise InvalidArgument for anything the task cannot run with.

    Which options the task takes, and the API's ranges, are checked before, by the runtime
    (`accepted_options`, `tasks.check_ranges`); these are SAM-CLIP's own limits."""
    task, o = request.task, request.options
    if task in LABELLED:
        check_labels(o, task, s)
    if task == Task.PROMPTED_SEGMENTATION:
        check_prompts(request, s)
    if task in MASK_PROPOSALS:
        check_automatic(o.automatic, s)
