"""The data plane: one inference path under every protocol the model server speaks.

As in KServe (`kserve/protocol/dataplane.py`) and MLServer (`mlserver/handlers/dataplane.py`),
the protocol front-ends are codecs over one data plane: `VisionModelServicer`
(`visioncompare.runtime.servicer`) and the Open Inference Protocol's `OipServicer`
(`visioncompare.runtime.oip`) turn their messages into domain values (a Task, an image,
TaskOptions), call `DataPlane.infer` and turn the `Inference` back into their messages.
The data plane holds no protobuf. It owns:

- readiness: loaded and warm (`mark_ready`) until the drain (`mark_draining`), and the
  one "not serving" error for both protocols (`check_ready`);
- the capabilities, fixed at load;
- the decoding threads, a bound on decoding work for both protocols;
- inference: decode -> InferenceRequest -> `model.validate` -> `BatchScheduler.submit`,
  and what every answer says of how it was made (runtime, warnings).

Errors are the runtime's own (`visioncompare.runtime.errors`); the interceptor maps them for
every protocol.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from visioncompare.runtime.errors import ModelNotReady
from visioncompare.runtime.images import decode_bytes
from visioncompare.runtime.logs import request_id_var
from visioncompare.runtime.model import VisionModel
from visioncompare.runtime.scheduler import BatchScheduler
from visioncompare.runtime.types import Capabilities, InferenceRequest, Prediction, RuntimeInfo, Task, TaskOptions

_T = TypeVar("_T")

#: Decodes an encoded image file to H x W x 3 uint8 RGB within a pixel limit: (data, max_pixels).
#: Its errors name the field the protocol carries the file in.
FileDecoder = Callable[[bytes, int], np.ndarray]


def decode_file(data: bytes, max_pixels: int) -> np.ndarray:
    """The default FileDecoder: `images.decode_bytes`, whose errors name `image.encoded`."""
    return decode_bytes(data, max_pixels=max_pixels)


def deadline_in(seconds: float | None) -> float | None:
    """The deadline `seconds` from now (a gRPC context's time_remaining()), for `DataPlane.infer`."""
    return None if seconds is None else time.monotonic() + seconds


@dataclass(frozen=True)
class Inference:
    """One answered request: the request as the model saw it, its prediction, and what the
    answer says of how it was made."""

    request: InferenceRequest
    prediction: Prediction
    runtime: RuntimeInfo
    #: The runtime's warnings, then the prediction's, without repeats.
    warnings: tuple[str, ...]
    #: Seconds spent decoding the image (on a decoding thread, or inline for pixels).
    decode_s: float


class DataPlane:
    """One model behind its scheduler: readiness, capabilities, decoding and inference."""

    def __init__(
        self, model: VisionModel, scheduler: BatchScheduler, *, max_image_pixels: int, decode_threads: int = 2
    ) -> None:
        self.model = model
        self.scheduler = scheduler
        self.max_image_pixels = max_image_pixels
        self._ready = False
        self._capabilities: Capabilities | None = None  # set by mark_ready(), fixed after load
        self._warnings: tuple[str, ...] = ()  # the runtime's, without repeats
        # Decoding is CPU work: keep it off the event loop.
        self._decoder = ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="decode")

    @property
    def name(self) -> str:
        """The model's short name, as logs, metrics and both protocols spell it."""
        return self.model.name

    # --- readiness and capabilities ---

    def mark_ready(self) -> None:
        """The model is loaded and warm: take its capabilities and accept requests."""
        self._capabilities = self.model.capabilities()
        self._warnings = tuple(dict.fromkeys(self._capabilities.runtime.warnings))
        self._ready = True

    def mark_draining(self) -> None:
        """The server is stopping: refuse new requests (those in flight finish)."""
        self._ready = False

    @property
    def ready(self) -> bool:
        """Loaded and warm, and not draining."""
        return self._ready

    @property
    def serving(self) -> bool:
        """Ready, and the inference worker healthy: as grpc.health.v1 SERVING."""
        return self._ready and self.scheduler.healthy

    def check_ready(self) -> None:
        if not self._ready:
            raise ModelNotReady(f"{self.model.name} is not serving yet (loading or warming up); retry shortly")

    @property
    def capabilities(self) -> Capabilities:
        """The model's capabilities; UNAVAILABLE until it is ready."""
        self.check_ready()
        assert self._capabilities is not None
        return self._capabilities

    def served_tasks(self) -> frozenset[Task]:
        return frozenset(t.task for t in self.capabilities.tasks)

    # --- inference ---

    async def infer(
        self,
        task: Task,
        image: np.ndarray | bytes,
        options: TaskOptions,
        deadline: float | None,
        *,
        decode: FileDecoder = decode_file,
    ) -> Inference:
        """Run one request: `image` is H x W x 3 uint8 RGB pixels, or an encoded file that
        `decode` turns into pixels on a decoding thread; `deadline` is when the caller stops
        waiting, on `time.monotonic()`'s clock (`deadline_in`; None: never). The model
        validates the request before it is queued."""
        caps = self.capabilities  # UNAVAILABLE unless ready; kept for the answer, even if a drain begins
        start = time.perf_counter()
        if isinstance(image, bytes):
            image = await self.run_cpu(decode, image, self.max_image_pixels)
        decode_s = time.perf_counter() - start
        request = InferenceRequest(task=task, image=image, options=options, request_id=request_id_var.get())
        self.model.validate(request)
        prediction = await self.scheduler.submit(request, None if deadline is None else deadline - time.monotonic())
        warnings = self._warnings
        if prediction.warnings:
            warnings = tuple(dict.fromkeys([*warnings, *prediction.warnings]))
        return Inference(request, prediction, caps.runtime, warnings, decode_s)

    async def run_cpu(self, fn: Callable[..., _T], *args: Any) -> _T:
        """CPU work of a request (decoding an image, encoding masks) on the decoding threads,
        off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._decoder, fn, *args)

    def close(self) -> None:
        self._decoder.shutdown(wait=False)
