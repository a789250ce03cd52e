"""The Open Inference Protocol under load: perf_analyzer next to the project's own client.

    python -m bench.oip_perf                                   # maskrcnn, instance segmentation
    python -m bench.oip_perf --service samclip --task prompted-segmentation
    python -m bench.oip_perf --concurrency 1 4 16 --seconds 5  # a shorter run

Starts the model service (`maskrcnn-service` or `samclip-service`, shapes weights, its
default settings) as a subprocess on a free port, and for each concurrency (1 to 16 by
default) drives the same request on the bundled shapes scene for `--seconds`:

  - perf_analyzer (Triton's load generator, `-i grpc`, the model `<service>.<task>`),
    when a `perf_analyzer` binary is on PATH (or given with --perf-analyzer);
  - tritonclient.grpc: the same Open Inference Protocol request from Python threads;
  - VisionModelClient: the project's own RPC (VisionModelService) from Python threads;

and prints throughput (requests/s) and latency p50/p90/p99 (ms) side by side. Python
load generators share the CPU with the server, as perf_analyzer does.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Both clients live in this process: it imports no model server (the client imports
# visioncompare.runtime.channels, not the server module), so only tritonclient's copy of the
# `inference` protos is loaded.
from visioncompare.runtime.client import VisionModelClient
from visioncompare.runtime.tasks import TASKS_BY_SHORT_NAME
from visioncompare.runtime.types import Point, Task, TaskOptions

ROOT = Path(__file__).resolve().parent.parent
SCENE = ROOT / "visioncompare" / "gateway" / "samples" / "shapes-scene.png"
SERVICES = {"maskrcnn": ("visioncompare.maskrcnn", "MASKRCNN_"), "samclip": ("visioncompare.samclip", "SAMCLIP_")}
#: Options for tasks that need some: the same for every load generator.
OPTIONS = {
    Task.PROMPTED_SEGMENTATION: TaskOptions(points=(Point(120, 80),)),
    Task.ZERO_SHOT_CLASSIFICATION: TaskOptions(labels=("circle", "square", "triangle", "star", "cross")),
}
WHY_NO_PERF_ANALYZER = (
    "perf_analyzer is not on PATH. It is a C++ binary from Triton's SDK (the tritonserver "
    "SDK container image, or built from triton-inference-server/perf_analyzer with CMake, "
    "which downloads its dependencies). The `perf-analyzer` package that PyPI serves to this "
    "machine is 0.1.0, a placeholder whose only content is a hello() function, and this "
    "machine reaches no other source; so only the Python load generators ran."
)


Load = Callable[[], Callable[[], object]]  # makes one worker's call (with its own client)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(service: str, port: int) -> subprocess.Popen[bytes]:
    module, prefix = SERVICES[service]
    env = {
        **os.environ,
        f"{prefix}PORT": str(port),
        f"{prefix}HOST": "127.0.0.1",
        f"{prefix}METRICS_PORT": "0",
        f"{prefix}LOG_LEVEL": "WARNING",
    }
    for line in (ROOT / "deploy" / "local.env").read_text().splitlines():  # shapes weights, no downloads
        key, _, value = line.partition("=")
        if key.startswith(prefix) and not line.startswith("#"):
            env.setdefault(key, value)
    process = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=env)
    end = time.monotonic() + 600
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < end:
            if process.poll() is not None:
                raise SystemExit(f"{service}-service exited with {process.returncode}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return process
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"{service}-service did not become SERVING in 600 s")


def percentile(values: list[float], p: float) -> float:
    return float(np.percentile(values, p)) if values else float("nan")


def closed_loop(make_call: Load, concurrency: int, seconds: float) -> dict[str, float]:
    """`concurrency` threads, each calling back-to-back for `seconds` after one warm-up call."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(concurrency + 1)
    stop_at = [0.0]

    def worker() -> None:
        call = make_call()
        call()
        start.wait()
        mine = []
        while time.perf_counter() < stop_at[0]:
            t0 = time.perf_counter()
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                with lock:
                    errors.append(type(exc).__name__)
                continue
            mine.append((time.perf_counter() - t0) * 1000)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + 3600  # set properly once every worker has warmed up
    start.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    return {
        "throughput": len(latencies) / elapsed,
        "p50": percentile(latencies, 50),
        "p90": percentile(latencies, 90),
        "p99": percentile(latencies, 99),
        "errors": float(len(errors)),
    }


def project_call(address: str, image: bytes, task: Task, options: TaskOptions) -> Load:
    def make() -> Callable[[], object]:
        client = VisionModelClient(address, timeout=300)
        return lambda: client.run(image, task, options)

    return make


def oip_inputs(image: bytes, options: TaskOptions) -> list[object]:
    import tritonclient.grpc as tg

    inputs = []
    tensor = tg.InferInput("IMAGE", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([image], dtype=object))
    inputs.append(tensor)
    if options.labels:
        tensor = tg.InferInput("LABELS", [len(options.labels)], "BYTES")
        tensor.set_data_from_numpy(np.array([s.encode() for s in options.labels], dtype=object))
        inputs.append(tensor)
    if options.points:
        tensor = tg.InferInput("POINTS", [len(options.points), 2], "FP32")
        tensor.set_data_from_numpy(np.array([[p.x, p.y] for p in options.points], np.float32))
        inputs.append(tensor)
    return inputs


