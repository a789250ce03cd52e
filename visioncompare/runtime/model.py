"""The interface every model service implements.

Lifecycle: `load()` (weights in, may take minutes) -> `warmup()` -> serving.
Per batch the scheduler calls `predict(requests)` off the event loop; it answers
each request with a Prediction, or with a ServiceError for that request alone.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager

from visioncompare.runtime.errors import ServiceError, Unimplemented
from visioncompare.runtime.tasks import check_options, check_ranges
from visioncompare.runtime.types import Capabilities, InferenceRequest, Prediction, Task, Timing


class VisionModel(abc.ABC):
    """A model behind the VisionModelService contract."""

    #: Short, stable name used in logs, metrics and the gateway, e.g. "maskrcnn".
    name: str = "model"

    @abc.abstractmethod
    def load(self) -> None:
        """Build the model and load its weights. Raise ConfigurationError on bad weights."""

    @abc.abstractmethod
    def warmup(self) -> None:
        """Run one inference per served task, so that the first request is not slow."""

    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """The model card, served tasks and runtime; valid after load()."""

    @abc.abstractmethod
    def predict(self, requests: Sequence[InferenceRequest]) -> list[Prediction | ServiceError]:
        """Run one batch; the i-th answer belongs to the i-th request."""

    def validate(self, request: InferenceRequest) -> None:
        """Reject a bad request before it is queued: UNIMPLEMENTED for a task not served,
        INVALID_ARGUMENT for a set option the task's capability does not accept or a number
        option outside the API's range. Override to add the model's own checks (after
        calling this)."""
        capabilities = self.capabilities()
        if capabilities.capability(request.task) is None:
            names = ", ".join(t.name for t in sorted({t.task for t in capabilities.tasks}))
            raise Unimplemented(
                f"{self.name} does not serve {request.task.name}; it serves: {names}",
                metadata={"served_tasks": names},
            )
        check_options(request, capabilities, self.name)
        check_ranges(request.options)

    def batch_key(self, request: InferenceRequest) -> Hashable:
        """Requests with equal keys may share a batch."""
        return request.task

    def served_tasks(self) -> frozenset[Task]:
        return frozenset(t.task for t in self.capabilities().tasks)

    def close(self) -> None:  # noqa: B027 - an optional hook
        """Release resources (called once at shutdown)."""


class StageTimer:
    """Times preprocess / inference / postprocess stages into a Timing.

    >>> timer = StageTimer()
    >>> with timer.stage("inference_ms"): ...
    """

    def __init__(self) -> None:
        self.timing = Timing()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = (time.perf_counter() - start) * 1000.0
            setattr(self.timing, name, getattr(self.timing, name) + elapsed)
