"""SAM-CLIP as a VisionModel: every task on top of a SamClipBackend."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

import numpy as np

from services.runtime.device import DevicePlan, plan_device
from services.runtime.engines import fp32_plan, ort_version
from services.runtime.errors import ServiceError
from services.runtime.masks import encode_mask
from services.runtime.model import StageTimer, VisionModel
from services.runtime.settings import Engine
from services.runtime.types import (
    AutomaticOptions,
    Box,
    Capabilities,
    ClassScore,
    InferenceRequest,
    Instance,
    Label,
    LabelMap,
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
from services.samclip import dense, openvocab
from services.samclip.backend import AutomaticParams, ImageEmbedding, MaskPrompts, ProposedMask, SamClipBackend
from services.samclip.settings import SamClipSettings
from services.samclip.validation import accepted_options, check_request

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


def _software_version(engine: str = "torch") -> str:
    try:
        own = version("visioncompare")
    except PackageNotFoundError:
        own = "0+unknown"
    return own if engine == "torch" else f"{own} (onnxruntime {ort_version()})"


def backend_factory_for(settings: SamClipSettings) -> BackendFactory:
    """The builder of the backend `settings.backend` names."""
    if settings.backend == "merged":
        from services.samclip.merged import build_merged_backend

        return build_merged_backend
    from services.samclip.composed import build_composed

    return build_composed


def resolve_backend_weights(settings: SamClipSettings) -> None:
    """Resolve and check the weights of the backend `settings.backend` names, and only those
    (the merged model needs no SAM checkpoint); a ConfigurationError says what to fetch."""
    if settings.backend == "merged":
        from services.samclip.merged import resolve_merged

        resolve_merged(settings)
    else:
        from services.samclip.composed import resolve_weights

        resolve_weights(settings)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


class SamClipModel(VisionModel):
    """Zero-shot classification, prompted/automatic/semantic segmentation and
    open-vocabulary detection and instance segmentation."""

    name = "samclip"

    def __init__(
        self, settings: SamClipSettings | None = None, *, backend_factory: BackendFactory | None = None
    ) -> None:
        self.settings = settings or SamClipSettings()
        if backend_factory is None:
            backend_factory = backend_factory_for(self.settings)
        self._factory = backend_factory
        self._backend: SamClipBackend | None = None
        self.engine: Engine = "torch"  # what runs, once loaded (settings.engine resolved)
        self._capabilities: Capabilities | None = None

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def backend(self) -> SamClipBackend:
        if self._backend is None:
            raise RuntimeError("SamClipModel.load() has not run")
        return self._backend

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
            backend=self.engine,
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
                    prediction = self._classify(request, image_vectors[i], timer)
                elif request.task == Task.PROMPTED_SEGMENTATION:
                    prediction = self._prompted(request, embeddings[i], timer)
                elif request.task == Task.AUTOMATIC_SEGMENTATION:
                    prediction = self._automatic(request, embeddings[i], timer)
                elif request.task == Task.SEMANTIC_SEGMENTATION:
                    prediction = self._semantic(request, embeddings[i], timer)
                else:
                    prediction = self._open_vocab(request, embeddings[i], timer)
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

    def _templates(self, options: TaskOptions) -> tuple[str, ...]:
        return options.prompt_templates or self.settings.prompt_templates

    def _classify(self, request: InferenceRequest, image_vector: np.ndarray, timer: StageTimer) -> Prediction:
        o = request.options
        labels = list(o.labels)
        with timer.stage("inference_ms"):
            text = self.backend.embed_texts(labels, self._templates(o))
        with timer.stage("postprocess_ms"):
            similarities = text @ image_vector
            probabilities = openvocab.softmax(self.backend.logit_scale * similarities)
            k = min(o.max_results or self.settings.classify_max_results, len(labels))
            threshold = o.score_threshold or 0.0
            scores = [
                ClassScore(Label(int(i), labels[i], float(probabilities[i])), float(similarities[i]))
                for i in np.argsort(-probabilities, kind="stable")[:k]
                if probabilities[i] >= threshold
            ]
        return Prediction(scores=scores)

    def _prompted(self, request: InferenceRequest, embedding: ImageEmbedding, timer: StageTimer) -> Prediction:
        o = request.options
        with timer.stage("preprocess_ms"):
            prompts = MaskPrompts(
                points=np.array([[p.x, p.y] for p in o.points], dtype=np.float64).reshape(-1, 2),
                point_labels=np.array([1 if p.positive else 0 for p in o.points], dtype=np.int64),
                boxes=np.array([b.as_list() for b in o.boxes], dtype=np.float64).reshape(-1, 4),
                multimask_output=o.multimask_output,
                mask_threshold=0.0 if o.mask_threshold is None else _logit(o.mask_threshold),
            )
        with timer.stage("inference_ms"):
            out = self.backend.predict_masks(embedding, prompts)
        with timer.stage("postprocess_ms"):
            instances = []
            for masks, ious in zip(out.masks, out.iou_predictions, strict=True):
                for c in np.argsort(-ious, kind="stable"):
                    mask = encode_mask(masks[c])
                    iou = float(ious[c])
                    instances.append(
                        Instance(box=mask.bbox, score=min(max(iou, 0.0), 1.0), mask=mask, predicted_iou=iou)
                    )
        return Prediction(instances=instances)

    def _params(self, a: AutomaticOptions, default_points: int, nms: float | None) -> AutomaticParams:
        s = self.settings

        def pick(value: float | None, default: float) -> float:
            return default if value is None else value

        return AutomaticParams(
            points_per_side=int(pick(a.points_per_side, default_points)),
            pred_iou_thresh=pick(a.pred_iou_thresh, s.pred_iou_thresh),
            stability_score_thresh=pick(a.stability_score_thresh, s.stability_score_thresh),
            min_mask_region_area=int(pick(a.min_mask_region_area, s.min_mask_region_area)),
            box_nms_thresh=pick(nms, s.box_nms_thresh),
            points_per_batch=s.points_per_batch,
        )

    def proposal_params(self, options: AutomaticOptions | None = None) -> AutomaticParams:
        """How SAM proposes the masks that open-vocabulary tasks label: a request's automatic
        options over the service's settings (shapes CLIP training crops the same proposals)."""
        return self._params(options or AutomaticOptions(), self.settings.proposal_points_per_side, None)

    def _automatic(self, request: InferenceRequest, embedding: ImageEmbedding, timer: StageTimer) -> Prediction:
        o = request.options
        params = self._params(o.automatic, self.settings.points_per_side, o.nms_iou_threshold)
        with timer.stage("inference_ms"):
            proposals = self.backend.generate_masks(request.image, embedding, params)
        with timer.stage("postprocess_ms"):
            threshold = o.score_threshold or 0.0
            limit = o.max_results or self.settings.automatic_max_results
            instances = []
            for p in proposals:
                score = min(max(p.predicted_iou, 0.0), 1.0)
                if score < threshold:
                    continue
                instances.append(
                    Instance(
                        box=p.mask.bbox,
                        score=score,
                        mask=p.mask,
                        predicted_iou=p.predicted_iou,
                        stability_score=p.stability_score,
                    )
                )
                if len(instances) == limit:
                    break
        return Prediction(instances=instances)

    def _labelled_masks(
        self, request: InferenceRequest, embedding: ImageEmbedding, timer: StageTimer
    ) -> list[openvocab.LabelledMask]:
        """Masks (SAM's point grid, or with open_vocab_proposals=text the SAM head prompted per
        class region) labelled against labels + background prompts: the composition's CLIP
        re-encodes each mask's crop, the merged CLIP head pools its tokens inside each mask."""
        o, s = request.options, self.settings
        if s.open_vocab_proposals == "text":
            grid = self._class_grid(request, embedding, timer)
            proposals = [
                ProposedMask(encode_mask(mask), predicted_iou=iou, stability_score=stability)
                for _, mask, iou, stability in self._prompt_regions(grid, embedding, timer)
                if mask.any()
            ]
        else:
            params = self.proposal_params(o.automatic)
            with timer.stage("inference_ms"):
                proposals = [p for p in self.backend.generate_masks(request.image, embedding, params) if p.mask.area]
        if not proposals:
            return []
        with timer.stage("inference_ms"):
            region_vectors = self.backend.embed_regions(request.image, embedding, proposals)
            text = self.backend.embed_texts([*o.labels, *s.background_prompts], self._templates(o))
        with timer.stage("postprocess_ms"):
            threshold = s.open_vocab_score_threshold if o.score_threshold is None else o.score_threshold
            return openvocab.label_masks(
                proposals, region_vectors, text, len(o.labels), self.backend.logit_scale, threshold
            )

    def _open_vocab(self, request: InferenceRequest, embedding: ImageEmbedding, timer: StageTimer) -> Prediction:
        o, s = request.options, self.settings
        labelled = self._labelled_masks(request, embedding, timer)
        with_masks = request.task == Task.INSTANCE_SEGMENTATION
        with timer.stage("postprocess_ms"):
            iou = s.open_vocab_nms_iou if o.nms_iou_threshold is None else o.nms_iou_threshold
            kept = openvocab.nms(labelled, iou)[: o.max_results or s.open_vocab_max_results]
            instances = []
            for m in kept:
                label = Label(m.label, o.labels[m.label], m.label_score)
                instances.append(
                    Instance(
                        box=m.proposal.mask.bbox,
                        score=m.score,
                        label=label,
                        mask=m.proposal.mask if with_masks else None,
                        predicted_iou=m.proposal.predicted_iou,
                        stability_score=m.proposal.stability_score,
                    )
                )
        return Prediction(instances=instances)

    def _semantic(self, request: InferenceRequest, embedding: ImageEmbedding, timer: StageTimer) -> Prediction:
        if self.backend.text_to_pixel:
            indices = self._text_to_pixel(request, embedding, timer)
        else:  # label SAM's proposals, paint them
            labelled = self._labelled_masks(request, embedding, timer)
            with timer.stage("postprocess_ms"):
                indices = openvocab.paint_label_map(labelled, request.height, request.width)
        return Prediction(label_map=LabelMap(class_names=["background", *request.options.labels], indices=indices))

    def _text_to_pixel(self, request: InferenceRequest, embedding: ImageEmbedding, timer: StageTimer) -> np.ndarray:
        """The paper's zero-shot semantic segmentation: every patch token against the labels'
        (and background prompts') text embeddings; then, unless turned off, each connected
        region of a class prompts the SAM head (a point at its most confident patch and the
        region's box) and the SAM masks, not the patches, give the class's pixels."""
        grid = self._class_grid(request, embedding, timer)
        if not self.settings.semantic_refinement:
            with timer.stage("postprocess_ms"):
                return dense.upsampled_argmax(grid.classes, grid.cell, embedding.original_size)
        prompted = self._prompt_regions(grid, embedding, timer)
        with timer.stage("postprocess_ms"):
            return dense.paint_regions([r for r, *_ in prompted], [m for _, m, *_ in prompted], embedding.original_size)

    def _class_grid(self, request: InferenceRequest, embedding: ImageEmbedding, timer: StageTimer) -> dense.ClassGrid:
        """Each patch's probabilities over background and the labels (the CLIP head's tokens
        against the labels' and background prompts' text embeddings)."""
        o, s = request.options, self.settings
        n = len(o.labels)
        with timer.stage("inference_ms"):
            text = self.backend.embed_texts([*o.labels, *s.background_prompts], self._templates(o))
            similarities = self.backend.pixel_similarities(embedding, text)
        with timer.stage("postprocess_ms"):
            probs = openvocab.softmax(self.backend.logit_scale * similarities, axis=0)
            classes = np.concatenate([probs[n:].sum(axis=0, keepdims=True), probs[:n]])  # 0: background
            cell = self.backend.patch_size * embedding.original_size[0] / embedding.input_size[0]
        return dense.ClassGrid(classes, cell)

    def _prompt_regions(
        self, grid: dense.ClassGrid, embedding: ImageEmbedding, timer: StageTimer
    ) -> list[tuple[dense.ClassRegion, np.ndarray, float, float]]:
        """The SAM head's mask for each class region of the grid, prompted by the region's most
        confident patch and its box: (region, H x W mask, predicted IoU, stability score)."""
        with timer.stage("postprocess_ms"):
            regions = dense.class_regions(grid.classes, grid.cell, embedding.original_size)
        out = []
        with timer.stage("inference_ms"):
            for r in regions:
                prompts = MaskPrompts(points=np.array([r.point]), point_labels=np.array([1]), boxes=np.array([r.box]))
                prediction = self.backend.predict_masks(embedding, prompts)
                stability = prediction.stability_scores
                out.append(
                    (
                        r,
                        prediction.masks[0, 0],
                        float(prediction.iou_predictions[0, 0]),
                        float(stability[0, 0]) if stability is not None else 1.0,
                    )
                )
        return out
