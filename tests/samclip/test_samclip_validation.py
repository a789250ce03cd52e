"""Every bad SAM-CLIP input gets INVALID_ARGUMENT with a message that says what to fix."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from visioncompare.runtime.errors import InvalidArgument, Unimplemented
from visioncompare.runtime.types import AutomaticOptions, Box, InferenceRequest, Point, Prediction, Task, TaskOptions
from visioncompare.samclip.model import SamClipModel
from visioncompare.samclip.settings import SamClipSettings

IMAGE = np.zeros((40, 60, 3), np.uint8)  # width 60, height 40
P = Task.PROMPTED_SEGMENTATION
A = Task.AUTOMATIC_SEGMENTATION
C = Task.ZERO_SHOT_CLASSIFICATION
I = Task.INSTANCE_SEGMENTATION  # noqa: E741
D = Task.OBJECT_DETECTION
S = Task.SEMANTIC_SEGMENTATION


@pytest.fixture(scope="module")
def model() -> SamClipModel:
    settings = SamClipSettings(
        backend="composed",
        sam_variant="tiny",
        clip_model="tiny",
        sam_weights="random",
        clip_pretrained="random",
        device="cpu",
        max_labels=4,
        max_label_chars=10,
        max_prompt_points=3,
        max_prompt_boxes=2,
        max_points_per_side=16,
        points_per_side=8,
        proposal_points_per_side=8,
        max_min_mask_region_area=500,
    )
    m = SamClipModel(settings)
    m.load()
    return m


CASES: list[tuple[str, Task, dict[str, Any], str, str]] = [
    # (id, task, options, field, words the message must contain)
    ("point right of image", P, {"points": (Point(61, 5),)}, "options.prompts.points[0]", "outside the 60x40"),
    ("point above image", P, {"points": (Point(5, 5), Point(5, -1))}, "options.prompts.points[1]", "outside"),
    ("point nan", P, {"points": (Point(float("nan"), 5),)}, "options.prompts.points[0]", "outside"),
    ("box outside", P, {"boxes": (Box(10, 10, 70, 30),)}, "options.prompts.boxes[0]", "outside the 60x40"),
    ("box x2 < x1", P, {"boxes": (Box(30, 5, 10, 20),)}, "options.prompts.boxes[0]", "x2 < x1"),
    ("box y2 < y1", P, {"boxes": (Box(1, 1, 5, 5), Box(5, 20, 10, 10))}, "options.prompts.boxes[1]", "y2 < y1"),
    ("box x2 == x1", P, {"boxes": (Box(10, 5, 10, 20),)}, "options.prompts.boxes[0]", "no area"),
    ("box y2 == y1", P, {"boxes": (Box(1, 1, 5, 5), Box(5, 20, 10, 20))}, "options.prompts.boxes[1]", "no area"),
    ("box a point", P, {"boxes": (Box(0, 0, 0, 0),)}, "options.prompts.boxes[0]", "x2 > x1 and y2 > y1"),
    ("box inf", P, {"boxes": (Box(0, 0, float("inf"), 5),)}, "options.prompts.boxes[0]", "non-finite"),
    ("box left of image", P, {"boxes": (Box(-1, 0, 5, 5),)}, "options.prompts.boxes[0]", "outside the 60x40"),
    ("point below image", P, {"points": (Point(5, 40.5),)}, "options.prompts.points[0]", "y in [0, 40]"),
    (
        "negative points only",
        P,
        {"points": (Point(1, 1, positive=False), Point(9, 9, positive=False))},
        "options.prompts.points",
        "add a positive point or a box",
    ),
    ("no prompt", P, {}, "options.prompts", "at least one point or box"),
    ("too many points", P, {"points": (Point(1, 1),) * 4}, "options.prompts.points", "at most 3"),
    ("too many boxes", P, {"boxes": (Box(1, 1, 2, 2),) * 3}, "options.prompts.boxes", "at most 2"),
    ("points on automatic", A, {"points": (Point(1, 1),)}, "options.prompts", "takes no point or box prompts"),
    ("boxes on classify", C, {"labels": ("a",), "boxes": (Box(1, 1, 2, 2),)}, "options.prompts", "no point or box"),
    ("multimask on instances", I, {"labels": ("a",), "multimask_output": True}, "options.prompts", "PROMPTED"),
    ("labels on prompted", P, {"points": (Point(1, 1),), "labels": ("a",)}, "options.labels", "no text labels"),
    ("labels on automatic", A, {"labels": ("a",)}, "options.labels", "no text labels"),
    ("templates on automatic", A, {"prompt_templates": ("a {}",)}, "options.prompt_templates", "no text"),
    ("empty labels classify", C, {}, "options.labels", "needs labels"),
    ("empty labels detect", D, {}, "options.labels", "needs labels"),
    ("empty labels instances", I, {}, "options.labels", "needs labels"),
    ("empty labels semantic", S, {}, "options.labels", "needs labels"),
    ("too many labels", C, {"labels": ("a", "b", "c", "d", "e")}, "options.labels", "at most 4"),
    ("empty label", S, {"labels": ("a", "")}, "options.labels[1]", "is empty"),
    ("blank label", D, {"labels": ("   ",)}, "options.labels[0]", "is empty"),
    ("long label", C, {"labels": ("a", "x" * 11)}, "options.labels[1]", "at most 10"),
    ("repeated label", C, {"labels": ("a", "b", "a")}, "options.labels[2]", "repeats"),
    ("template no slot", C, {"labels": ("a",), "prompt_templates": ("a photo",)}, "options.prompt_templates[0]", "{}"),
    (
        "template two slots",
        C,
        {"labels": ("a",), "prompt_templates": ("{} {}",)},
        "options.prompt_templates[0]",
        "once",
    ),
    (
        "points per side 0",
        A,
        {"automatic": AutomaticOptions(points_per_side=0)},
        "options.automatic.points_per_side",
        "[1, 16]",
    ),
    (
        "points per side big",
        I,
        {"labels": ("a",), "automatic": AutomaticOptions(points_per_side=17)},
        "options.automatic.points_per_side",
        "[1, 16]",
    ),
    (
        "pred iou > 1",
        A,
        {"automatic": AutomaticOptions(pred_iou_thresh=1.5)},
        "options.automatic.pred_iou_thresh",
        "[0, 1]",
    ),
    (
        "stability < 0",
        S,
        {"labels": ("a",), "automatic": AutomaticOptions(stability_score_thresh=-0.1)},
        "options.automatic.stability_score_thresh",
        "[0, 1]",
    ),
    (
        "region area big",
        A,
        {"automatic": AutomaticOptions(min_mask_region_area=501)},
        "options.automatic.min_mask_region_area",
        "[0, 500]",
    ),
    (
        "automatic on prompted",
        P,
        {"points": (Point(1, 1),), "automatic": AutomaticOptions(points_per_side=4)},
        "options.automatic",
        "not used by PROMPTED_SEGMENTATION",
    ),
    ("resize", A, {"min_size": 100}, "options.resize", "leave it unset"),
    ("score threshold", C, {"labels": ("a",), "score_threshold": 1.5}, "options.score_threshold", "[0, 1]"),
    ("nms zero", A, {"nms_iou_threshold": 0.0}, "options.nms_iou_threshold", "(0, 1]"),
    ("mask threshold 1", P, {"points": (Point(1, 1),), "mask_threshold": 1.0}, "options.mask_threshold", "(0, 1)"),
    ("max results 0", A, {"max_results": 0}, "options.max_results", "at least 1"),
    ("nms on classify", C, {"labels": ("a",), "nms_iou_threshold": 0.5}, "options.nms_iou_threshold", "not used"),
    ("max results on semantic", S, {"labels": ("a",), "max_results": 3}, "options.max_results", "not used"),
]


@pytest.mark.parametrize(("task", "options", "field", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_invalid_argument(
    model: SamClipModel, task: Task, options: dict[str, Any], field: str, words: str
) -> None:
    request = InferenceRequest(task, IMAGE, TaskOptions(**options))
    with pytest.raises(InvalidArgument) as err:
        model.validate(request)
    assert words in err.value.message
    assert err.value.field_violations and err.value.field_violations[0][0] == field
    # predict() answers the same error for that request alone
    [answer] = model.predict([request])
    assert isinstance(answer, InvalidArgument) and answer.message == err.value.message


def test_good_inputs_at_the_edges_pass(model: SamClipModel) -> None:
    edge = TaskOptions(points=(Point(0, 0), Point(60, 40)), boxes=(Box(0, 0, 60, 40),), mask_threshold=0.7)
    model.validate(InferenceRequest(P, IMAGE, edge))
    # A sub-pixel box has an area; negative points beside a box are fine.
    thin = TaskOptions(points=(Point(3, 3, positive=False),), boxes=(Box(59.5, 0, 60, 0.25),))
    model.validate(InferenceRequest(P, IMAGE, thin))
    model.validate(InferenceRequest(A, IMAGE, TaskOptions(automatic=AutomaticOptions(16, 1.0, 0.0, 500))))
    model.validate(InferenceRequest(C, IMAGE, TaskOptions(labels=("a", "b", "c", "d"), prompt_templates=("{}",))))
    [answer] = model.predict([InferenceRequest(P, IMAGE, edge)])
    assert isinstance(answer, Prediction)


def test_a_task_the_model_does_not_serve_is_unimplemented(model: SamClipModel) -> None:
    with pytest.raises(Unimplemented, match="sam-clip-composed does not serve KEYPOINT_DETECTION"):
        model.validate(InferenceRequest(Task.KEYPOINT_DETECTION, IMAGE))


# --- settings ---------------------------------------------------------------------------------


def test_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMCLIP_BACKEND", "composed")
    monkeypatch.setenv("SAMCLIP_SAM_VARIANT", "vit_l")
    monkeypatch.setenv("SAMCLIP_MAX_LABELS", "12")
    s = SamClipSettings()
    assert (s.port, s.sam_variant, s.max_labels, s.clip_model) == (50052, "vit_l", 12, "shapes")
    # a SAM variant alone means its official weights; the CLIP pair keeps the shapes default
    assert s.sam_weights == "official" and s.clip_pretrained == "shapes"
    assert s.points_per_side == 32 and s.pred_iou_thresh == 0.88  # the official SAM's defaults
    with pytest.raises(ValidationError):
        s.max_labels = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "overrides",
    [
        {"sam_weights": "bogus"},
        {"sam_weights": "file:"},
        {"sam_variant": "vit_x"},
        {"clip_pretrained": ""},
        {"points_per_side": 80},
        {"prompt_templates": ("no slot",)},
        {"max_labels": 0},
        {"unknown_field": 1},
    ],
)
def test_invalid_settings_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SamClipSettings(**overrides)
