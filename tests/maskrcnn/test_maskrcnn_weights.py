"""Mask R-CNN weights and settings: official layouts load, bad ones fail clearly (no downloads)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torchvision.models.detection import (
    KeypointRCNN_ResNet50_FPN_Weights,
    MaskRCNN_ResNet50_FPN_V2_Weights,
    MaskRCNN_ResNet50_FPN_Weights,
    keypointrcnn_resnet50_fpn,
    maskrcnn_resnet50_fpn,
    maskrcnn_resnet50_fpn_v2,
)
from torchvision.ops.misc import FrozenBatchNorm2d

from visioncompare.maskrcnn import __main__ as entry
from visioncompare.maskrcnn.categories import COCO_CATEGORIES, COCO_KEYPOINT_NAMES
from visioncompare.maskrcnn.model import MaskRCNNModel
from visioncompare.maskrcnn.settings import MaskRCNNSettings
from visioncompare.maskrcnn.weights import WEIGHT_FILES, parse_weights_source
from visioncompare.runtime.errors import ConfigurationError
from visioncompare.runtime.types import InferenceRequest, Prediction, Task
from visioncompare.runtime.weights import WeightsSpec

SMALL = {"min_size": 128, "max_size": 160, "max_detections": 5}
BUILDERS: dict[str, tuple[Callable[..., Any], Any]] = {
    "v1": (maskrcnn_resnet50_fpn, MaskRCNN_ResNet50_FPN_Weights),
    "v2": (maskrcnn_resnet50_fpn_v2, MaskRCNN_ResNet50_FPN_V2_Weights),
    "keypoints": (keypointrcnn_resnet50_fpn, KeypointRCNN_ResNet50_FPN_Weights),
}


def torchvision_state(arch: str, seed: int = 1, **kwargs: Any) -> dict[str, torch.Tensor]:
    """A freshly built torchvision model's state dict: the official checkpoint layout."""
    builder, _ = BUILDERS[arch]
    torch.manual_seed(seed)
    return builder(weights=None, weights_backbone=None, **kwargs).state_dict()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TORCH_HOME with the three official file names, holding freshly built state dicts."""
    root = tmp_path_factory.mktemp("torch_home")
    for arch, file in zip(BUILDERS, WEIGHT_FILES, strict=True):
        path = file.path(root)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(torchvision_state(arch), path)
    return root


def settings(**kwargs: Any) -> MaskRCNNSettings:
    return MaskRCNNSettings(**{**SMALL, **kwargs})


# --- the official files and names agree with torchvision --------------------------------------


def test_weight_files_are_torchvision_checkpoints() -> None:
    urls = [enum.COCO_V1.url for _, enum in BUILDERS.values()]
    assert [f.url for f in WEIGHT_FILES] == urls
    for file in WEIGHT_FILES:
        assert file.subdir == "hub/checkpoints" and file.sha256_prefix and file.filename.endswith(".pth")
        assert file.filename.removesuffix(".pth").endswith("-" + file.sha256_prefix)
    assert MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"] == list(COCO_CATEGORIES)
    assert KeypointRCNN_ResNet50_FPN_Weights.COCO_V1.meta["keypoint_names"] == list(COCO_KEYPOINT_NAMES)


# --- loading through the real path -----------------------------------------------------------


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_official_layout_loads_from_the_torch_home_cache(cache: Path, variant: str) -> None:
    # torch: the network's own state dict is compared (ONNX Runtime holds the weights in its files)
    model = MaskRCNNModel(settings(variant=variant, weights="torchvision:COCO_V1", cache_dir=cache, engine="torch"))
    model.load()
    net = model.networks["detector"].net
    expected = torch.load(WEIGHT_FILES[0 if variant == "v1" else 1].path(cache), weights_only=True)
    for name, value in net.state_dict().items():
        assert torch.equal(value, expected[name]), name
    caps = model.capabilities()
    assert caps.runtime.pretrained and caps.runtime.weights == "torchvision:COCO_V1"
    assert not any("random" in w for w in caps.runtime.warnings)
    official = BUILDERS[variant][1].COCO_V1.meta["num_params"]
    assert caps.card.parameter_count == official
    if variant == "v1":  # torchvision's bug-compatible eps for these weights
        assert {m.eps for m in net.modules() if isinstance(m, FrozenBatchNorm2d)} == {0.0}


def test_service_runs_exactly_what_torchvision_runs_with_the_same_weights(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchvision's own builder, fed the cached file instead of a download, gives the same output."""
    state = torch.load(WEIGHT_FILES[0].path(cache), weights_only=True)
    monkeypatch.setattr(MaskRCNN_ResNet50_FPN_Weights, "get_state_dict", lambda self, **_: state)
    fast = {"rpn_post_nms_top_n_test": 100}
    reference = maskrcnn_resnet50_fpn(
        weights="COCO_V1", min_size=128, max_size=160, box_score_thresh=0.0, box_detections_per_img=5, **fast
    ).eval()
    model = MaskRCNNModel(
        # torch: exactly torchvision's output (test_maskrcnn_onnx.py compares ONNX Runtime within tolerances)
        settings(weights="torchvision:COCO_V1", cache_dir=cache, score_threshold=0.0, engine="torch"),
        detector_kwargs=fast,
    )
    model.load()
    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    [answer] = model.predict([InferenceRequest(Task.OBJECT_DETECTION, image)])
    assert isinstance(answer, Prediction)
    with torch.inference_mode():
        [ref] = reference([torch.from_numpy(image).permute(2, 0, 1).float() / 255])
    # torchvision's top 5 may hold "N/A" classes, which the service never returns.
    keep = torch.tensor([COCO_CATEGORIES[int(i)] != "N/A" for i in ref["labels"]], dtype=torch.bool)
    want = [
        (int(lab), float(s), *b.tolist())
        for lab, s, b in zip(*(ref[k][keep] for k in ("labels", "scores", "boxes")), strict=True)
    ]
    got = [(i.label.id, i.score, *i.box.as_list()) for i in answer.instances if i.label]
    assert len(got) == 5 and want
    assert np.allclose(np.array(got[: len(want)]), np.array(want), rtol=0, atol=1e-5)


