"""What the SAM-CLIP backends' Capabilities say, as data: each backend's card words, and the
warnings a part's weights earn (random, or trained on the shapes world only). The builders
fill in the facts (variants, weight sources, the weights' own cards); nothing here builds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from visioncompare.runtime.types import ModelComponent
from visioncompare.samclip.settings import SamClipSettings
from visioncompare.samclip.weights import SHAPES_NOTE, WeightSource

LICENSE = "Apache-2.0 (segment-anything), MIT (OpenCLIP)"


@dataclass(frozen=True)
class CardWords:
    """A backend's card: `description` is a str.format template over the builder's facts."""

    card_name: str
    license: str
    description: str


COMPOSED = CardWords(
    card_name="SAM-CLIP (composed: Segment Anything + OpenCLIP)",
    license=LICENSE,
    description=(
        "SAM-CLIP's tasks served by composing Segment Anything {sam_variant} with OpenCLIP {clip_model} "
        "({clip_pretrained}); Apple's merged single-backbone SAM-CLIP weights are not released, so this "
        "is not that model.{shapes}"
    ),
)

MERGED = CardWords(
    card_name="SAM-CLIP (merged: this project's reproduction of the paper's method)",
    license=LICENSE,
    description=(
        "One ViT backbone with a SAM head and a CLIP head, merged by multi-task distillation as in "
        "arXiv 2310.15308 (head probing, then distillation with SAM replay). Not Apple's weights, which "
        "are unreleased: merged by this project from {teachers}{data}{figures}. Text: the CLIP teacher's "
        "text tower, open_clip {clip_model} ({clip_pretrained}). Masks are named {regions}."
    ),
)

#: How the merged model names a mask, by SamClipSettings.merged_regions.
MERGED_REGIONS = {
    "tokens": "from the CLIP head's tokens pooled inside the mask (one backbone pass per image)",
    "crops": "from each mask's crop, through the backbone and CLIP head again (a pass per crop batch)",
}
MERGED_ORGANIZATION = "Apple (SAM-CLIP method); reproduction and weights: this project"
OFFICIAL_ORGANIZATION = {"SAM": "Meta (Segment Anything)", "CLIP": "OpenCLIP/LAION (CLIP)"}

# What a part on random weights makes meaningless, by what the part does.
RANDOM_EFFECT = {
    "sam": "masks are not meaningful",
    "clip": "labels and scores are not meaningful",
    "merged": "masks, labels and scores are not meaningful",
}


@dataclass(frozen=True)
class Part:
    """One network of a backend as the card shows it: its component, where its weights came
    from, and which RANDOM_EFFECT it has."""

    component: ModelComponent
    source: WeightSource
    role: str


def component(name: str, source: WeightSource, module: Any) -> ModelComponent:
    count = sum(p.numel() for p in module.parameters())
    return ModelComponent(name=name, weights=source.label, pretrained=source.pretrained, parameter_count=count)


def shapes_classes(sources: Sequence[WeightSource]) -> list[str]:
    """The classes the shapes weights know, from the first weights card that lists them."""
    for source in sources:
        if source.card and source.card.get("classes"):
            return [str(c) for c in source.card["classes"]]
    from visioncompare.shapes_models.vocabulary import CLASSES

    return list(CLASSES)


def weight_warnings(parts: Sequence[Part]) -> list[str]:
    """One warning per part on random weights, and one per weights note (e.g. the shapes
    world's) naming the parts it covers."""
    warnings = [
        f"random weights: {p.component.name} ({RANDOM_EFFECT[p.role]})" for p in parts if not p.component.pretrained
    ]
    notes: dict[str, list[str]] = {}
    for p in parts:
        if p.source.note:
            notes.setdefault(p.source.note, []).append(p.component.name)
    sources = [p.source for p in parts]
    for note, names in notes.items():
        scope = ""
        if note == SHAPES_NOTE:
            scope = (
                f": trained only on generated scenes of {', '.join(shapes_classes(sources))}; other images mean little"
            )
        warnings.append(f"{note} ({' and '.join(names)}){scope}")
    return warnings


def composed_organization(sam: WeightSource, clip: WeightSource) -> str:
    weights = [
        f"this project ({SHAPES_NOTE})" if source.note == SHAPES_NOTE else OFFICIAL_ORGANIZATION[name]
        for source, name in ((sam, "SAM"), (clip, "CLIP"))
    ]
    return f"Apple (SAM-CLIP method); weights: {' and '.join(dict.fromkeys(weights))}"


def _float_metrics(card: Mapping[str, Any] | None) -> list[tuple[str, float]]:
    return [(k, v) for k, v in ((card or {}).get("metrics") or {}).items() if isinstance(v, float)]


def composed_description(settings: SamClipSettings, sam: WeightSource, clip: WeightSource) -> str:
    """COMPOSED's description: the variants, and what the shapes weights are if they serve."""
    named = [(source, name) for source, name in ((sam, "SAM"), (clip, "CLIP")) if source.note == SHAPES_NOTE]
    shapes = ""
    if named:
        metrics = "; ".join(f"{name} {k}={v}" for source, name in named for k, v in _float_metrics(source.card))
        shapes = (
            f" {' and '.join(name for _, name in named)}: {SHAPES_NOTE}: small models this project trained on "
            f"its generated shapes world, which know only {', '.join(shapes_classes([clip, sam]))}"
            + (f" (held-out {metrics})" if metrics else "")
            + "."
        )
    return COMPOSED.description.format(
        sam_variant=settings.sam_variant,
        clip_model=settings.clip_model,
        clip_pretrained=settings.clip_pretrained,
        shapes=shapes,
    )


def merged_description(settings: SamClipSettings, merged: WeightSource) -> str:
    """MERGED's description: the teachers, the data and the held-out figures its card records."""
    card = merged.card or {}
    teachers = card.get("teachers") or {}
    figures = "; ".join(f"{k}={v}" for k, v in _float_metrics(card))
    return MERGED.description.format(
        teachers=" and ".join(f"{name} ({spec})" for name, spec in teachers.items()) or "unrecorded teachers",
        data=f" on {card['data']}" if card.get("data") else "",
        figures=f" (held-out {figures})" if figures else "",
        clip_model=settings.clip_model,
        clip_pretrained=settings.clip_pretrained,
        regions=MERGED_REGIONS[settings.merged_regions],
    )