def tritonclient_call(address: str, model: str, image: bytes, options: TaskOptions) -> Load:
    def make() -> Callable[[], object]:
        import tritonclient.grpc as tg

        client = tg.InferenceServerClient(address)
        inputs = oip_inputs(image, options)

        def call() -> object:
            result = client.infer(model, inputs, client_timeout=300)
            return result.as_numpy("SCORES")

        return call

    return make


def perf_analyzer_input(image: bytes, options: TaskOptions, directory: Path) -> Path:
    """perf_analyzer's --input-data file: one request, the IMAGE as base64 and any prompt tensors."""
    request: dict[str, object] = {"IMAGE": {"content": {"b64": base64.b64encode(image).decode()}, "shape": [1]}}
    if options.labels:
        request["LABELS"] = {"content": list(options.labels), "shape": [len(options.labels)]}
    if options.points:
        points = [v for p in options.points for v in (p.x, p.y)]
        request["POINTS"] = {"content": points, "shape": [len(options.points), 2]}
    path = directory / "input.json"
    path.write_text(json.dumps({"data": [request]}))
    return path


def run_perf_analyzer(
    binary: str, address: str, model: str, input_data: Path, concurrency: list[int], seconds: float, out: Path
) -> dict[int, dict[str, float]]:
    """perf_analyzer over the concurrency levels; its CSV as {concurrency: figures}."""
    figures: dict[int, dict[str, float]] = {}
    for level in concurrency:
        report = out / f"perf_{level}.csv"
        cmd = [
            binary, "-m", model, "-u", address, "-i", "grpc", "--input-data", str(input_data),
            "--concurrency-range", f"{level}:{level}", "--measurement-interval", str(int(seconds * 1000)),
            "--percentile", "99", "-f", str(report),
        ]  # fmt: skip
        print("  $", " ".join(cmd), flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"  perf_analyzer failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
            continue
        with report.open() as f:
            row = next(csv.DictReader(f))
        figures[level] = {
            "throughput": float(row["Inferences/Second"]),
            "p50": float(row["p50 latency"]) / 1000,
            "p90": float(row["p90 latency"]) / 1000,
            "p99": float(row["p99 latency"]) / 1000,
            "errors": 0.0,
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--service", choices=sorted(SERVICES), default="maskrcnn")
    parser.add_argument("--task", default="instance-segmentation", help="short task name, e.g. object-detection")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement time per level and client")
    parser.add_argument("--perf-analyzer", default=shutil.which("perf_analyzer"), help="the binary (default: PATH)")
    parser.add_argument("--address", help="an already running service instead of starting one")
    args = parser.parse_args()
    task = TASKS_BY_SHORT_NAME[args.task]
    model = f"{args.service}.{args.task}"
    options = OPTIONS.get(task, TaskOptions())
    image = SCENE.read_bytes()

    process = None
    address = args.address
    if address is None:
        port = free_port()
        print(f"starting {args.service}-service on 127.0.0.1:{port} (shapes weights) ...", flush=True)
        process = start_service(args.service, port)
        address = f"127.0.0.1:{port}"
    try:
        results: dict[str, dict[int, dict[str, float]]] = {}
        if args.perf_analyzer:
            print(f"perf_analyzer ({args.perf_analyzer}) on {model}", flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                data = perf_analyzer_input(image, options, Path(tmp))
                results["perf_analyzer (OIP)"] = run_perf_analyzer(
                    args.perf_analyzer, address, model, data, args.concurrency, args.seconds, Path(tmp)
                )
        else:
            print(WHY_NO_PERF_ANALYZER, flush=True)
        loads = {
            "tritonclient (OIP)": tritonclient_call(address, model, image, options),
            "VisionModelClient": project_call(address, image, task, options),
        }
        # Level by level, the two clients in alternating order: a shared machine's drift hits both alike.
        for i, level in enumerate(args.concurrency):
            for name, make in sorted(loads.items(), reverse=bool(i % 2)):
                print(f"{name}: concurrency {level} for {args.seconds:g} s", flush=True)
                results.setdefault(name, {})[level] = closed_loop(make, level, args.seconds)
    finally:
        if process is not None:
            process.terminate()
            process.wait(60)

    print(f"\n{model} on {address}, shapes scene {SCENE.name}, {args.seconds:g} s per level")
    header = f"{'client':<22} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>6}"
    print(header)
    print("-" * len(header))
    for level in args.concurrency:
        for name, by_level in results.items():
            f = by_level.get(level)
            if f is None:
                print(f"{name:<22} {level:>4} {'(failed)':>8}")
                continue
            print(
                f"{name:<22} {level:>4} {f['throughput']:>8.2f} {f['p50']:>8.1f} {f['p90']:>8.1f} "
                f"{f['p99']:>8.1f} {int(f['errors']):>6}"
            )
    oip = results.get("tritonclient (OIP)", {})
    own = results.get("VisionModelClient", {})
    ratios = [oip[c]["throughput"] / own[c]["throughput"] for c in args.concurrency if c in oip and c in own]
    if ratios:
        print(f"\nOIP/own throughput ratio: median {statistics.median(ratios):.2f} over {len(ratios)} levels")


if __name__ == "__main__":
    main()
