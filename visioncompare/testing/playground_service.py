"""Run the playground test model (visioncompare/testing/playground_model.py) as a service process.

python -m visioncompare.testing.playground_service --port 50061 --name samclip --vocabulary open --stage-ms 2,30,3
"""

from __future__ import annotations

import argparse

from visioncompare.runtime.server import serve
from visioncompare.runtime.settings import ServerSettings
from visioncompare.testing.playground_model import PlaygroundModel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--vocabulary", choices=("fixed", "open"), default="fixed")
    parser.add_argument("--stage-ms", default="0,0,0", help="pre-processing, inference, post-processing sleeps")
    parser.add_argument("--dark-score", type=float, default=0.4)
    args = parser.parse_args()
    pre, inference, post = (float(v) for v in args.stage_ms.split(","))
    model = PlaygroundModel(
        name=args.name, vocabulary=args.vocabulary, stage_ms=(pre, inference, post), dark_score=args.dark_score
    )
    serve(ServerSettings(host="127.0.0.1", port=args.port, metrics_port=None, log_json=False), model)


if __name__ == "__main__":
    main()
