"""Mask R-CNN in-process: coordinates, labels, options, batching (CPU, random weights)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from visioncompare.maskrcnn.categories import COCO_CATEGORIES, COCO_KEYPOINT_NAMES
from visioncompare.maskrcnn.model import MaskRCNNModel
from visioncompare.maskrcnn.options import input_shape
from visioncompare.maskrcnn.settings import MaskRCNNSettings
from visioncompare.runtime.errors import InvalidArgument, Unimplemented
from visioncompare.runtime.masks import decode_rle
from visioncompare.runtime.types import (
    AutomaticOptions,
    Box,
    InferenceRequest,
    Instance,
    Point,
    Prediction,
    Task,
    TaskOptions,
    Vocabulary,
)

# Small inputs and fewer RPN proposals keep each forward pass under a second on CPU;
# the network is torchvision's real ResNet-50-FPN Mask R-CNN and Keypoint R-CNN.
SMALL = {"min_size": 128, "max_size": 160, "max_detections": 10, "score_threshold": 0.0}
FAST = {"rpn_post_nms_top_n_test": 100}


def small_model(**overrides: Any) -> MaskRCNNModel:
    settings = MaskRCNNSettings(weights="random", keypoint_weights="random", **{**SMALL, **overrides})
    model = MaskRCNNModel(settings, detector_kwargs=FAST)
    model.load()
    return model


@pytest.fixture(scope="module")
def model() -> Iterator[MaskRCNNModel]:
    m = small_model(keypoints_enabled=True)
    yield m
    m.close()


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def run(model: MaskRCNNModel, task: Task, image: np.ndarray, **options: Any) -> Prediction:
    [answer] = model.predict([InferenceRequest(task, image, TaskOptions(**options))])
    assert isinstance(answer, Prediction), answer
    return answer


def summary(instances: list[Instance]) -> list[tuple[Any, ...]]:
    return [(i.label.id if i.label else None, i.score, *i.box.as_list()) for i in instances]


def assert_same(a: list[Instance], b: list[Instance]) -> None:
    """Equal up to float noise of batched convolutions (0.01 px: on one thread, 1e-3 is too tight)."""
    assert [i.label.id for i in a if i.label] == [i.label.id for i in b if i.label]
    assert np.allclose(np.array(summary(a), float), np.array(summary(b), float), atol=1e-2)
    for x, y in zip(a, b, strict=True):
        if x.mask is not None and y.mask is not None:
            mx, my = decode_rle(x.mask.rle), decode_rle(y.mask.rle)
            assert (mx != my).sum() <= max(2, 0.01 * mx.sum())


# --- coordinates and labels, with controlled RoI-head outputs ---------------------------------

# (image H, W), per-request resize (min, max), model-input (H, W), box in model input, box in image
CASES = [
    pytest.param((60, 100), (120, 400), (120, 200), (20, 40, 100, 80), (10, 20, 50, 40), id="upscaled-x2"),
    pytest.param((300, 500), (None, None), (96, 160), (16, 32, 80, 64), (50, 100, 250, 200), id="downscaled"),
    pytest.param((30, 40), (None, None), (120, 160), (40, 20, 80, 60), (10, 5, 20, 15), id="below-min-size"),
]


def stub_heads(seen: list[Any], box: tuple[float, ...], extra: dict[str, torch.Tensor] | None = None) -> Any:
    """A roi_heads.forward that returns fixed detections in model-input coordinates."""

    def forward(features: Any, proposals: Any, image_sizes: list[tuple[int, int]], targets: Any = None) -> Any:
        seen.append(list(image_sizes))
        out = {
            # person, stop sign (index 13, after an N/A), N/A (must be dropped), toothbrush (90)
            "boxes": torch.tensor([box, box, box, box], dtype=torch.float32),
            "labels": torch.tensor([1, 13, 12, 90]),
            "scores": torch.tensor([0.9, 0.8, 0.75, 0.7]),
            **(extra or {}),
        }
        return [out for _ in image_sizes], {}

    return forward


@pytest.mark.parametrize(("image_hw", "resize", "input_hw", "box_in", "box_out"), CASES)
def test_boxes_masks_and_labels_come_back_in_original_image_coordinates(
    model: MaskRCNNModel,
    monkeypatch: pytest.MonkeyPatch,
    image_hw: tuple[int, int],
    resize: tuple[int | None, int | None],
    input_hw: tuple[int, int],
    box_in: tuple[float, ...],
    box_out: tuple[float, ...],
) -> None:
    # Soft masks: the left half of each box at 0.9, the right half at 0.1.
    soft = torch.full((4, 1, 28, 28), 0.1)
    soft[..., :14] = 0.9
    seen: list[Any] = []
    heads = model.networks["detector"].net.roi_heads
    monkeypatch.setattr(heads, "forward", stub_heads(seen, box_in, {"masks": soft}))
    h, w = image_hw
    min_size, max_size = resize
    result = run(model, Task.INSTANCE_SEGMENTATION, noise(h, w), min_size=min_size, max_size=max_size)

    assert seen == [[input_hw]]
    assert input_shape(h, w, min_size or 128, max_size or 160) == input_hw  # the batch key's arithmetic
    assert [i.label.name for i in result.instances] == ["person", "stop sign", "toothbrush"]
    assert [i.label.id for i in result.instances] == [1, 13, 90]
    assert [COCO_CATEGORIES[i.label.id] for i in result.instances] == ["person", "stop sign", "toothbrush"]
    for instance in result.instances:
        assert instance.box.as_list() == pytest.approx(box_out, abs=1e-3)
        assert instance.mask is not None
        mask = decode_rle(instance.mask.rle)
        assert mask.shape == (h, w)
        x1, y1, x2, y2 = box_out
        left_half = Box(x1, y1, (x1 + x2) / 2, y2)
        assert instance.mask.bbox.as_list() == pytest.approx(left_half.as_list(), abs=1.5)
        # torchvision pastes masks on whole pixels, a pixel wider than the box (its legacy "+1")
        half_w, full_h = left_half.x2 - x1, y2 - y1
        assert (half_w - 1) * (full_h - 1) <= instance.mask.area <= (half_w + 2) * (full_h + 2)


def test_keypoints_come_back_in_original_image_coordinates(
    model: MaskRCNNModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    # Keypoint k at (10 + 5k, 20 + 2k) in a 120 x 200 model input (a 60 x 100 image at x2).
    xy = torch.tensor([[10.0 + 5 * k, 20.0 + 2 * k, 1.0] for k in range(17)])
    # torchvision's keypoint scores are heatmap logits: the service returns their sigmoid.
    logits = torch.arange(17.0) - 8.0
    extra = {"keypoints": xy.expand(4, 17, 3).clone(), "keypoints_scores": logits.expand(4, 17).clone()}
    heads = model.networks["keypoints"].net.roi_heads
    monkeypatch.setattr(heads, "forward", stub_heads(seen, (20, 40, 100, 80), extra))
    result = run(model, Task.KEYPOINT_DETECTION, noise(60, 100), min_size=120, max_size=400)

    assert seen == [[(120, 200)]]
    # The keypoint network's only class is "person": labels 13, 12 and 90 are not in its set.
    [person] = result.instances
    assert person.label is not None and person.label.name == "person"
    assert person.box.as_list() == pytest.approx([10, 20, 50, 40])
    assert [k.name for k in person.keypoints] == list(COCO_KEYPOINT_NAMES)
    for k, point in enumerate(person.keypoints):
        assert (point.x, point.y, point.score) == pytest.approx((5 + 2.5 * k, 10 + k, 1 / (1 + math.exp(8 - k))))


def test_staged_forward_matches_torchvision_forward(model: MaskRCNNModel) -> None:
    image = noise(100, 150, seed=3)
    mine = run(model, Task.INSTANCE_SEGMENTATION, image).instances
    net = model.networks["detector"].net
    with torch.inference_mode():
        [ref] = net([torch.from_numpy(image).permute(2, 0, 1).float() / 255])
    valid = torch.tensor([i for i, n in enumerate(COCO_CATEGORIES) if i and n != "N/A"])
    keep = torch.isin(ref["labels"], valid)
    assert 0 < int(keep.sum()) <= len(mine)
    expected = [
        (int(lab), float(s), *b.tolist())
        for lab, s, b in zip(ref["labels"][keep], ref["scores"][keep], ref["boxes"][keep], strict=True)
    ]
    assert np.allclose(np.array(summary(mine[: len(expected)])), np.array(expected), rtol=0, atol=1e-5)
    for instance, soft in zip(mine, ref["masks"][keep], strict=False):
        assert instance.mask is not None
        assert np.array_equal(decode_rle(instance.mask.rle), (soft[0] > 0.5).numpy())


# --- options ---------------------------------------------------------------------------------


def test_detection_has_no_masks_and_matches_segmentation_boxes(model: MaskRCNNModel) -> None:
    image = noise(100, 150, seed=1)
    detected = run(model, Task.OBJECT_DETECTION, image).instances
    segmented = run(model, Task.INSTANCE_SEGMENTATION, image).instances
    assert detected and all(i.mask is None and not i.keypoints for i in detected)
    assert summary(detected) == summary(segmented)
    assert all(i.mask is not None and i.mask.rle.height == 100 and i.mask.rle.width == 150 for i in segmented)


def test_score_threshold_max_results_and_label_filter(model: MaskRCNNModel) -> None:
    image = noise(100, 150, seed=1)
    everything = run(model, Task.OBJECT_DETECTION, image).instances
    assert len(everything) == 10  # max_detections
    assert all("N/A" != i.label.name and i.label.name in COCO_CATEGORIES for i in everything if i.label)
    scores = [i.score for i in everything]
    assert scores == sorted(scores, reverse=True)

    threshold = scores[4]
    above = run(model, Task.OBJECT_DETECTION, image, score_threshold=threshold).instances
    assert summary(above) == summary(everything[:5])

    assert summary(run(model, Task.OBJECT_DETECTION, image, max_results=3).instances) == summary(everything[:3])

    # The filter applies before the top-k cut: a rarer class still gets its 10 best boxes.
    wanted = {"cat", "dog"}
    filtered = run(model, Task.OBJECT_DETECTION, image, labels=tuple(wanted)).instances
    assert filtered and {i.label.name for i in filtered if i.label} <= wanted
    assert len(filtered) == 10


def test_class_agnostic_nms_keeps_one_label_per_object_after_the_class_filter(
    model: MaskRCNNModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    heads = model.networks["detector"].net.roi_heads
    monkeypatch.setattr(heads, "score_thresh", 0.1)
    monkeypatch.setattr(heads, "nms_thresh", 0.5)
    # Two boxes on one object (person 0.62, car 0.38) and a car elsewhere (0.18).
    proposals = torch.tensor([[10, 10, 50, 50], [11, 11, 51, 51], [70, 70, 90, 90]], dtype=torch.float32)
    logits = torch.zeros(3, len(COCO_CATEGORIES))
    logits[0, 1], logits[1, 3], logits[2, 3] = 5.0, 4.0, 3.0
    regression = torch.zeros(3, 4 * len(COCO_CATEGORIES))  # boxes are the proposals

    def labels(agnostic: bool, wanted: list[int] | None) -> list[int]:
        monkeypatch.setattr(heads, "class_agnostic_nms", agnostic)
        monkeypatch.setattr(heads, "label_filters", None if wanted is None else [torch.tensor(wanted)])
        _, scores, found = heads.postprocess_detections(logits, regression, [proposals], [(100, 100)])
        assert scores[0].tolist() == sorted(scores[0].tolist(), reverse=True)
        return found[0].tolist()

    assert labels(False, None) == [1, 3, 3]  # torchvision's NMS is per class
    assert labels(True, None) == [1, 3]  # the car box on the person is suppressed
    assert labels(True, [3]) == [3, 3]  # an unwanted class suppresses nothing
    assert labels(False, [3]) == [3, 3]


def test_class_agnostic_nms_setting_reaches_the_heads() -> None:
    agnostic = small_model(class_agnostic_nms=True)
    try:
        assert agnostic.networks["detector"].net.roi_heads.class_agnostic_nms is True
        assert agnostic.capabilities().card.description.endswith("; class-agnostic NMS")
    finally:
        agnostic.close()


def test_mask_threshold_and_nms_and_resize(model: MaskRCNNModel) -> None:
    image = noise(100, 150, seed=1)
    low = run(model, Task.INSTANCE_SEGMENTATION, image, mask_threshold=0.2, max_results=5).instances
    high = run(model, Task.INSTANCE_SEGMENTATION, image, mask_threshold=0.8, max_results=5).instances
    assert summary(low) == summary(high)
    areas = [(a.mask.area, b.mask.area) for a, b in zip(low, high, strict=True) if a.mask and b.mask]
    assert all(a >= b for a, b in areas) and sum(a for a, _ in areas) > sum(b for _, b in areas)

    loose = run(model, Task.OBJECT_DETECTION, image, nms_iou_threshold=0.9).instances
    tight = run(model, Task.OBJECT_DETECTION, image, nms_iou_threshold=0.1).instances
    assert summary(loose) != summary(tight)

    resized = run(model, Task.OBJECT_DETECTION, image, min_size=64, max_size=96).instances
    assert resized and summary(resized) != summary(run(model, Task.OBJECT_DETECTION, image).instances)
    assert all(0 <= i.box.x1 <= i.box.x2 <= 150 and 0 <= i.box.y1 <= i.box.y2 <= 100 for i in resized)


@pytest.mark.parametrize(
    ("task", "options", "match"),
    [
        (Task.OBJECT_DETECTION, {"labels": ("cat", "kat")}, r"unknown label\(s\) 'kat'.*valid labels: person, bicycle"),
        (Task.KEYPOINT_DETECTION, {"labels": ("cat",)}, r"unknown label\(s\) 'cat'.*valid labels: person$"),
        (Task.OBJECT_DETECTION, {"mask_threshold": 0.5}, "does not use options.mask_threshold"),
        (Task.INSTANCE_SEGMENTATION, {"prompt_templates": ("a {}",)}, "options.prompt_templates"),
        (Task.INSTANCE_SEGMENTATION, {"points": (Point(1, 1),)}, "options.prompts"),
        (Task.OBJECT_DETECTION, {"automatic": AutomaticOptions(points_per_side=4)}, "options.automatic"),
        (Task.OBJECT_DETECTION, {"score_threshold": 1.5}, r"score_threshold is 1.5; it must be in \[0, 1\], or left"),
        (Task.OBJECT_DETECTION, {"score_threshold": float("nan")}, "options.score_threshold is nan"),
        (Task.OBJECT_DETECTION, {"max_results": 11}, r"max_results is 11; it must be in \[1, 10\] \(max_detections"),
        (Task.INSTANCE_SEGMENTATION, {"mask_threshold": 1.0}, r"options.mask_threshold is 1; it must be in \(0, 1\)"),
        (Task.OBJECT_DETECTION, {"nms_iou_threshold": 0.0}, "nms_iou_threshold"),
        (Task.OBJECT_DETECTION, {"min_size": 8}, r"options.resize.min_size is 8; it must be in \[32, 2048\]"),
        (Task.OBJECT_DETECTION, {"max_size": 5000}, "options.resize.max_size is 5000"),
    ],
)
def test_bad_options_are_invalid_argument(
    model: MaskRCNNModel, task: Task, options: dict[str, Any], match: str
) -> None:
    request = InferenceRequest(task, noise(20, 20), TaskOptions(**options))
    with pytest.raises(InvalidArgument, match=match):
        model.validate(request)
    [answer] = model.predict([request])  # predict answers it alone, too
    assert isinstance(answer, InvalidArgument)


def test_unserved_tasks_are_unimplemented_naming_the_served_ones(model: MaskRCNNModel) -> None:
    with pytest.raises(Unimplemented, match="serves: OBJECT_DETECTION, INSTANCE_SEGMENTATION, KEYPOINT"):
        model.validate(InferenceRequest(Task.ZERO_SHOT_CLASSIFICATION, noise(20, 20)))


# --- batching --------------------------------------------------------------------------------


def test_batch_equals_one_by_one_and_keys_group_by_input_shape(model: MaskRCNNModel) -> None:
    a, b = noise(100, 150, seed=1), noise(90, 140, seed=2)  # both pad to a 128 x 160 input
    c = noise(100, 100, seed=3)  # pads to 128 x 128
    requests = [
        InferenceRequest(Task.INSTANCE_SEGMENTATION, a),
        InferenceRequest(Task.OBJECT_DETECTION, b, TaskOptions(score_threshold=0.3)),
        InferenceRequest(Task.INSTANCE_SEGMENTATION, a, TaskOptions(labels=("person",))),
    ]
    batched = model.predict(requests)
    for request, answer in zip(requests, batched, strict=True):
        assert isinstance(answer, Prediction) and answer.batch_size == 3
        [alone] = model.predict([request])
        assert isinstance(alone, Prediction)
        assert_same(answer.instances, alone.instances)

    key = model.batch_key
    assert key(requests[0]) == key(requests[1])  # detection and segmentation share batches
    assert key(requests[0]) != key(InferenceRequest(Task.OBJECT_DETECTION, c))
    assert key(requests[0]) != key(InferenceRequest(Task.OBJECT_DETECTION, a, TaskOptions(min_size=64)))
    assert key(requests[0]) != key(InferenceRequest(Task.KEYPOINT_DETECTION, a))


def test_a_bad_request_fails_alone_in_its_batch(model: MaskRCNNModel) -> None:
    good = InferenceRequest(Task.OBJECT_DETECTION, noise(100, 150, seed=1), TaskOptions(max_results=2))
    bad = InferenceRequest(Task.OBJECT_DETECTION, noise(100, 150, seed=1), TaskOptions(labels=("kat",)))
    first, second = model.predict([good, bad])
    assert isinstance(first, Prediction) and len(first.instances) == 2
    assert isinstance(second, InvalidArgument)


# --- capabilities ----------------------------------------------------------------------------


def test_capabilities(model: MaskRCNNModel) -> None:
    caps = model.capabilities()
    card = caps.card
    assert (card.name, card.organization, card.release_date, card.license) == ("Mask R-CNN", "Meta", "2017-10", "MIT")
    assert card.paper_url == "https://arxiv.org/abs/1703.06870" and "torchvision" in card.description
    assert card.description.endswith("; per-class NMS")  # torchvision's default
    # torchvision's published parameter counts of the two architectures
    assert card.parameter_count == 44_401_393 + 59_137_258
    by_task = {t.task: t for t in caps.tasks}
    assert set(by_task) == {Task.OBJECT_DETECTION, Task.INSTANCE_SEGMENTATION, Task.KEYPOINT_DETECTION}
    names = by_task[Task.OBJECT_DETECTION].label_names
    assert len(names) == 80 and "N/A" not in names and "__background__" not in names
    assert names[:3] == ("person", "bicycle", "car") and names[-1] == "toothbrush"
    assert by_task[Task.KEYPOINT_DETECTION].label_names == ("person",)
    assert all(t.vocabulary == Vocabulary.FIXED for t in caps.tasks)
    rt = caps.runtime
    # engine=auto on CPU: ONNX Runtime, measured faster for Mask R-CNN (bench/engines.py)
    assert (rt.device, rt.engine, rt.precision, rt.weights, rt.pretrained) == (
        "cpu", "onnxruntime", "fp32", "random", False
    )  # fmt: skip
    assert "random weights" in rt.warnings and "no CUDA device: running on CPU" in rt.warnings
    assert [c.parameter_count for c in rt.components] == [44_401_393, 59_137_258]
    prediction = run(model, Task.OBJECT_DETECTION, noise(40, 40), max_results=1)
    assert "random weights" in prediction.warnings and prediction.timing.inference_ms > 0


def test_keypoints_are_not_served_unless_enabled() -> None:
    model = small_model()
    assert model.served_tasks() == {Task.OBJECT_DETECTION, Task.INSTANCE_SEGMENTATION}
    with pytest.raises(Unimplemented, match="KEYPOINT_DETECTION"):
        model.validate(InferenceRequest(Task.KEYPOINT_DETECTION, noise(20, 20)))
    assert model.capabilities().card.parameter_count == 44_401_393
