"""Run the tiny test model as a standalone service process.

python -m visioncompare.testing.tiny_service --port 50061 --name a --delay 0 \
    --tasks OBJECT_DETECTION,INSTANCE_SEGMENTATION
"""

from __future__ import annotations

import argparse

from visioncompare.runtime.server import serve
from visioncompare.runtime.settings import ServerSettings
from visioncompare.runtime.types import Task
from visioncompare.testing.tiny_model import BrightSpotModel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="bright")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--tasks", default="OBJECT_DETECTION,INSTANCE_SEGMENTATION")
    args = parser.parse_args()
    tasks = tuple(Task[t] for t in args.tasks.split(","))
    model = BrightSpotModel(name=args.name, delay_s=args.delay, tasks=tasks)
    serve(ServerSettings(host="127.0.0.1", port=args.port, metrics_port=None, log_json=False), model)


if __name__ == "__main__":
    main()
