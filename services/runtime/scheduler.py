"""Dynamic batching in the manner of Triton's dynamic batcher.

Requests wait in a bounded queue. One worker forms a batch from requests with
the same batch key: it takes the oldest request, then waits up to
`max_queue_delay_ms` for more, up to `max_batch_size`. The model runs in a
worker thread, off the event loop. A request whose deadline has passed by the
time its batch forms is answered DEADLINE_EXCEEDED and never computed; a full
queue answers RESOURCE_EXHAUSTED at once.

Failures never strand a request. Whatever goes wrong with one batch (the model
raises, or answers the wrong number of requests, or with something that is not
an answer) fails that batch's requests with INTERNAL, and the worker goes on
with the next batch. If the worker cannot go on (it ended other than by
`stop()`), queued and new requests are refused with UNAVAILABLE and
`on_health(False)` reports the model down for good. A watchdog reports the
model down (`on_health(False)`) while one inference runs longer than
`watchdog_s`, and up again (`on_health(True)`) if it does finish.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from services.runtime.errors import DeadlineExceeded, ModelNotReady, Overloaded, ServiceError
from services.runtime.metrics import ServerMetrics
from services.runtime.model import VisionModel
from services.runtime.types import InferenceRequest, Prediction

log = logging.getLogger(__name__)


@dataclass(eq=False)  # compared by identity: _take removes an item from among others (the request holds arrays)
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
        watchdog_s: float | None = None,
        on_health: Callable[[bool], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        """`on_health(serving)` is awaited when the worker dies, and when an inference runs
        past `watchdog_s` (None: no watchdog) or finishes after it did."""
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
        self.watchdog_s = watchdog_s
        self._on_health = on_health
        self._forming: list[_Item] = []  # the batch the worker holds (forming or running)
        self._dead = False  # the worker ended other than by stop()
        self._overdue_since: float | None = None  # start of an inference running past the watchdog
        self._notices: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="batch-scheduler")
        self._worker.add_done_callback(self._worker_ended)

    @property
    def healthy(self) -> bool:
        """False once the worker died, and while an inference runs past the watchdog."""
        return not self._dead and self._overdue_since is None

    async def submit(self, request: InferenceRequest, timeout_s: float | None = None) -> Prediction:
        """Queue one request and wait for its answer."""
        if self._closing or self._worker is None:
            raise ModelNotReady("the model is not accepting requests (loading or shutting down)")
        if not self.healthy:
            raise self._down_error()
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
        """Finish what is queued, then stop the worker and its thread.

        What a dead or stuck worker cannot finish is answered UNAVAILABLE; the thread
        of an inference stuck past the watchdog is left behind, not waited for.
        """
        self._closing = True
        while (self._pending or self._forming) and self._worker is not None and not self._worker.done():
            if self._overdue_since is not None:
                break
            await asyncio.sleep(0.01)
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._fail_waiting(
            lambda: ModelNotReady(f"{self.model.name} is shutting down; retry on another replica"), held=True
        )
        self._executor.shutdown(wait=self._overdue_since is None)

    # --- failure handling -------------------------------------------------------------

    def _down_error(self) -> ModelNotReady:
        if self._dead:
            why = "its inference worker stopped after an internal error"
        else:
            assert self._overdue_since is not None and self.watchdog_s is not None
            why = (
                f"an inference has run for {time.monotonic() - self._overdue_since:.0f}s, "
                f"past the watchdog limit of {self.watchdog_s:g}s"
            )
        return ModelNotReady(f"{self.model.name} is not serving: {why}; retry on another replica")

    def _fail_waiting(self, make_error: Callable[[], ServiceError], *, held: bool) -> None:
        """Answer the queued requests, and with `held` the batch the worker holds, with `make_error()`."""
        items = [*(self._forming if held else ()), *self._pending]
        self._pending = deque()
        if held:
            self._forming = []
        self.metrics.queue_depth.set(0)
        for item in items:
            if not item.future.done():
                item.future.set_exception(make_error())

    def _notify(self, serving: bool) -> None:
        if self._on_health is None:
            return
        task = asyncio.get_running_loop().create_task(self._on_health(serving), name="scheduler-health")
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    def _worker_ended(self, worker: asyncio.Task[None]) -> None:
        if worker.cancelled() and self._closing:
            return  # stop()
        self._dead = True
        error = None if worker.cancelled() else worker.exception()
        log.critical(
            "the inference worker of %s ended (%s): refusing requests and reporting NOT_SERVING",
            self.model.name,
            "cancelled" if error is None else f"{type(error).__name__}",
            exc_info=error,
        )
        self._fail_waiting(self._down_error, held=True)
        self._notify(False)

    def _watchdog_fired(self, started: float, size: int) -> None:
        self._overdue_since = started
        log.critical(
            "WATCHDOG: %s has run one inference (batch of %d) for more than inference_watchdog_s=%gs; "
            "reporting NOT_SERVING so that the orchestrator restarts the service, and refusing new requests",
            self.model.name,
            size,
            self.watchdog_s,
        )
        self._fail_waiting(self._down_error, held=False)  # the batch in flight may still be answered
        self._notify(False)

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
        batch = self._forming = [first]  # held where a failure can still answer it
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
        while True:
            self._forming = []
            try:
                batch = self._forming = self._live(await self._form_batch())
                if batch:
                    await self._infer(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - this batch fails, the worker goes on
                log.exception("model %s: a batch of %d failed in the scheduler", self.model.name, len(self._forming))
                self._fail_batch(self._forming, exc)
            except BaseException as exc:  # noqa: BLE001 - e.g. SystemExit from model code: cannot go on
                self._fail_batch(self._forming, exc)
                raise RuntimeError(f"the worker cannot go on after {type(exc).__name__}") from exc

    @staticmethod
    def _fail_batch(batch: list[_Item], cause: BaseException) -> None:
        """INTERNAL for every request of the batch not answered yet (a fresh exception each)."""
        for item in batch:
            if not item.future.done():
                error = RuntimeError(f"the batch failed: {type(cause).__name__}")
                error.__cause__ = cause
                item.future.set_exception(error)

    async def _infer(self, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        for item in batch:
            self.metrics.queue_latency.observe(started - item.enqueued)
        self.metrics.batch_size.observe(len(batch))
        requests = [item.request for item in batch]
        watchdog = None
        if self.watchdog_s is not None:
            watchdog = loop.call_later(self.watchdog_s, self._watchdog_fired, started, len(batch))
        try:
            answers: list[Prediction | ServiceError] | BaseException = await loop.run_in_executor(
                self._executor, self.model.predict, requests
            )
        except Exception as exc:  # noqa: BLE001 - delivered to each caller, mapped to INTERNAL
            log.exception("model %s failed on a batch of %d", self.model.name, len(batch))
            answers = exc
        finally:
            if watchdog is not None:
                watchdog.cancel()
        if self._overdue_since is not None:  # it was slow, not hung (still overdue if cancelled)
            log.warning(
                "WATCHDOG: %s finished the overdue inference after %.1fs; serving again",
                self.model.name,
                time.monotonic() - started,
            )
            self._overdue_since = None
            if not self._closing:
                self._notify(True)
        self.metrics.inference_latency.observe(time.monotonic() - started)
        if not isinstance(answers, BaseException) and (
            not isinstance(answers, list | tuple) or len(answers) != len(batch)
        ):
            count = len(answers) if isinstance(answers, list | tuple) else f"a {type(answers).__name__}"
            raise RuntimeError(f"model {self.model.name} answered {count} for a batch of {len(batch)} requests")
        for i, item in enumerate(batch):
            if item.future.done():
                continue
            answer = answers if isinstance(answers, BaseException) else answers[i]
            if isinstance(answer, BaseException):
                item.future.set_exception(answer)
            elif isinstance(answer, Prediction):
                answer.timing.queue_ms = (started - item.enqueued) * 1000.0
                answer.batch_size = len(batch)
                item.future.set_result(answer)
            else:
                item.future.set_exception(
                    RuntimeError(f"model {self.model.name} answered request {i} with a {type(answer).__name__}")
                )