def test_keypoint_checkpoint_loads_when_keypoints_are_enabled(cache: Path) -> None:
    model = MaskRCNNModel(settings(weights="random", keypoints_enabled=True, cache_dir=cache))
    model.load()
    caps = model.capabilities()
    assert not caps.runtime.pretrained  # the detector is random
    assert [(c.name, c.weights, c.pretrained) for c in caps.runtime.components] == [
        ("maskrcnn_resnet50_fpn", "random", False),
        ("keypointrcnn_resnet50_fpn", "torchvision:COCO_V1", True),
    ]
    assert "random weights" in caps.runtime.warnings and "random keypoint weights" not in caps.runtime.warnings


def test_missing_file_fails_with_the_fetch_command(tmp_path: Path) -> None:
    model = MaskRCNNModel(settings(weights="torchvision:COCO_V1", cache_dir=tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
    with pytest.raises(ConfigurationError) as err:
        model.load()
    message = str(err.value)
    assert str(expected) in message and "does not exist" in message
    assert f"fetch-weights maskrcnn --cache-dir {tmp_path} --only maskrcnn_resnet50_fpn_coco" in message


def test_unknown_torchvision_weights_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="has no 'COCO_V9'; choose from COCO_V1"):
        MaskRCNNModel(settings(weights="torchvision:COCO_V9", cache_dir=tmp_path)).load()


def test_fine_tuned_checkpoint_with_names_file(tmp_path: Path) -> None:
    checkpoint = tmp_path / "ft.pth"
    torch.save({"model": torchvision_state("v1", num_classes=3), "epoch": 7}, checkpoint)  # reference-script form
    names = tmp_path / "names.json"
    names.write_text(json.dumps(["__background__", "widget", "gadget"]))
    model = MaskRCNNModel(settings(weights=f"file:{checkpoint}", num_classes=3, categories_file=names))
    model.load()
    caps = model.capabilities()
    assert caps.tasks[0].label_names == ("widget", "gadget") and caps.runtime.pretrained
    assert caps.runtime.weights == f"file:{checkpoint}"


def test_wrong_shapes_fail_with_expected_and_got(tmp_path: Path) -> None:
    checkpoint = tmp_path / "ft.pth"
    torch.save(torchvision_state("v1", num_classes=3), checkpoint)
    with pytest.raises(ConfigurationError) as err:
        MaskRCNNModel(settings(weights=f"file:{checkpoint}")).load()
    message = str(err.value)
    assert "roi_heads.box_predictor.cls_score.weight: expected (91, 1024), got (3, 1024)" in message
    assert "MASKRCNN_NUM_CLASSES=3" in message


def test_other_variant_checkpoint_fails_naming_missing_and_unexpected(cache: Path) -> None:
    v2_file = WEIGHT_FILES[1].path(cache)
    with pytest.raises(ConfigurationError, match=r"missing \(.*unexpected \(.*v1 and v2 differ"):
        MaskRCNNModel(settings(variant="v1", weights=f"file:{v2_file}")).load()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ([1, 2, 3], "does not hold a state dict"),
        ({"w": torch.zeros(1), "step": 3}, "does not hold a state dict"),
        (np.zeros(2), "not a weights-only torch checkpoint"),  # a pickled global that weights_only refuses
    ],
)
def test_files_that_are_not_state_dicts_fail_clearly(tmp_path: Path, content: Any, match: str) -> None:
    path = tmp_path / "bad.pth"
    torch.save(content, path)
    with pytest.raises(ConfigurationError, match=match):
        MaskRCNNModel(settings(weights=f"file:{path}")).load()


