"""The runtime's own overhead: a trivial model served over loopback.

    python -m bench.runtime_overhead [--requests 2000] [--rounds 6]

Prints p50 and p99 latency per request in µs at 1 and 16 concurrent clients for
  - the full runtime (interceptor, data plane, validation, scheduler, inference
    thread, conversion) serving a no-op model in a subprocess, default settings;
  - a bare grpc.aio server in a subprocess whose Detect returns a fixed response;
  - the same bare server handing each request to an inference thread and back (a queue
    one way, `call_soon_threadsafe` the other): the least any server pays that keeps
    inference off its event loop, as the runtime does;
  - the same again with the runtime's scheduling and none of its code: one batch (up to 4
    requests) on the thread at a time, the next formed when it is answered;
the latency the runtime adds over bare gRPC, and for each server its requests per second,
their ratio to bare gRPC's, and the CPU time the server process spent per request (from
/proc, on Linux; user and system).

The servers run side by side for the whole run, and the load moves between them in
rounds (`--requests` per concurrency, split into `--rounds` slices per server, the
order rotated each round), so that a machine shared with other work slows them alike:
the ratios are of one run, not of runs minutes apart.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from visioncompare.runtime.errors import ServiceError
from visioncompare.runtime.model import VisionModel
from visioncompare.runtime.server import serve as run_server
from visioncompare.runtime.settings import ServerSettings
from visioncompare.runtime.tasks import task_capability
from visioncompare.runtime.types import (
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
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import vision_model_service_pb2 as vms
from visioncompare.v1 import vision_model_service_pb2_grpc as vms_grpc

IMAGE = np.zeros((16, 16, 3), np.uint8)


class TrivialModel(VisionModel):
    """Answers one fixed box; costs next to nothing. Its capabilities are made once, as
    the services make theirs at load (VisionModel.validate reads them per request)."""

    name = "trivial"

    def __init__(self) -> None:
        self._capabilities = Capabilities(
            ModelCard("trivial", "bench", "open", "vision", "2026-11", 0, "MIT", "", "no-op"),
            (task_capability(Task.OBJECT_DETECTION, Vocabulary.FIXED, ("thing",)),),
            RuntimeInfo("cpu", "torch", "fp32", "none", False, 8, "bench"),
        )

    def load(self) -> None: ...

    def warmup(self) -> None: ...

    def capabilities(self) -> Capabilities:
        return self._capabilities

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


def detect_request() -> vms.DetectRequest:
    return vms.DetectRequest(
        image=pb.Image(raw=pb.RawImage(width=16, height=16, rgb=IMAGE.tobytes())), task=pb.TASK_OBJECT_DETECTION
    )


async def through_grpc(address: str, requests: int, concurrency: int) -> tuple[list[float], float]:
    """Latencies (µs) of `requests` Detect calls from `concurrency` clients on one channel, and
    the seconds they took together."""
    request = detect_request()
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

        start = time.perf_counter()
        await asyncio.gather(*(client(requests // concurrency) for _ in range(concurrency)))
        return latencies, time.perf_counter() - start


#: The servers compared: the runtime and three references.
SERVERS = ("bare", "handoff", "one-batch", "runtime")
BATCH = 4  # one-batch: the runtime's default max_batch_size


def serve(port: int, kind: str) -> None:
    if kind == "runtime":
        run_server(ServerSettings(host="127.0.0.1", port=port, metrics_port=None, log_level="WARNING"), TrivialModel())
        return
    response = vms.DetectResponse(instances=[pb.Instance(box=pb.BoundingBox(x1=1, y1=2, x2=3, y2=4), score=0.9)])
    Batch = list[asyncio.Future[vms.DetectResponse]]
    jobs: queue.SimpleQueue[Batch] = queue.SimpleQueue()
    pending: Batch = []  # one-batch: waiting for the batch on the thread
    busy = False

    def dispatch() -> None:
        nonlocal busy
        busy = True
        jobs.put(pending[:BATCH])
        del pending[:BATCH]

    def answer(batch: Batch) -> None:
        nonlocal busy
        for future in batch:
            future.set_result(response)
        busy = False
        if pending and kind == "one-batch":
            dispatch()

    def inference_thread(loop: asyncio.AbstractEventLoop) -> None:
        while True:
            loop.call_soon_threadsafe(answer, jobs.get())

    class Bare(vms_grpc.VisionModelServiceServicer):
        async def Detect(self, request: vms.DetectRequest, context: object) -> vms.DetectResponse:
            if kind == "bare":
                return response
            future = asyncio.get_running_loop().create_future()
            if kind == "handoff":
                jobs.put([future])
            else:
                pending.append(future)
                if not busy:
                    dispatch()
            return await future

    async def run() -> None:
        threading.Thread(target=inference_thread, args=(asyncio.get_running_loop(),), daemon=True).start()
        server = grpc.aio.server()
        vms_grpc.add_VisionModelServiceServicer_to_server(Bare(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(run())


@dataclass
class Load:
    """What one server answered at one concurrency, over all rounds."""

    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float | None = 0.0  # the server process's; None where /proc cannot say

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    @property
    def cpu_us(self) -> str:
        return "?" if self.cpu_seconds is None else f"{self.cpu_seconds / len(self.latencies) * 1e6:.0f}"


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU time of process `pid` so far (Linux's /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def start_server(port: int, kind: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "bench.runtime_overhead", "--serve", kind, "--port", str(port)]
    server = subprocess.Popen(cmd, env=os.environ.copy())
    grpc.channel_ready_future(grpc.insecure_channel(f"127.0.0.1:{port}")).result(timeout=30)
    return server


def measure(port: int, requests: int, rounds: int) -> dict[int, dict[str, Load]]:
    """{concurrency: {server kind: Load}}, the load moving between the servers in `rounds`
    slices of `requests // rounds` each, the order rotated each round."""
    servers = {kind: start_server(port + k, kind) for k, kind in enumerate(SERVERS)}
    addresses = {kind: f"127.0.0.1:{port + k}" for k, kind in enumerate(SERVERS)}
    try:
        out: dict[int, dict[str, Load]] = {}
        for concurrency in (1, 16):
            loads = out[concurrency] = {kind: Load() for kind in SERVERS}
            for i in range(rounds):
                for which in SERVERS[i % len(SERVERS) :] + SERVERS[: i % len(SERVERS)]:
                    before = cpu_seconds(servers[which].pid)
                    latencies, seconds = asyncio.run(through_grpc(addresses[which], requests // rounds, concurrency))
                    after = cpu_seconds(servers[which].pid)
                    load = loads[which]
                    load.latencies += latencies
                    load.seconds += seconds
                    if before is None or after is None or load.cpu_seconds is None:
                        load.cpu_seconds = None
                    else:
                        load.cpu_seconds += after - before
        return out
    finally:
        for server in servers.values():
            server.terminate()
            server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="per server and concurrency")
    parser.add_argument("--rounds", type=int, default=6, help="slices of the load per server, rotating")
    parser.add_argument("--port", type=int, default=50391)
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port, args.serve)
        return
    p50, p99 = percentiles(in_process(args.requests))
    print(f"no-op model predict() in-process: p50 {p50:.1f} µs, p99 {p99:.1f} µs")
    loads = measure(args.port, args.requests, args.rounds)
    header = ("clients", "server", "p50 µs", "p99 µs", "req/s", "÷ bare", "CPU µs/req")
    print(" | ".join(f"{h:>{w}}" for h, w in zip(header, (7, 9, 7, 7, 6, 6, 10), strict=True)))
    for c, load in loads.items():
        bare = load["bare"]
        for kind in SERVERS:
            p50, p99 = percentiles(load[kind].latencies)
            ratio = load[kind].rate / bare.rate
            rate, cpu = load[kind].rate, load[kind].cpu_us
            print(f"{c:>7} | {kind:>9} | {p50:7.0f} | {p99:7.0f} | {rate:6.0f} | {ratio:6.2f} | {cpu:>10}")
        added = percentiles(load["runtime"].latencies)[0] - percentiles(bare.latencies)[0]
        print(f"{c:>7} | the runtime adds {added:.0f} µs at p50 over bare gRPC")


if __name__ == "__main__":
    main()
