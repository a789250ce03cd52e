"""`samclip-service`: run the SAM-CLIP model server until SIGTERM.

Settings come from SAMCLIP_* environment variables. Invalid settings or missing
weights end the process at once with one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys

from visioncompare.runtime.errors import ConfigurationError
from visioncompare.runtime.settings import load_settings


def main() -> None:
    from visioncompare.samclip.settings import SamClipSettings

    settings = load_settings(SamClipSettings, "samclip-service")

    from visioncompare.samclip.model import resolve_backend_weights

    try:
        resolve_backend_weights(settings)  # fail now, not after the server is up, if a file is missing
    except ConfigurationError as exc:
        print(f"samclip-service: {exc}", file=sys.stderr)
        sys.exit(2)

    from visioncompare.runtime.server import serve
    from visioncompare.samclip.model import SamClipModel

    serve(settings, SamClipModel(settings))


if __name__ == "__main__":
    main()
