"""Where Mask R-CNN weights come from, and loading them without surprises.

A weights source is a string, parsed once by the settings:

- `torchvision:COCO_V1`: a member of the architecture's torchvision weights enum,
  read from `cache_dir/hub/checkpoints/` (TORCH_HOME's layout); `fetch-weights maskrcnn`
  puts the files there. Nothing is downloaded at run time.
- `file:/path/to/checkpoint.pth`: a state dict (or {"model": state dict}, as torchvision's
  reference training scripts save), loaded with `weights_only=True`.
- `random`: untrained weights, seeded; the service then reports pretrained=false.

Each scheme is one entry in `SCHEMES`. A bare-named scheme (`shapes`) is one more entry; it may bring
its own architecture (a key of `builders.ARCHS`, overriding `variant`), class names and
a note that every answer carries. A missing or mismatched checkpoint raises
ConfigurationError; nothing falls back to random.

This module imports torch only when it loads: `fetch-weights` reads `WEIGHT_FILES`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visioncompare.maskrcnn.categories import PERSON_CATEGORIES, SHAPES_CATEGORIES, SHAPES_KEYPOINT_CATEGORIES
from visioncompare.runtime.errors import ConfigurationError
from visioncompare.runtime.weights import WeightFile, WeightsSpec, load_state_dict
from visioncompare.shapes_models.facts import SHAPES

if TYPE_CHECKING:
    from torch import Tensor, nn

    from visioncompare.maskrcnn.builders import ArchSpec

TORCHVISION_URL = "https://download.pytorch.org/models/"
HUB_SUBDIR = "hub/checkpoints"  # torch.hub's layout under TORCH_HOME


def torchvision_file(filename: str) -> WeightFile:
    """A torchvision checkpoint: its name ends in the first hex digits of its SHA-256."""
    stem = filename.removesuffix(".pth")
    name, _, prefix = stem.rpartition("-")
    return WeightFile(
        name=name,
        url=TORCHVISION_URL + filename,
        sha256=None,
        filename=filename,
        subdir=HUB_SUBDIR,
        sha256_prefix=prefix,
    )


# The `.url`s of MaskRCNN_ResNet50_FPN_Weights, MaskRCNN_ResNet50_FPN_V2_Weights and
# KeypointRCNN_ResNet50_FPN_Weights .COCO_V1 (a test checks they agree with torchvision).
WEIGHT_FILES: list[WeightFile] = [
    torchvision_file("maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"),
    torchvision_file("maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth"),
    torchvision_file("keypointrcnn_resnet50_fpn_coco-fc266e95.pth"),
]


@dataclass(frozen=True)
class ResolvedWeights:
    """What to load into a freshly built model."""

    source: WeightsSpec
    state_dict: Mapping[str, Tensor] | None  # None: keep the (seeded) random init
    pretrained: bool
    frozen_bn_eps: float | None = None  # override of FrozenBatchNorm2d.eps, as torchvision does
    path: Path | None = None


Resolver = Callable[[WeightsSpec, "ArchSpec", Path], ResolvedWeights]


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The runtime's `load_state_dict` (weights_only=True, {"model": ...} unwrapped)."""
    return load_state_dict(path, "Mask R-CNN")


def _torchvision(source: WeightsSpec, arch: ArchSpec, cache_dir: Path) -> ResolvedWeights:
    enum = arch.weights_enum
    if enum is None:
        raise ConfigurationError(f"weights={source}: {arch.name} has no torchvision weights")
    members = [m.name for m in enum]
    if source.value not in members:
        raise ConfigurationError(
            f"weights={source}: {enum.__name__} has no {source.value!r}; choose from {', '.join(members)}"
        )
    member = enum[source.value]
    filename = member.url.rsplit("/", 1)[-1]
    known = next((f for f in WEIGHT_FILES if f.filename == filename), None)
    file = known or torchvision_file(filename)
    path = file.path(cache_dir)
    if not path.is_file():
        how = (
            f"run `fetch-weights maskrcnn --cache-dir {cache_dir} --only {file.name}`"
            if known
            else f"download {member.url} into {path.parent}"
        )
        raise ConfigurationError(
            f"weights={source} for {arch.name} needs {path}, which does not exist: {how}, "
            "or point MASKRCNN_CACHE_DIR (default: TORCH_HOME) at a cache that has it"
        )
    eps = 0.0 if member.name in arch.eps_zero_weights else None
    return ResolvedWeights(source, read_state_dict(path), True, eps, path)


def _file(source: WeightsSpec, arch: ArchSpec, cache_dir: Path) -> ResolvedWeights:
    path = Path(source.value).expanduser()
    if not path.is_file():
        raise ConfigurationError(f"weights={source}: no such file {path}")
    return ResolvedWeights(source, read_state_dict(path), True, None, path)


def _random(source: WeightsSpec, arch: ArchSpec, cache_dir: Path) -> ResolvedWeights:
    return ResolvedWeights(source, None, pretrained=False)


