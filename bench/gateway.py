"""Gateway fan-out cost: Compare vs the slowest single model on the same image.

    python -m bench.gateway [--requests 60] [--delays 0.05,0.1]

Starts two model services as processes (the tiny test model, with a fixed
per-batch delay standing in for GPU time, so the two don't compete for these
CPU cores) and the gateway, then prints:
  - Compare latency vs the slowest model called directly, and their ratio
    (parallel fan-out keeps it near 1; a serial fan-out would be the sum);
  - the gateway's own overhead per call in µs (Compare minus slowest direct);
  - Compare throughput with 16 concurrent callers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import grpc

from visioncompare.testing.images import encode, scene
from visioncompare.testing.processes import ServiceProcess, free_port, tiny_service
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import comparison_service_pb2 as cs
from visioncompare.v1 import comparison_service_pb2_grpc as cs_grpc
from visioncompare.v1 import vision_model_service_pb2 as vms
from visioncompare.v1 import vision_model_service_pb2_grpc as vms_grpc


async def timed(call, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        out.append((time.perf_counter() - start) * 1000)
    return out


async def run(args: argparse.Namespace, services: list[ServiceProcess], gateway_address: str) -> None:
    image = pb.Image(encoded=encode(scene(320, 240, (40, 30, 200, 150))))
    async with grpc.aio.insecure_channel(gateway_address) as gw_channel:
        gw = cs_grpc.ComparisonServiceStub(gw_channel)
        request = cs.CompareRequest(image=image, task=pb.TASK_INSTANCE_SEGMENTATION)
        for _ in range(30):  # until both targets are watched and serving
            response = await gw.Compare(request)
            if len(response.results) == 2 and all(r.status.code == 0 for r in response.results):
                break
            await asyncio.sleep(0.5)
        direct = {}
        for svc in services:
            async with grpc.aio.insecure_channel(svc.address) as channel:
                stub = vms_grpc.VisionModelServiceStub(channel)
                seg = vms.SegmentRequest(image=image, task=pb.TASK_INSTANCE_SEGMENTATION)
                await stub.Segment(seg)
                direct[svc.name] = statistics.median(await timed(lambda s=stub, r=seg: s.Segment(r), args.requests))
        compare = statistics.median(await timed(lambda: gw.Compare(request), args.requests))
        slowest_name = max(direct, key=direct.__getitem__)
        slowest = direct[slowest_name]
        total = sum(direct.values())
        for name, ms in direct.items():
            print(f"direct {name:>6}: p50 {ms:8.2f} ms")
        print(f"Compare (both)  : p50 {compare:8.2f} ms")
        print(
            f"Compare / slowest single model ({slowest_name}): {compare / slowest:.3f}  "
            f"(a serial fan-out would be {total / slowest:.2f})"
        )
        print(f"gateway overhead per Compare: {(compare - slowest) * 1000:.0f} µs")

        async def caller(n: int) -> None:
            for _ in range(n):
                await gw.Compare(request)

        start = time.perf_counter()
        await asyncio.gather(*(caller(args.requests // 4) for _ in range(16)))
        elapsed = time.perf_counter() - start
        print(
            f"throughput, 16 concurrent callers: {16 * (args.requests // 4) / elapsed:.1f} Compare/s "
            "(each model forms batches of up to its max_batch_size)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--delays", default="0.05,0.1", help="seconds per batch for the two models")
    args = parser.parse_args()
    delays = [float(d) for d in args.delays.split(",")]
    services = [tiny_service(f"m{i}", delay=d) for i, d in enumerate(delays)]
    for svc in services:
        svc.start()
    port = free_port()
    targets = "{" + ",".join(f'"{s.name}": "dns:///{s.address}"' for s in services) + "}"
    gateway = ServiceProcess(
        "gateway",
        ["-m", "gateway"],
        port,
        env={
            "GATEWAY_PORT": str(port),
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_TARGETS": targets,
            "GATEWAY_METRICS_PORT": str(free_port()),
            "GATEWAY_HTTP_PORT": "none",
            "GATEWAY_LOG_LEVEL": "WARNING",
        },
    )
    try:
        gateway.start()
        asyncio.run(run(args, services, gateway.address))
    finally:
        gateway.stop()
        for svc in services:
            svc.stop()


if __name__ == "__main__":
    main()
