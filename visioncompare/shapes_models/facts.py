"""What the shapes models are, without torch: the name that selects them in every setting
(weights, architecture, preset) and the input sizes they were trained at. The services take
these from here instead of copying them."""

from typing import Final

#: The name that selects the shapes models: a weights spec, an architecture, a preset.
SHAPES: Final = "shapes"
#: The shapes Mask R-CNN's resize bounds (shorter side, longer side cap), as trained.
MASKRCNN_MIN_SIZE: Final = 192
MASKRCNN_MAX_SIZE: Final = 288
