"""The runtime's own overhead: a trivial model served over loopback.

    python bench/runtime_overhead.py [--requests 2000]

Prints p50 and p99 latency per request in µs at 1 and 16 concurrent clients for
  - the full runtime (interceptor, decode, validation, scheduler, worker thread,
    conversion) serving a no-op model in a subprocess, default settings;
  - a bare grpc.aio server in a subprocess whose Detect returns the same response;
and their difference: the extra latency the runtime adds over gRPC itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from visioncompare.v1 import common_pb2 as pb  # noqa: E402
from visioncompare.v1 import vision_model_service_pb2 as vms  # noqa: E402
from visioncompare.v1 import vision_model_service_pb2_grpc as vms_grpc  # noqa: E402

from services.runtime.errors import ServiceError  # noqa: E402
from services.runtime.model import VisionModel  # noqa: E402
from services.runtime.tasks import task_capability  # noqa: E402
from services.runtime.types import (  # noqa: E402
    Box,
    Capabilities,
    InferenceRequest,
    Instance,
    ModelCard,
    Prediction,
    RuntimeInfo,
    Task,
    Vocabulary,
)

IMAGE = np.zeros((16, 16, 3), np.uint8)


class TrivialModel(VisionModel):
    """Answers one fixed box; costs next to nothing."""

    name = "trivial"

    def load(self) -> None: ...

    def warmup(self) -> None: ...

    def capabilities(self) -> Capabilities:
        return Capabilities(
            ModelCard("trivial", "bench", "open", "vision", "2026-11", 0, "MIT", "", "no-op"),
            (task_capability(Task.OBJECT_DETECTION, Vocabulary.FIXED, ("thing",)),),
            RuntimeInfo("cpu", "torch", "fp32", "none", False, 8, "bench"),
        )

    def predict(self, requests: Sequence[InferenceRequest]) -> list[Prediction | ServiceError]:
        return [Prediction(instances=[Instance(Box(1, 2, 3, 4), 0.9)]) for _ in requests]


def percentiles(samples: list[float]) -> tuple[float, float]:
    qs = statistics.quantiles(samples, n=100, method="inclusive")
    return qs[49], qs[98]


def in_process(requests: int) -> list[float]:
    """The same work minus the runtime: build the request, call predict."""
    model = TrivialModel()
    out = []
    for _ in range(requests):
        start = time.perf_counter()
        model.predict([InferenceRequest(Task.OBJECT_DETECTION, IMAGE)])
        out.append((time.perf_counter() - start) * 1e6)
    return out


async def through_grpc(address: str, requests: int, concurrency: int) -> list[float]:
    request = vms.DetectRequest(
        image=pb.Image(raw=pb.RawImage(width=16, height=16, rgb=IMAGE.tobytes())), task=pb.TASK_OBJECT_DETECTION
    )
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = vms_grpc.VisionModelServiceStub(channel)
        for _ in range(50):  # warm the connection
            await stub.Detect(request)

        async def client(n: int) -> None:
            for _ in range(n):
                start = time.perf_counter()
                await stub.Detect(request, timeout=10)
                latencies.append((time.perf_counter() - start) * 1e6)

        await asyncio.gather(*(client(requests // concurrency) for _ in range(concurrency)))
    return latencies


def serve(port: int, bare: bool) -> None:
    from services.runtime.server import serve as run
    from services.runtime.settings import ServerSettings

    if not bare:
        run(ServerSettings(host="127.0.0.1", port=port, metrics_port=None, log_level="WARNING"), TrivialModel())
        return
    response = vms.DetectResponse(instances=[pb.Instance(box=pb.BoundingBox(x1=1, y1=2, x2=3, y2=4), score=0.9)])

    class Bare(vms_grpc.VisionModelServiceServicer):
        async def Detect(self, request: vms.DetectRequest, context: object) -> vms.DetectResponse:
            return response

    async def main() -> None:
        server = grpc.aio.server()
        vms_grpc.add_VisionModelServiceServicer_to_server(Bare(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def measure(port: int, bare: bool, requests: int) -> dict[int, tuple[float, float, float]]:
    """{concurrency: (p50 µs, p99 µs, requests/s)} against a fresh server subprocess."""
    address = f"127.0.0.1:{port}"
    cmd = [sys.executable, __file__, "--serve", "--port", str(port), *(["--bare"] if bare else [])]
    server = subprocess.Popen(cmd, env=os.environ.copy())
    try:
        grpc.channel_ready_future(grpc.insecure_channel(address)).result(timeout=30)
        out = {}
        for concurrency in (1, 16):
            start = time.perf_counter()
            samples = asyncio.run(through_grpc(address, requests, concurrency))
            rate = len(samples) / (time.perf_counter() - start)
            out[concurrency] = (*percentiles(samples), rate)
        return out
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--port", type=int, default=50391)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port, args.bare)
        return
    p50, p99 = percentiles(in_process(args.requests))
    print(f"no-op model predict() in-process: p50 {p50:.1f} µs, p99 {p99:.1f} µs")
    bare = measure(args.port, True, args.requests)
    runtime = measure(args.port + 1, False, args.requests)
    print(
        f"{'clients':>7} | {'bare gRPC p50/p99 µs':>21} | {'runtime p50/p99 µs':>19} | "
        f"{'added p50/p99 µs':>17} | {'bare/runtime req/s':>18}"
    )
    for c in (1, 16):
        b, r = bare[c], runtime[c]
        print(
            f"{c:>7} | {b[0]:9.0f} / {b[1]:9.0f} | {r[0]:8.0f} / {r[1]:8.0f} | "
            f"{r[0] - b[0]:7.0f} / {r[1] - b[1]:7.0f} | {b[2]:8.0f} / {r[2]:7.0f}"
        )


if __name__ == "__main__":
    main()
