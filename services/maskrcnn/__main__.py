"""`maskrcnn-service`: serve Mask R-CNN over gRPC (settings from MASKRCNN_* variables)."""

from __future__ import annotations

import sys

from pydantic import ValidationError

from services.maskrcnn.settings import MaskRCNNSettings


def settings_error(exc: ValidationError) -> str:
    """One line naming each bad variable and what is wrong with it."""
    prefix = MaskRCNNSettings.model_config.get("env_prefix", "")
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{prefix}{where.upper()}: {message}" if where else message)
    return "; ".join(parts).replace("\n", " ")


def main() -> None:
    try:
        settings = MaskRCNNSettings()
    except ValidationError as exc:
        print(f"maskrcnn-service: invalid settings: {settings_error(exc)}", file=sys.stderr)
        sys.exit(2)
    from services.maskrcnn.model import MaskRCNNModel  # torch: only once settings are valid
    from services.runtime.server import serve

    serve(settings, MaskRCNNModel(settings))


if __name__ == "__main__":
    main()
