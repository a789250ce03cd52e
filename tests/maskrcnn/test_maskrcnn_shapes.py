"""The shapes preset of the Mask R-CNN service: loaded through the real weight path, with
its keypoint model (triangle corners); and the corner annotations it was trained on."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from shapes.scenes import CLASSES, EVAL_SEEDS, TRIANGLE_KEYPOINTS, coco_dataset, generate_scene
from visioncompare.maskrcnn.model import MaskRCNNModel
from visioncompare.maskrcnn.settings import MaskRCNNSettings
from visioncompare.runtime.errors import ConfigurationError
from visioncompare.runtime.types import InferenceRequest, Task, TaskOptions, Vocabulary
from visioncompare.shapes_models import cards as shapes_cards


@pytest.fixture(scope="module")
def model() -> MaskRCNNModel:
    m = MaskRCNNModel(MaskRCNNSettings(metrics_port=None))  # the default weights
    m.load()
    return m


def test_default_weights_are_the_shipped_shapes_preset(model: MaskRCNNModel) -> None:
    caps = model.capabilities()
    assert caps.runtime.weights.startswith("shapes") and caps.runtime.pretrained is True
    assert caps.runtime.preset == "shapes"
    assert "shapes reference weights, synthetic data" in caps.runtime.warnings
    assert not any("random" in w for w in caps.runtime.warnings)
    assert "shapes reference model" in caps.card.description
    [segment] = [t for t in caps.tasks if t.task == Task.INSTANCE_SEGMENTATION]
    assert segment.vocabulary == Vocabulary.FIXED and segment.label_names == CLASSES
    [keypoints] = [t for t in caps.tasks if t.task == Task.KEYPOINT_DETECTION]
    assert keypoints.label_names == ("triangle",)
    assert [(c.name, c.weights, c.pretrained) for c in caps.runtime.components] == [
        ("shapes_maskrcnn", "shapes", True),
        ("shapes_keypointrcnn", "shapes", True),
    ]
    assert all(1_000_000 < c.parameter_count < 3_000_000 for c in caps.runtime.components)


def test_triangle_corners_are_annotated_topmost_first_then_clockwise() -> None:
    scenes = [generate_scene(s) for s in EVAL_SEEDS[:12]]
    objects = [o for scene in scenes for o in scene.objects]
    triangles = [o for o in objects if o.category == "triangle"]
    assert len(triangles) >= 5 and all(bool(o.corners) == (o.category == "triangle") for o in objects)
    for t in triangles:
        (x1, y1), (x2, y2), (x3, y3) = t.corners
        assert y1 <= min(y2, y3)
        # Positive shoelace area in image coordinates (y down) is clockwise on screen.
        assert (x1 * y2 - x2 * y1) + (x2 * y3 - x3 * y2) + (x3 * y1 - x1 * y3) > 0
    annotations = coco_dataset(scenes)["annotations"]
    with_keypoints = [a for a in annotations if "keypoints" in a]
    assert len(with_keypoints) == len(triangles)
    assert all(a["category_id"] == CLASSES.index("triangle") + 1 and a["num_keypoints"] == 3 for a in with_keypoints)
    flags = [v for a in with_keypoints for v in a["keypoints"][2::3]]
    assert set(flags) <= {1, 2} and flags.count(2) > flags.count(1)  # most corners are visible


def test_finds_the_corners_of_held_out_triangles(model: MaskRCNNModel) -> None:
    """Every corner of a triangle that the keypoint model finds lies within a few pixels of a
    true corner; the canonical order is checked by the accuracy floors (keypoint AP)."""
    scenes = [generate_scene(s) for s in EVAL_SEEDS[:8]]
    errors = []
    for scene in scenes:
        [p] = model.predict([InferenceRequest(Task.KEYPOINT_DETECTION, scene.image)])
        assert not isinstance(p, Exception)
        truth = [np.array(o.corners) for o in scene.objects if o.corners]
        for instance in p.instances:
            assert instance.label is not None and instance.label.name == "triangle"
            assert [k.name for k in instance.keypoints] == list(TRIANGLE_KEYPOINTS)
            assert all(0.0 <= k.score <= 1.0 for k in instance.keypoints)  # a score, not a logit
            guess = np.array([(k.x, k.y) for k in instance.keypoints])
            assert truth, f"scene {scene.seed}: a triangle found where there is none"
            nearest = min(truth, key=lambda c: np.abs(c.mean(0) - guess.mean(0)).sum())
            errors.append(np.linalg.norm(nearest[:, None] - guess[None], axis=2).min(axis=1).mean())
    assert len(errors) >= 6 and float(np.median(errors)) < 4.0, errors


def test_finds_the_shapes_of_a_held_out_scene(model: MaskRCNNModel) -> None:
    scene = generate_scene(EVAL_SEEDS[3])
    options = TaskOptions(score_threshold=0.2, max_results=10)
    [p] = model.predict([InferenceRequest(Task.INSTANCE_SEGMENTATION, scene.image, options)])
    assert not isinstance(p, Exception)
    found = {i.label.name for i in p.instances if i.label is not None}
    assert found & {o.category for o in scene.objects}
    assert "shapes reference weights, synthetic data" in p.warnings


@pytest.mark.parametrize(
    ("name", "trainer"), [("maskrcnn_shapes", "train_maskrcnn"), ("keypointrcnn_shapes", "train_keypoints")]
)
def test_altered_weights_fail_at_start(
    name: str, trainer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "weights"
    shutil.copytree(shapes_cards.WEIGHTS_DIR, copy)
    with open(copy / f"{name}.pth", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00" * 8)
    monkeypatch.setattr(shapes_cards, "WEIGHTS_DIR", copy)
    with pytest.raises(
        ConfigurationError,
        match=rf"{name}\.pth: SHA-256 .* does not match the model card's .*"
        rf"damaged or was replaced.*shapes\.{trainer}",
    ):
        MaskRCNNModel(MaskRCNNSettings(metrics_port=None)).load()
    (copy / f"{name}.json").unlink()
    with pytest.raises(ConfigurationError, match=rf"shapes model card not found: .*{name}\.json.*shapes\.{trainer}"):
        MaskRCNNModel(MaskRCNNSettings(metrics_port=None)).load()


def test_keypoints_can_be_turned_off_for_the_preset() -> None:
    model = MaskRCNNModel(MaskRCNNSettings(metrics_port=None, keypoints_enabled=False))
    model.load()
    assert Task.KEYPOINT_DETECTION not in {t.task for t in model.capabilities().tasks}
