"""Dynamic batching in the manner of Triton's dynamic batcher.

Requests wait in a bounded queue. One worker forms a batch from requests with
the same batch key: it takes the oldest request, then waits up to
`max_queue_delay_ms` for more, up to `max_batch_size`. The model runs in a
worker thread, off the event loop. A request whose deadline has passed by the
time its batch forms is answered DEADLINE_EXCEEDED and never computed; a full
queue answers RESOURCE_EXHAUSTED at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from services.runtime.errors import DeadlineExceeded, ModelNotReady, Overloaded, ServiceError
from services.runtime.metrics import ServerMetrics
from services.runtime.model import VisionModel
from services.runtime.types import InferenceRequest, Prediction

log = logging.getLogger(__name__)


@dataclass
class _Item:
    request: InferenceRequest
    key: Hashable
    deadline: float | None  # time.monotonic() based
    future: asyncio.Future[Prediction]
    enqueued: float = field(default_factory=time.monotonic)


class BatchScheduler:
    def __init__(
        self,
        model: VisionModel,
        metrics: ServerMetrics,
        *,
        max_batch_size: int,
        max_queue_delay_ms: float,
        max_queue_size: int,
    ) -> None:
        self.model = model
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_queue_delay_ms / 1000.0
        self.max_queue_size = max_queue_size
        self._pending: deque[_Item] = deque()
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{model.name}-infer")
        self._worker: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="batch-scheduler")

    async def submit(self, request: InferenceRequest, timeout_s: float | None = None) -> Prediction:
        """Queue one request and wait for its answer."""
        if self._closing or self._worker is None:
            raise ModelNotReady("the model is not accepting requests (loading or shutting down)")
        if len(self._pending) >= self.max_queue_size:
            raise Overloaded(
                f"inference queue is full ({self.max_queue_size} waiting); retry with backoff",
                metadata={"max_queue_size": str(self.max_queue_size)},
            )
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        item = _Item(request, self.model.batch_key(request), deadline, asyncio.get_running_loop().create_future())
        self._pending.append(item)
        self.metrics.queue_depth.set(len(self._pending))
        self._arrived.set()
        return await item.future

    async def stop(self) -> None:
        """Finish what is queued, then stop the worker and its thread."""
        self._closing = True
        while self._pending:
            await asyncio.sleep(0.01)
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=True)

    # --- worker --------------------------------------------------------------

    def _take(self, key: Hashable, room: int) -> list[_Item]:
        taken = [i for i in self._pending if i.key == key][:room]
        for item in taken:
            self._pending.remove(item)
        return taken

    async def _form_batch(self) -> list[_Item]:
        while not self._pending:
            self._arrived.clear()
            await self._arrived.wait()
        first = self._pending.popleft()
        batch = [first]
        close_at = first.enqueued + self.max_delay_s
        while len(batch) < self.max_batch_size:
            batch += self._take(first.key, self.max_batch_size - len(batch))
            remaining = close_at - time.monotonic()
            if len(batch) >= self.max_batch_size or remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                batch += self._take(first.key, self.max_batch_size - len(batch))
                break
        self.metrics.queue_depth.set(len(self._pending))
        return batch

    def _live(self, batch: list[_Item]) -> list[_Item]:
        """Drop requests whose deadline passed or whose caller went away."""
        now = time.monotonic()
        live = []
        for item in batch:
            expired = item.deadline is not None and item.deadline <= now
            if expired or item.future.done():
                self.metrics.dropped.labels(reason="deadline" if expired else "cancelled").inc()
                if not item.future.done():
                    item.future.set_exception(
                        DeadlineExceeded("the deadline passed while the request waited in the queue")
                    )
                continue
            live.append(item)
        return live

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = self._live(await self._form_batch())
            if not batch:
                continue
            started = time.monotonic()
            for item in batch:
                self.metrics.queue_latency.observe(started - item.enqueued)
            self.metrics.batch_size.observe(len(batch))
            requests = [item.request for item in batch]
            try:
                answers: list[Prediction | ServiceError] | BaseException = await loop.run_in_executor(
                    self._executor, self.model.predict, requests
                )
            except Exception as exc:  # noqa: BLE001 - delivered to each caller, mapped to INTERNAL
                log.exception("model %s failed on a batch of %d", self.model.name, len(batch))
                answers = exc
            self.metrics.inference_latency.observe(time.monotonic() - started)
            for i, item in enumerate(batch):
                if item.future.done():
                    continue
                answer = answers if isinstance(answers, BaseException) else answers[i]
                if isinstance(answer, BaseException):
                    item.future.set_exception(answer)
                else:
                    answer.timing.queue_ms = (started - item.enqueued) * 1000.0
                    answer.batch_size = len(batch)
                    item.future.set_result(answer)
