"""Mask R-CNN in-process against the same model behind the gRPC service.

    python -m bench.maskrcnn [--iterations 3] [--batch-rounds 1] [--weights random] [--device auto]

On one image and the same weights (default: random, torchvision's full-size
ResNet-50-FPN v1 at the service's default 800/1333 resize), prints
  - in-process latency: torchvision's forward, and MaskRCNNModel.predict (the same
    work the service does: forward, mask pasting, RLE encoding);
  - latency through the gRPC service (`python -m visioncompare.maskrcnn` in a subprocess,
    JPEG over loopback) and its ratio to each in-process figure;
  - images/s at batch 1 (one request at a time) and batch 4 (predict() on 4 images
    against 4 concurrent requests, which the scheduler batches);
  - peak resident memory of the service process (and of this process, for comparison).
In-process and service calls alternate, so load from elsewhere weighs on both alike.
With random weights nearly every box scores high, so each image carries 100 masks
(trained weights find a handful). The default run takes about 4 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Both processes wait for OpenMP work the same way, set before torch loads libgomp: with
# the default active spinning, a process whose threads outnumber the free cores (other
# work on the machine) burns up to twice the CPU, and how much depends on its thread
# layout, which differs between this script and the server. Pass OMP_WAIT_POLICY=ACTIVE
# to measure the default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from visioncompare.maskrcnn.model import MaskRCNNModel  # noqa: E402
from visioncompare.maskrcnn.settings import MaskRCNNSettings  # noqa: E402
from visioncompare.runtime.client import VisionModelClient  # noqa: E402
from visioncompare.runtime.types import InferenceRequest, Prediction, Task  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TASK = Task.INSTANCE_SEGMENTATION


def make_image(width: int, height: int) -> np.ndarray:
    """A deterministic scene: smooth background, a few solid shapes, mild noise."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], axis=-1)
    for _ in range(6):
        x1, y1 = rng.integers(0, width * 3 // 4), rng.integers(0, height * 3 // 4)
        w, h = rng.integers(width // 10, width // 3), rng.integers(height // 10, height // 3)
        image[y1 : y1 + h, x1 : x1 + w] = rng.integers(0, 256, 3)
    image = image + rng.integers(-8, 9, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def timed(fn: Callable[[], object], iterations: int) -> list[float]:
    out = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM of a live process (Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def start_service(env_overrides: dict[str, str], timeout_s: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        **env_overrides,
        "MASKRCNN_HOST": "127.0.0.1",
        "MASKRCNN_PORT": str(port),
        "MASKRCNN_METRICS_PORT": str(free_port()),
        "MASKRCNN_LOG_JSON": "false",
        "MASKRCNN_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen([sys.executable, "-m", "visioncompare.maskrcnn"], env=env, cwd=ROOT)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the service exited with {proc.returncode} while starting")
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return proc, address
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"the service did not report SERVING within {timeout_s:.0f}s")


def describe(samples: list[float]) -> str:
    low, high = min(samples), max(samples)
    return f"median {statistics.median(samples):8.1f} ms  (min {low:.1f}, max {high:.1f}, n={len(samples)})"


class InProcess:
    """The service's model, loaded in this process: torchvision's forward, and predict.

    Both run on one worker thread, as the service runs predict().
    """

    def __init__(self, config: dict[str, object], image: np.ndarray) -> None:
        import torch

        self.torch = torch
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="in-process")
        self.model = MaskRCNNModel(MaskRCNNSettings(metrics_port=None, **config))  # type: ignore[arg-type]
        self.worker.submit(self.model.load).result()
        self.image = image
        self.found = 0

    def on_worker(self, fn: Callable[[], object]) -> Callable[[], object]:
        return lambda: self.worker.submit(fn).result()

    def forward(self) -> None:
        torch, model = self.torch, self.model
        assert model.plan is not None
        net, device = model.networks["detector"].net, model.plan.device
        with torch.inference_mode():
            tensor = torch.from_numpy(self.image.copy()).to(device).permute(2, 0, 1).float() / 255
            net([tensor])
            if device.type == "cuda":
                torch.cuda.synchronize(device)

    def predict(self, n: int = 1) -> None:
        answers = self.model.predict([InferenceRequest(TASK, self.image) for _ in range(n)])
        for answer in answers:
            if not isinstance(answer, Prediction):
                raise answer
            self.found = len(answer.instances)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=3, help="timed runs per latency figure")
    parser.add_argument(
        "--batch-rounds", type=int, default=1, help="batches of 4 images (in-process); requests per client (gRPC)"
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--variant", choices=("v1", "v2"), default="v1")
    parser.add_argument("--weights", default="random", help="as MASKRCNN_WEIGHTS, e.g. torchvision:COCO_V1")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--min-size", type=int, default=800)
    parser.add_argument("--max-size", type=int, default=1333)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--queue-delay-ms", type=float, default=5.0, help="service: how long a batch waits for company")
    parser.add_argument("--start-timeout", type=float, default=600)
    args = parser.parse_args()

    batch = 4
    config = {
        "variant": args.variant,
        "weights": args.weights,
        "min_size": args.min_size,
        "max_size": args.max_size,
        "device": args.device,
        "max_batch_size": batch,
        "max_queue_delay_ms": args.queue_delay_ms,
    }
    image = make_image(args.width, args.height)
    encoded = jpeg(image)
    # The service decodes the JPEG; in-process gets the decoded pixels, as a Python caller would.
    from visioncompare.runtime.images import decode_bytes

    decoded = decode_bytes(encoded, max_pixels=10**9)

    print(
        f"Mask R-CNN {args.variant}, weights={args.weights}, image {args.width}x{args.height} "
        f"(JPEG {len(encoded) // 1024} KiB), resize {args.min_size}/{args.max_size}, task {TASK.name}, "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}",
        flush=True,
    )
    service, address = start_service({f"MASKRCNN_{k.upper()}": str(v) for k, v in config.items()}, args.start_timeout)
    try:
        local = InProcess(config, decoded)
        with VisionModelClient(address, timeout=600) as client:

            def segment() -> int:
                return client.segment(encoded, TASK).batch_size

            forward, predict = local.on_worker(local.forward), local.on_worker(local.predict)
            predict4 = local.on_worker(lambda: local.predict(batch))
            for _ in range(args.warmup):
                forward(), predict(), segment()
            # Interleaved, so that whatever else the machine does weighs on all alike.
            t_forward, t_predict, t_grpc = [], [], []
            for _ in range(args.iterations):
                t_forward += timed(forward, 1)
                t_predict += timed(predict, 1)
                t_grpc += timed(segment, 1)
            # Batch 4: predict() on 4 images, against 4 concurrent requests that the scheduler batches.
            t_predict4, t_grpc4, sizes = [], [], []
            with ThreadPoolExecutor(batch) as pool:

                def four_requests() -> None:
                    sizes.extend(pool.map(lambda _: segment(), range(batch)))

                for _ in range(args.batch_rounds):
                    t_predict4 += timed(predict4, 1)
                    t_grpc4 += timed(four_requests, 1)
        service_rss = peak_rss_mib(service.pid)
        inproc_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    finally:
        service.terminate()
        service.wait(60)

    med = statistics.median
    print(f"  detections per image           : {local.found}")
    print(f"  in-process torchvision forward : {describe(t_forward)}")
    print(f"  in-process MaskRCNNModel.predict: {describe(t_predict)}")
    print(f"  gRPC Segment, one at a time    : {describe(t_grpc)}")
    print(f"  ratio gRPC / in-process predict: {med(t_grpc) / med(t_predict):.3f}")
    print(f"  ratio gRPC / torchvision forward: {med(t_grpc) / med(t_forward):.3f}")
    print(f"  images/s batch 1               : in-process {1000 / med(t_predict):.3f}, gRPC {1000 / med(t_grpc):.3f}")
    print(
        f"  images/s batch {batch}               : in-process {batch * 1000 / med(t_predict4):.3f}, "
        f"gRPC {batch * 1000 / med(t_grpc4):.3f} (batch sizes the service reported: {sizes})"
    )
    rss = f"{service_rss:.0f} MiB" if service_rss is not None else "n/a (no /proc)"
    print(f"  peak RSS                       : service {rss}; this process (in-process model) {inproc_rss:.0f} MiB")


if __name__ == "__main__":
    main()