def test_missing_checkpoint_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no such file"):
        MaskRCNNModel(settings(weights=f"file:{tmp_path / 'nope.pth'}")).load()


# --- settings ---------------------------------------------------------------------------------


def test_weights_source_grammar() -> None:
    assert parse_weights_source("torchvision:COCO_V1") == WeightsSpec("torchvision", "COCO_V1")
    assert parse_weights_source("file:/m/x.pth") == WeightsSpec("file", "/m/x.pth")
    assert str(parse_weights_source(" random ")) == "random"
    for bad, match in [
        ("COCO_V1", "unknown weights source"),
        ("file:", "needs a value"),
        ("random:1", "takes no value"),
        ("http://x/y.pth", "unknown weights source"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_weights_source(bad)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("MASKRCNN_PRESET", raising=False)
    monkeypatch.setenv("MASKRCNN_VARIANT", "v2")
    monkeypatch.setenv("MASKRCNN_KEYPOINTS_ENABLED", "true")
    s = MaskRCNNSettings()
    assert (s.variant, s.keypoints_enabled, s.cache_dir, s.port) == ("v2", True, tmp_path, 50051)
    # The default weights are the shipped shapes preset, at the input size it was trained at.
    assert (s.weights, s.score_threshold, s.mask_threshold, s.min_size, s.max_size) == ("shapes", 0.7, 0.5, 192, 288)
    assert s.class_agnostic_nms is True
    monkeypatch.setenv("MASKRCNN_WEIGHTS", "torchvision:COCO_V1")
    assert (MaskRCNNSettings().min_size, MaskRCNNSettings().max_size) == (800, 1333)
    assert MaskRCNNSettings().class_agnostic_nms is False  # torchvision's per-class NMS
    monkeypatch.setenv("MASKRCNN_WEIGHTS", "shapes")
    monkeypatch.setenv("MASKRCNN_MIN_SIZE", "256")
    assert (MaskRCNNSettings().min_size, MaskRCNNSettings().max_size) == (256, 288)  # explicit settings win


def test_presets_set_defaults_and_explicit_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("WEIGHTS", "MIN_SIZE", "PRESET", "KEYPOINTS_ENABLED", "VARIANT"):
        monkeypatch.delenv(f"MASKRCNN_{key}", raising=False)
    assert MaskRCNNSettings().preset == "shapes"  # named nothing: the shapes preset
    # the weights imply the preset: COCO's, or none for other weights (the field defaults then)
    implied = MaskRCNNSettings(weights="torchvision:COCO_V1")
    assert (implied.preset, implied.min_size, implied.class_agnostic_nms) == ("coco", 800, False)
    assert MaskRCNNSettings(weights="random").preset is None
    monkeypatch.setenv("MASKRCNN_PRESET", "coco")
    coco = MaskRCNNSettings()
    assert (coco.preset, coco.weights, coco.keypoint_weights, coco.min_size, coco.keypoints_enabled) == (
        "coco",
        "torchvision:COCO_V1",
        "torchvision:COCO_V1",
        800,
        False,
    )
    monkeypatch.setenv("MASKRCNN_PRESET", "shapes")
    monkeypatch.setenv("MASKRCNN_MIN_SIZE", "256")
    tuned = MaskRCNNSettings()  # the other defaults stay; the setting given wins
    assert (tuned.preset, tuned.weights, tuned.min_size, tuned.max_size) == ("shapes", "shapes", 256, 288)
    monkeypatch.setenv("MASKRCNN_WEIGHTS", "torchvision:COCO_V1")  # a named preset's weights are its own
    with pytest.raises(ValueError, match="preset=shapes runs weights=shapes, but weights=torchvision:COCO_V1 is given"):
        MaskRCNNSettings()
    monkeypatch.setenv("MASKRCNN_PRESET", "imagenet")
    with pytest.raises(ValueError, match="preset='imagenet' is not a preset of this service; choose from coco, shapes"):
        MaskRCNNSettings()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"variant": "v3"}, "variant"),
        ({"weights": "hub:x"}, "unknown weights source"),
        ({"weights": "torchvision:COCO_V1", "num_classes": 3}, "does not fit weights=torchvision:COCO_V1"),
        ({"num_classes": 3}, "does not fit weights=shapes, which have 6 classes"),
        ({"weights": "random", "num_classes": 3}, "needs categories_file"),
        ({"weights": "random", "categories_file": "/nonexistent"}, "no such file"),
        ({"mask_threshold": 1.0}, "mask_threshold"),
        ({"min_size": 4000}, "max_request_size"),
        ({"unknown_knob": 1}, "unknown_knob"),
    ],
)
def test_bad_settings_fail_at_start(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MaskRCNNSettings(**kwargs)


def test_names_file_must_match_num_classes(tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    names.write_text("widget\ngadget\n\n")
    model = MaskRCNNModel(settings(weights="random", num_classes=4, categories_file=names))
    with pytest.raises(ConfigurationError, match="names 2 classes, but num_classes=4 needs 3"):
        model.load()


def test_main_exits_2_with_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MASKRCNN_SCORE_THRESHOLD", "2")
    with pytest.raises(SystemExit) as exit_info:
        entry.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "MASKRCNN_SCORE_THRESHOLD" in err


def test_a_preset_is_one_registry_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A named preset (as issue 9's "shapes" will be) brings its own class names and note."""
    from visioncompare.maskrcnn import weights

    def resolve_toy(source: WeightsSpec, arch: Any, cache_dir: Path) -> weights.ResolvedWeights:
        return weights.ResolvedWeights(source, None, pretrained=True)

    toy = weights.Scheme(
        resolve_toy,
        takes_value=False,
        arch="v1",
        categories=("__background__", "circle", "square"),
        note="toy weights, made up",
    )
    monkeypatch.setitem(weights.SCHEMES, "toy", toy)
    with pytest.raises(ValueError, match="have 3 classes"):
        settings(weights="toy", num_classes=91)
    model = MaskRCNNModel(settings(weights="toy", variant="v2"))  # the preset's arch wins over variant
    model.load()
    caps = model.capabilities()
    assert caps.tasks[0].label_names == ("circle", "square") and caps.runtime.weights == "toy"
    assert "toy weights, made up" in caps.runtime.warnings and caps.runtime.pretrained
    assert model.networks["detector"].arch.name == "maskrcnn_resnet50_fpn"
