"""`maskrcnn-service`: serve Mask R-CNN over gRPC (settings from MASKRCNN_* variables)."""

from __future__ import annotations

from visioncompare.maskrcnn.settings import MaskRCNNSettings
from visioncompare.runtime.settings import load_settings


def main() -> None:
    settings = load_settings(MaskRCNNSettings, "maskrcnn-service")
    from visioncompare.maskrcnn.model import MaskRCNNModel  # torch: only once settings are valid
    from visioncompare.runtime.server import serve

    serve(settings, MaskRCNNModel(settings))


if __name__ == "__main__":
    main()
