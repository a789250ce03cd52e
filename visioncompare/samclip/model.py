"""SAM-CLIP as a VisionModel: every task on top of a SamClipBackend."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

import numpy as np

from visioncompare.runtime.device import DevicePlan, plan_device
from visioncompare.runtime.engines import fp32_plan, ort_version
from visioncompare.runtime.errors import ServiceError
from visioncompare.runtime.model import StageTimer, VisionModel
from visioncompare.runtime.settings import Engine
from visioncompare.runtime.types import (
    AutomaticOptions,
    Box,
    Capabilities,
    InferenceRequest,
    ModelCard,
    Point,
    Prediction,
    PromptKind,
    RuntimeInfo,
    Task,
    TaskCapability,
    TaskOptions,
    Vocabulary,
)
from visioncompare.samclip.algorithms import TaskAlgorithms
from visioncompare.samclip.backend import ImageEmbedding, SamClipBackend
from visioncompare.samclip.settings import SamClipSettings
from visioncompare.samclip.validation import accepted_options, check_request

log = logging.getLogger(__name__)

BackendFactory = Callable[[SamClipSettings, DevicePlan], SamClipBackend]

SAM_TASKS = frozenset(
    {
        Task.PROMPTED_SEGMENTATION,
        Task.AUTOMATIC_SEGMENTATION,
        Task.OBJECT_DETECTION,
        Task.INSTANCE_SEGMENTATION,
        Task.SEMANTIC_SEGMENTATION,
    }
)

TASKS = tuple(
    TaskCapability(task, vocabulary, prompt_kinds=prompt_kinds, accepted_options=accepted_options(task))
    for task, vocabulary, prompt_kinds in (
        (Task.ZERO_SHOT_CLASSIFICATION, Vocabulary.OPEN, (PromptKind.TEXT,)),
        (Task.PROMPTED_SEGMENTATION, Vocabulary.NONE, (PromptKind.POINT, PromptKind.BOX)),
        (Task.AUTOMATIC_SEGMENTATION, Vocabulary.NONE, ()),
        (Task.SEMANTIC_SEGMENTATION, Vocabulary.OPEN, (PromptKind.TEXT,)),
        (Task.OBJECT_DETECTION, Vocabulary.OPEN, (PromptKind.TEXT,)),
        (Task.INSTANCE_SEGMENTATION, Vocabulary.OPEN, (PromptKind.TEXT,)),
    )
)

FEATURES = (
    "Foundation Vision",
    "Zero-shot Classification",
    "Promptable Segmentation",
    "Automatic Segmentation",
    "Zero-shot Semantic Segmentation",
    "Open-vocabulary Detection",
    "Open-vocabulary Instance Segmentation",
)


SERVICE_NAMES = {"merged": "samclip", "composed": "sam-clip-composed"}


def _software_version(engine: str = "torch") -> str:
    try:
        own = version("visioncompare")
    except PackageNotFoundError:
        own = "0+unknown"
    return own if engine == "torch" else f"{own} (onnxruntime {ort_version()})"


def backend_factory_for(settings: SamClipSettings) -> BackendFactory:
    """The builder of the backend `settings.backend` names."""
    if settings.backend == "merged":
        from visioncompare.samclip.merged import build_merged_backend

        return build_merged_backend
    from visioncompare.samclip.composed import build_composed

    return build_composed


def resolve_backend_weights(settings: SamClipSettings) -> None:
    """Resolve and check the weights of the backend `settings.backend` names, and only those
    (the merged model needs no SAM checkpoint); a ConfigurationError says what to fetch."""
    if settings.backend == "merged":
        from visioncompare.samclip.merged import resolve_merged

        resolve_merged(settings)
    else:
        from visioncompare.samclip.composed import resolve_weights

        resolve_weights(settings)


class SamClipModel(VisionModel):
    """Zero-shot classification, prompted/automatic/semantic segmentation and
    open-vocabulary detection and instance segmentation: the lifecycle, the card and the
    batching (one SAM embedding or CLIP image vector per image); the task algorithms are
    `algorithms.TaskAlgorithms`."""

    def __init__(
        self, settings: SamClipSettings | None = None, *, backend_factory: BackendFactory | None = None
    ) -> None:
        self.settings = settings or SamClipSettings()
        # What logs, metrics, health and OIP call it: the deployment's service name per backend.
        self.name = SERVICE_NAMES[self.settings.backend]
        if backend_factory is None:
            backend_factory = backend_factory_for(self.settings)
        self._factory = backend_factory
        self._backend: SamClipBackend | None = None
        self._algorithms: TaskAlgorithms | None = None
        self.engine: Engine = "torch"  # what runs, once loaded (settings.engine resolved)
        self._capabilities: Capabilities | None = None

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def backend(self) -> SamClipBackend:
        if self._backend is None:
            raise RuntimeError("SamClipModel.load() has not run")
        return self._backend

    @property
    def algorithms(self) -> TaskAlgorithms:
        if self._algorithms is None:
            raise RuntimeError("SamClipModel.load() has not run")
        return self._algorithms

    def load(self) -> None:
        plan = plan_device(self.settings.device, self.settings.precision)
        self.engine = self.settings.resolved_engine(plan.device.type)
        settings = self.settings
        if self.engine != settings.engine:  # auto: the backend is built for the engine that runs
            log.info("%s: engine=auto runs %s on %s (as measured for SAM-CLIP: bench/engines.py)",
                     self.name, self.engine, plan.device.type)  # fmt: skip
            settings = settings.model_copy(update={"engine": self.engine})
        if self.engine == "onnxruntime":
            plan = fp32_plan(plan, settings.precision)
        self._backend = self._factory(settings, plan)
        self._algorithms = TaskAlgorithms(self._backend, self.settings)
        self._capabilities = self._describe(plan)
        log.info("loaded %s on %s (%s)", self.name, plan.device, plan.precision)

    def warmup(self) -> None:
        """One request per task on a synthetic image; then the caches are emptied."""
        h, w = 48, 64
        image = np.zeros((h, w, 3), dtype=np.uint8)
        image[:, :, 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
        image[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 200
        cheap = AutomaticOptions(points_per_side=min(4, self.settings.max_points_per_side))
        labels = ("object",)
        requests = [
            InferenceRequest(Task.ZERO_SHOT_CLASSIFICATION, image, TaskOptions(labels=labels)),
            InferenceRequest(
                Task.PROMPTED_SEGMENTATION,
                image,
                TaskOptions(points=(Point(w / 2, h / 2),), boxes=(Box(8, 8, 40, 40),), multimask_output=True),
            ),
            InferenceRequest(Task.AUTOMATIC_SEGMENTATION, image, TaskOptions(automatic=cheap)),
            InferenceRequest(Task.INSTANCE_SEGMENTATION, image, TaskOptions(labels=labels, automatic=cheap)),
            InferenceRequest(Task.SEMANTIC_SEGMENTATION, image, TaskOptions(labels=labels, automatic=cheap)),
        ]
        for request in requests:
            answer = self.predict([request])[0]
            if isinstance(answer, ServiceError):
                raise RuntimeError(f"warm-up of {request.task.name} failed: {answer.message}")
        self.backend.clear_caches()

    def capabilities(self) -> Capabilities:
        if self._capabilities is None:
            raise RuntimeError("SamClipModel.load() has not run")
        return self._capabilities

    def _describe(self, plan: DevicePlan) -> Capabilities:
        d = self.backend.describe()
        card = ModelCard(
            name=d.card_name,
            organization=d.organization,
            category="open",
            modality="vision-language",
            release_date="2023-10",
            parameter_count=d.parameter_count,
            license=d.license,
            paper_url="https://arxiv.org/abs/2310.15308",
            description=d.description,
            features=FEATURES,
        )
        runtime = RuntimeInfo(
            device=str(plan.device),
            engine=self.engine,
            precision=plan.precision,
            weights=d.weights,
            pretrained=d.pretrained,
            max_batch_size=self.settings.max_batch_size,
            software_version=_software_version(self.engine),
            components=d.components,
            warnings=(*plan.warnings, *d.warnings),
            preset=self.settings.preset or "",
        )
        return Capabilities(card=card, tasks=TASKS, runtime=runtime)

    # --- requests -----------------------------------------------------------------------

    def validate(self, request: InferenceRequest) -> None:
        super().validate(request)
        check_request(request, self.settings)

    def predict(self, requests: Sequence[InferenceRequest]) -> list[Prediction | ServiceError]:
        answers: list[Prediction | ServiceError | None] = [None] * len(requests)
        timers = [StageTimer() for _ in requests]
        runnable: list[int] = []
        for i, request in enumerate(requests):
            try:
                with timers[i].stage("preprocess_ms"):
                    self.validate(request)
                runnable.append(i)
            except ServiceError as exc:
                answers[i] = exc

        embeddings = self._sam_embeddings(requests, [i for i in runnable if requests[i].task in SAM_TASKS], timers)
        image_vectors = self._clip_images(
            requests, [i for i in runnable if requests[i].task == Task.ZERO_SHOT_CLASSIFICATION], timers
        )
        for i in runnable:
            request, timer = requests[i], timers[i]
            try:
                if request.task == Task.ZERO_SHOT_CLASSIFICATION:
                    prediction = self.algorithms.classify(request, image_vectors[i], timer)
                else:
                    prediction = self.algorithms.run(request, embeddings[i], timer)
            except ServiceError as exc:
                answers[i] = exc
                continue
            prediction.timing = timer.timing
            prediction.batch_size = len(requests)
            answers[i] = prediction
            log.debug(
                "request %s %s: %d instances in %.1f ms",
                request.request_id or "-",
                request.task.name,
                len(prediction.instances),
                timer.timing.inference_ms,
            )
        done = [a for a in answers if a is not None]
        if len(done) != len(requests):
            raise RuntimeError("a request in the batch was left unanswered")
        return done

    def _sam_embeddings(
        self, requests: Sequence[InferenceRequest], indices: list[int], timers: list[StageTimer]
    ) -> dict[int, ImageEmbedding]:
        """SAM embeddings for the batch in one call: cached ones are reused, new ones batched."""
        if not indices:
            return {}
        start = time.perf_counter()
        found = self.backend.embed_images(
            [requests[i].image for i in indices], [requests[i].image_digest for i in indices]
        )
        share = (time.perf_counter() - start) * 1000.0
        for i in indices:
            timers[i].timing.inference_ms += share
        return dict(zip(indices, found, strict=True))

    def _clip_images(
        self, requests: Sequence[InferenceRequest], indices: list[int], timers: list[StageTimer]
    ) -> dict[int, np.ndarray]:
        if not indices:
            return {}
        start = time.perf_counter()
        vectors = self.backend.embed_crops([requests[i].image for i in indices])
        share = (time.perf_counter() - start) * 1000.0
        for i in indices:
            timers[i].timing.inference_ms += share
        return {i: vectors[k] for k, i in enumerate(indices)}