def _shapes(source: WeightsSpec, arch: ArchSpec, cache_dir: Path) -> ResolvedWeights:
    """The shipped shapes reference weights of `arch`, checked against their model card's SHA-256."""
    from visioncompare.shapes_models.cards import shipped

    if arch.shipped_weights is None:
        raise ConfigurationError(f"weights=shapes: there are no shipped shapes weights for {arch.name}")
    trainer = "train_keypoints" if arch.keypoint_names else "train_maskrcnn"
    hint = (
        "Restore visioncompare/shapes_models/weights/ from the repository "
        f"or retrain it with `python -m shapes.{trainer}`."
    )
    weights = shipped(arch.shipped_weights, f"weights=shapes: {arch.name}", hint)
    weights.check(f"weights=shapes: {arch.name}")
    assert weights.path is not None
    return ResolvedWeights(source, read_state_dict(weights.path), True, None, weights.path)


@dataclass(frozen=True)
class Scheme:
    """One way to name weights."""

    resolve: Resolver
    takes_value: bool  # "scheme:value" rather than a bare name
    arch: str | None = None  # the weights' own architecture, overriding `variant`
    categories: tuple[str, ...] | None = None  # the weights' own class names (index 0: background)
    note: str | None = None  # said in every answer, e.g. "shapes reference weights, synthetic data"
    names_classes: bool = False  # the weights come with their class names: no num_classes/categories_file
    keypoint_arch: str = "keypoints"  # the architecture these keypoint weights belong to
    keypoint_categories: tuple[str, ...] = PERSON_CATEGORIES  # and its class names


SCHEMES: dict[str, Scheme] = {
    "torchvision": Scheme(_torchvision, takes_value=True, names_classes=True),
    "file": Scheme(_file, takes_value=True),
    "random": Scheme(_random, takes_value=False),
    SHAPES: Scheme(
        _shapes,
        takes_value=False,
        arch=SHAPES,
        categories=SHAPES_CATEGORIES,
        note="shapes reference weights, synthetic data",
        names_classes=True,
        keypoint_arch="shapes_keypoints",
        keypoint_categories=SHAPES_KEYPOINT_CATEGORIES,
    ),
}


def parse_weights_source(text: str) -> WeightsSpec:
    """Parse and check the syntax of a weights string (the files are checked at load)."""
    spec = WeightsSpec.parse(text)
    scheme, sep, value = spec.scheme, ":" in text.strip(), spec.value
    forms = ", ".join(f"{name}:..." if s.takes_value else name for name, s in SCHEMES.items())
    if scheme not in SCHEMES:
        raise ValueError(f"unknown weights source {text!r}; use one of: {forms}")
    takes_value = SCHEMES[scheme].takes_value
    if takes_value and not value:
        example = "file:/models/checkpoint.pth" if scheme == "file" else "torchvision:COCO_V1"
        raise ValueError(f"{scheme}: needs a value after the colon, e.g. {example}")
    if not takes_value and sep:
        raise ValueError(f"{scheme} takes no value; write just {scheme!r}")
    return spec


def scheme_of(source: WeightsSpec) -> Scheme:
    return SCHEMES[source.scheme]


def resolve(source: WeightsSpec, arch: ArchSpec, cache_dir: Path) -> ResolvedWeights:
    return SCHEMES[source.scheme].resolve(source, arch, cache_dir)


def load_weights(model: nn.Module, weights: ResolvedWeights, what: str) -> None:
    """Load strictly; explain any mismatch with expected vs got, then never fall back."""
    from visioncompare.maskrcnn.builders import set_frozen_bn_eps

    if weights.state_dict is not None:
        problem = describe_mismatch(model.state_dict(), weights.state_dict)
        if problem:
            raise ConfigurationError(f"weights={weights.source} do not fit {what}: {problem}")
        try:
            model.load_state_dict(weights.state_dict, strict=True)
        except RuntimeError as exc:
            raise ConfigurationError(f"weights={weights.source} do not fit {what}: {exc}") from exc
    if weights.frozen_bn_eps is not None:
        set_frozen_bn_eps(model, weights.frozen_bn_eps)


def describe_mismatch(expected: Mapping[str, Any], got: Mapping[str, Any], limit: int = 5) -> str:
    """A readable account of missing, unexpected and wrongly shaped tensors; "" when none."""
    # FrozenBatchNorm2d drops num_batches_tracked while loading; it is no mismatch.
    unexpected = [k for k in got if k not in expected and not k.endswith("num_batches_tracked")]
    missing = [k for k in expected if k not in got]
    shapes = [
        (k, tuple(expected[k].shape), tuple(got[k].shape))
        for k in expected
        if k in got and tuple(expected[k].shape) != tuple(got[k].shape)
    ]
    parts = []
    if shapes:
        shown = "; ".join(f"{k}: expected {e}, got {g}" for k, e, g in shapes[:limit])
        parts.append(f"{len(shapes)} tensor(s) with the wrong shape ({shown})")
    if missing:
        parts.append(f"{len(missing)} missing ({', '.join(missing[:limit])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:limit])})")
    if not parts:
        return ""
    hint = ""
    cls = got.get("roi_heads.box_predictor.cls_score.weight")
    if cls is not None and "roi_heads.box_predictor.cls_score.weight" in expected:
        n = int(cls.shape[0])
        if n != int(expected["roi_heads.box_predictor.cls_score.weight"].shape[0]):
            hint = (
                f"; the checkpoint has {n} classes: for a fine-tuned model set "
                f"MASKRCNN_NUM_CLASSES={n} and MASKRCNN_CATEGORIES_FILE"
            )
    if missing or unexpected:
        hint += "; is it a checkpoint of this architecture? (v1 and v2 differ in their layers)"
    return "; ".join(parts) + hint
