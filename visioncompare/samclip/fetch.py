"""What `fetch-weights --from-settings samclip` fetches: the official checkpoints the SAMCLIP_*
settings name, nothing else.

The composition's SAM when its weights are `official` (the variant's segment-anything file),
and the CLIP (the composition's, or the merged model's text-tower teacher) when it is an
open_clip tag; the shapes weights ship with the code, and `file:` and `random` name nothing
to download. Registered under the runtime's `visioncompare.weights.settings` entry-point group.
"""

from __future__ import annotations

from visioncompare.runtime.weights import WeightFile, WeightsSpec
from visioncompare.samclip.settings import SamClipSettings
from visioncompare.samclip.weights import CLIP_SOURCES, SAM_FILES, SHAPES, clip_weight_file


def names_clip_tag(spec: str, model: str) -> bool:
    """Whether clip_pretrained=`spec` is an open_clip tag (as resolve_clip_weights reads it)."""
    parsed = WeightsSpec.parse(spec)
    own_source = parsed.scheme in CLIP_SOURCES and (bool(parsed.value) or parsed.scheme != "file")
    return not own_source and model != SHAPES


def files_for_settings(settings: SamClipSettings | None = None) -> list[WeightFile]:
    """The official files these settings (default: the environment's) load."""
    s = settings if settings is not None else SamClipSettings(metrics_port=None)
    files: list[WeightFile] = []
    if s.backend == "composed" and WeightsSpec.parse(s.sam_weights).scheme == "official" and s.sam_variant in SAM_FILES:
        files.append(SAM_FILES[s.sam_variant])
    if names_clip_tag(s.clip_pretrained, s.clip_model):
        clip = clip_weight_file(s.clip_model, s.clip_pretrained)
        if clip is not None:
            files.append(clip)
    return files
