"""The shapes preset of the Mask R-CNN service: loaded through the real weight path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from services.maskrcnn.model import MaskRCNNModel
from services.maskrcnn.settings import MaskRCNNSettings
from services.runtime.errors import ConfigurationError
from services.runtime.types import InferenceRequest, Task, TaskOptions, Vocabulary
from shapes import weights as shapes_weights
from shapes.scenes import CLASSES, EVAL_SEEDS, generate_scene


@pytest.fixture(scope="module")
def model() -> MaskRCNNModel:
    m = MaskRCNNModel(MaskRCNNSettings(metrics_port=None))  # the default weights
    m.load()
    return m


def test_default_weights_are_the_shipped_shapes_preset(model: MaskRCNNModel) -> None:
    caps = model.capabilities()
    assert caps.runtime.weights.startswith("shapes") and caps.runtime.pretrained is True
    assert "shapes reference weights, synthetic data" in caps.runtime.warnings
    assert not any("random" in w for w in caps.runtime.warnings)
    assert "shapes reference model" in caps.card.description
    [segment] = [t for t in caps.tasks if t.task == Task.INSTANCE_SEGMENTATION]
    assert segment.vocabulary == Vocabulary.FIXED and segment.label_names == CLASSES
    assert 1_000_000 < caps.card.parameter_count < 3_000_000


def test_finds_the_shapes_of_a_held_out_scene(model: MaskRCNNModel) -> None:
    scene = generate_scene(EVAL_SEEDS[3])
    options = TaskOptions(score_threshold=0.2, max_results=10)
    [p] = model.predict([InferenceRequest(Task.INSTANCE_SEGMENTATION, scene.image, options)])
    assert not isinstance(p, Exception)
    found = {i.label.name for i in p.instances if i.label is not None}
    assert found & {o.category for o in scene.objects}
    assert "shapes reference weights, synthetic data" in p.warnings


def test_altered_weights_fail_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "weights"
    shutil.copytree(shapes_weights.WEIGHTS_DIR, copy)
    with open(copy / "maskrcnn_shapes.pth", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00" * 8)
    monkeypatch.setattr(shapes_weights, "WEIGHTS_DIR", copy)
    with pytest.raises(ConfigurationError, match="missing or altered"):
        MaskRCNNModel(MaskRCNNSettings(metrics_port=None)).load()
