"""What `fetch-weights --from-settings maskrcnn` fetches: the official checkpoints the MASKRCNN_*
settings name, nothing else.

The detector's weights, and the keypoint model's when keypoints are enabled: a torchvision
member (`torchvision:COCO_V1`) names the checkpoint of the architecture it loads into; the
shapes weights ship with the code, and `file:` and `random` name nothing to download.
Registered under the runtime's `visioncompare.weights.settings` entry-point group.
"""

from __future__ import annotations

from visioncompare.maskrcnn.settings import MaskRCNNSettings
from visioncompare.maskrcnn.weights import WEIGHT_FILES, scheme_of, torchvision_file
from visioncompare.runtime.weights import WeightFile, WeightsSpec


def files_for_settings(settings: MaskRCNNSettings | None = None) -> list[WeightFile]:
    """The torchvision checkpoints these settings (default: the environment's) load."""
    from visioncompare.maskrcnn.builders import ARCHS  # torchvision: only where a service would load it

    s = settings if settings is not None else MaskRCNNSettings(metrics_port=None)
    wanted: list[tuple[str, WeightsSpec]] = [(scheme_of(s.weights_source).arch or s.variant, s.weights_source)]
    if s.keypoints_enabled:
        wanted.append((scheme_of(s.keypoint_weights_source).keypoint_arch, s.keypoint_weights_source))
    files: list[WeightFile] = []
    for arch_name, source in wanted:
        enum = ARCHS[arch_name].weights_enum
        if source.scheme != "torchvision" or enum is None or source.value not in enum.__members__:
            continue  # shipped, a file, random; or a member the service will refuse, saying why
        filename = enum[source.value].url.rsplit("/", 1)[-1]
        file = next((f for f in WEIGHT_FILES if f.filename == filename), None) or torchvision_file(filename)
        if file not in files:
            files.append(file)
    return files
