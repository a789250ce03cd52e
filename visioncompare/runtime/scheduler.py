"""Dynamic batching in the manner of Triton's dynamic batcher.

Requests wait in a bounded queue. The scheduler forms a batch from requests with
the same batch key: it takes the oldest request, then waits up to
`max_queue_delay_ms` for more, up to `max_batch_size`. The model runs on the
scheduler's inference thread, off the event loop, one batch at a time. A request
whose deadline has passed by the time its batch forms is answered DEADLINE_EXCEEDED
and never computed; a full queue answers RESOURCE_EXHAUSTED at once.

The scheduler runs on event-loop callbacks, not on a task of its own: an arrival
schedules the forming of a batch (once per loop iteration, so that requests arriving
together share it), the batch goes to the inference thread through a queue, and the
thread hands the answers back with `call_soon_threadsafe`, which answers the batch's
requests and forms the next batch. One thread hop per batch and no future chained
across threads. What the hop costs depends on the load (`bench/runtime_overhead.py`, a no-op
model, 2 cores): on an idle machine a bare gRPC server that only hands each request to a
thread and back reaches 0.82-0.85 of bare gRPC's throughput; with the machine busy it costs
next to nothing, and so does keeping one batch in flight as here, and the runtime's own
Python per request (interceptor, servicer, data plane, scheduler, conversion) is what remains.

Failures never strand a request. Whatever goes wrong with one batch (the model
raises, or answers the wrong number of requests, or with something that is not
an answer) fails that batch's requests with INTERNAL, and the scheduler goes on
with the next batch. If the worker cannot go on (the model raised what is not an
Exception, such as SystemExit), queued and new requests are refused with UNAVAILABLE
and `on_health(False)` reports the model down for good. A watchdog reports the
model down (`on_health(False)`) while one inference runs longer than
`watchdog_s`, and up again (`on_health(True)`) if it does finish.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from typing import Any

from visioncompare.runtime.errors import DeadlineExceeded, ModelNotReady, Overloaded, ServiceError
from visioncompare.runtime.metrics import ServerMetrics
from visioncompare.runtime.model import VisionModel
from visioncompare.runtime.types import InferenceRequest, Prediction

log = logging.getLogger(__name__)

#: What the model answered a batch with, as the inference thread hands it back.
_Answers = list[Prediction | ServiceError] | BaseException


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
        self.watchdog_s = watchdog_s
        self._on_health = on_health
        self._pending: deque[_Item] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None  # set by start()
        self._thread: threading.Thread | None = None  # the inference thread
        self._jobs: queue.SimpleQueue[list[_Item] | None] = queue.SimpleQueue()  # batches for the thread; None: stop
        self._held: list[_Item] = []  # the batch forming or running: held where a failure can still answer it
        self._busy = False  # the held batch is on the inference thread
        self._started = 0.0  # when the running batch started (time.monotonic())
        self._close_at = 0.0  # when the forming batch stops waiting for more
        self._dispatching = False  # a _dispatch is scheduled
        self._delay_timer: asyncio.TimerHandle | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._closing = False  # stop() began: no new requests
        self._stopped = False  # stop() ended: no new batches
        self._dead = False  # the worker cannot go on
        self._overdue_since: float | None = None  # start of an inference running past the watchdog
        self._notices: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # A daemon: an inference stuck past the watchdog is left behind at exit, not waited for.
        self._thread = threading.Thread(target=self._infer_thread, name=f"{self.model.name}-infer", daemon=True)
        self._thread.start()

    @property
    def healthy(self) -> bool:
        """False once the worker died, and while an inference runs past the watchdog."""
        return not self._dead and self._overdue_since is None

    async def submit(self, request: InferenceRequest, timeout_s: float | None = None) -> Prediction:
        """Queue one request and wait for its answer."""
        loop = self._loop
        if self._closing or loop is None:
            raise ModelNotReady("the model is not accepting requests (loading or shutting down)")
        if not self.healthy:
            raise self._down_error()
        if len(self._pending) >= self.max_queue_size:
            raise Overloaded(
                f"inference queue is full ({self.max_queue_size} waiting); retry with backoff",
                metadata={"max_queue_size": str(self.max_queue_size)},
            )
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        item = _Item(request, self.model.batch_key(request), deadline, loop.create_future())
        self._pending.append(item)
        self.metrics.queue_depth.set(len(self._pending))
        if not self._busy and not self._dispatching:
            self._dispatching = True
            loop.call_soon(self._dispatch)
        return await item.future

    async def stop(self) -> None:
        """Finish what is queued, then stop the inference thread.

        What a dead or stuck worker cannot finish is answered UNAVAILABLE; an inference
        stuck past the watchdog is left behind, not waited for.
        """
        self._closing = True
        while (self._pending or self._held) and self._thread is not None and not self._dead:
            if self._overdue_since is not None:
                break
            await asyncio.sleep(0.01)
        self._stopped = True
        for timer in (self._delay_timer, self._watchdog):
            if timer is not None:
                timer.cancel()
        self._delay_timer = self._watchdog = None
        self._fail_waiting(
            lambda: ModelNotReady(f"{self.model.name} is shutting down; retry on another replica"), held=True
        )
        if self._thread is not None:
            self._jobs.put(None)
            if self._overdue_since is None:
                self._thread.join()

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
        """Answer the queued requests, and with `held` the batch the scheduler holds, with `make_error()`."""
        items = [*(self._held if held else ()), *self._pending]
        self._pending = deque()
        if held:
            self._held = []
        self.metrics.queue_depth.set(0)
        for item in items:
            if not item.future.done():
                item.future.set_exception(make_error())

    def _notify(self, serving: bool) -> None:
        if self._on_health is None or self._loop is None:
            return
        task = self._loop.create_task(self._on_health(serving), name="scheduler-health")
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    def _worker_died(self, error: BaseException) -> None:
        self._dead = True
        log.critical(
            "the inference worker of %s ended (%s): refusing requests and reporting NOT_SERVING",
            self.model.name,
            type(error).__name__,
            exc_info=error,
        )
        self._fail_waiting(self._down_error, held=True)
        self._notify(False)

    def _watchdog_check(self) -> None:
        """The watchdog's one timer: due `watchdog_s` after the running batch started."""
        self._watchdog = None
        if not self._busy or self._overdue_since is not None or self.watchdog_s is None:
            return  # idle (the next batch arms it again), or already reported
        due = self._started + self.watchdog_s
        now = time.monotonic()
        if now < due:  # a later batch than the one it was armed for
            assert self._loop is not None
            self._watchdog = self._loop.call_later(due - now, self._watchdog_check)
            return
        self._overdue_since = self._started
        log.critical(
            "WATCHDOG: %s has run one inference (batch of %d) for more than inference_watchdog_s=%gs; "
            "reporting NOT_SERVING so that the orchestrator restarts the service, and refusing new requests",
            self.model.name,
            len(self._held),
            self.watchdog_s,
        )
        self._fail_waiting(self._down_error, held=False)  # the batch in flight may still be answered
        self._notify(False)

    # --- forming batches (event loop) -----------------------------------------------------

    def _take(self, key: Hashable, room: int) -> list[_Item]:
        taken = [i for i in self._pending if i.key == key][:room]
        for item in taken:
            self._pending.remove(item)
        return taken

    def _dispatch(self) -> None:
        """Form the next batch and hand it to the inference thread, unless one is running."""
        self._dispatching = False
        while not (self._busy or self._dead or self._stopped):
            if not self._held:
                if not self._pending:
                    return
                first = self._pending.popleft()
                self._held = [first]
                self._close_at = first.enqueued + self.max_delay_s
            batch = self._held
            if len(batch) < self.max_batch_size:
                batch += self._take(batch[0].key, self.max_batch_size - len(batch))
            wait = self._close_at - time.monotonic()
            if len(batch) < self.max_batch_size and wait > 0:  # wait for more, until close_at
                if self._delay_timer is None:
                    assert self._loop is not None
                    self._delay_timer = self._loop.call_later(wait, self._delay_over)
                self.metrics.queue_depth.set(len(self._pending))
                return
            if self._delay_timer is not None:
                self._delay_timer.cancel()
                self._delay_timer = None
            self.metrics.queue_depth.set(len(self._pending))
            self._held = self._live(batch)
            if self._held:
                self._launch(self._held)

    def _delay_over(self) -> None:
        self._delay_timer = None
        self._dispatch()

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

    def _launch(self, batch: list[_Item]) -> None:
        self._busy = True
        self._started = started = time.monotonic()
        for item in batch:
            self.metrics.queue_latency.observe(started - item.enqueued)
        self.metrics.batch_size.observe(len(batch))
        if self.watchdog_s is not None and self._watchdog is None:
            assert self._loop is not None
            self._watchdog = self._loop.call_later(self.watchdog_s, self._watchdog_check)
        self._jobs.put(batch)

    # --- inference (the inference thread, then the event loop) ----------------------------

    def _infer_thread(self) -> None:
        loop = self._loop
        assert loop is not None
        while (batch := self._jobs.get()) is not None:
            answers: _Answers
            try:
                answers = self.model.predict([item.request for item in batch])
            except BaseException as exc:  # noqa: BLE001 - handed to the event loop, which decides
                answers = exc
            try:
                loop.call_soon_threadsafe(self._finished, batch, answers)
            except RuntimeError:  # the loop is closed: no one waits for the answers any more
                return

    def _finished(self, batch: list[_Item], answers: _Answers) -> None:
        """The inference thread's answers to `batch`: answer its requests, then form the next batch."""
        if self._stopped:  # stop() answered the batch (an inference it left behind)
            return
        started = self._started
        self._busy = False
        if self._held is batch:
            self._held = []
        if isinstance(answers, Exception):  # delivered to each caller, mapped to INTERNAL
            log.error("model %s failed on a batch of %d", self.model.name, len(batch), exc_info=answers)
        elif isinstance(answers, BaseException):  # e.g. SystemExit from model code: cannot go on
            self._fail_batch(batch, answers)
            self._worker_died(RuntimeError(f"the worker cannot go on after {type(answers).__name__}"))
            return
        if self._overdue_since is not None:  # it was slow, not hung
            log.warning(
                "WATCHDOG: %s finished the overdue inference after %.1fs; serving again",
                self.model.name,
                time.monotonic() - started,
            )
            self._overdue_since = None
            if not self._closing:
                self._notify(True)
        try:
            self._answer(batch, answers, started)
        except Exception as exc:  # noqa: BLE001 - this batch fails, the scheduler goes on
            log.exception("model %s: a batch of %d failed in the scheduler", self.model.name, len(batch))
            self._fail_batch(batch, exc)
        if self._pending:
            self._dispatch()

    def _answer(self, batch: list[_Item], answers: _Answers, started: float) -> None:
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

    @staticmethod
    def _fail_batch(batch: list[_Item], cause: BaseException) -> None:
        """INTERNAL for every request of the batch not answered yet (a fresh exception each)."""
        for item in batch:
            if not item.future.done():
                error = RuntimeError(f"the batch failed: {type(cause).__name__}")
                error.__cause__ = cause
                item.future.set_exception(error)
