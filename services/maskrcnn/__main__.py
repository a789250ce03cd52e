"""`maskrcnn-service`: serve Mask R-CNN over gRPC (settings from MASKRCNN_* variables)."""

from __future__ import annotations

from services.maskrcnn.settings import MaskRCNNSettings
from services.runtime.settings import load_settings


def main() -> None:
    settings = load_settings(MaskRCNNSettings, "maskrcnn-service")
    from services.maskrcnn.model import MaskRCNNModel  # torch: only once settings are valid
    from services.runtime.server import serve

    serve(settings, MaskRCNNModel(settings))


if __name__ == "__main__":
    main()
