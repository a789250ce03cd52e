"""SAM-CLIP's task algorithms on top of a SamClipBackend: zero-shot classification, prompted
and automatic segmentation, open-vocabulary detection and instance segmentation, semantic
segmentation. `SamClipModel` owns the lifecycle, the card and the batching and hands each
request here with its image's embedding (or CLIP image vector)."""

from __future__ import annotations

import math

import numpy as np

from visioncompare.runtime.masks import encode_mask
from visioncompare.runtime.model import StageTimer
from visioncompare.runtime.types import (
    AutomaticOptions,
    ClassScore,
    InferenceRequest,
    Instance,
    Label,
    LabelMap,
    Prediction,
    Task,
    TaskOptions,
)
from visioncompare.samclip import dense, openvocab
from visioncompare.samclip.backend import AutomaticParams, ImageEmbedding, MaskPrompts, ProposedMask, SamClipBackend
from visioncompare.samclip.settings import SamClipSettings


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def automatic_params(
    settings: SamClipSettings, a: AutomaticOptions, default_points: int, nms: float | None
) -> AutomaticParams:
    """A request's automatic-mask options over the service's settings."""

    def pick(value: float | None, default: float) -> float:
        return default if value is None else value

    s = settings
    return AutomaticParams(
        points_per_side=int(pick(a.points_per_side, default_points)),
        pred_iou_thresh=pick(a.pred_iou_thresh, s.pred_iou_thresh),
        stability_score_thresh=pick(a.stability_score_thresh, s.stability_score_thresh),
        min_mask_region_area=int(pick(a.min_mask_region_area, s.min_mask_region_area)),
        box_nms_thresh=pick(nms, s.box_nms_thresh),
        points_per_batch=s.points_per_batch,
    )


def proposal_params(settings: SamClipSettings, options: AutomaticOptions | None = None) -> AutomaticParams:
    """How SAM proposes the masks that open-vocabulary tasks label: a request's automatic
    options over the service's settings (shapes CLIP training crops the same proposals)."""
    return automatic_params(settings, options or AutomaticOptions(), settings.proposal_points_per_side, None)


class TaskAlgorithms:
    """One method per task; each takes a validated request, what the batch computed for its
    image, and the request's timer."""

    def __init__(self, backend: SamClipBackend, settings: SamClipSettings) -> None:
        self.backend = backend
        self.settings = settings

    def run(self, request: InferenceRequest, embedding: ImageEmbedding, timer: StageTimer) -> Prediction:
        """Any SAM task (all but zero-shot classification) on the image's SAM embedding."""
        if request.task == Task.PROMPTED_SEGMENTATION:
            return self.prompted(request, embedding, timer)
        if request.task == Task.AUTOMATIC_SEGMENTATION:
            return self.automatic(request, embedding, timer)
        if request.task == Task.SEMANTIC_SEGMENTATION:
            return self.semantic(request, embedding, timer)
        return self.open_vocab(request, embedding, timer)

    def _templates(self, options: TaskOptions) -> tuple[str, ...]:
        return options.prompt_templates or self.settings.prompt_templates

    def classify(self, request: InferenceRequest, image_vector: np.ndarray, timer: StageTimer) -> Prediction:
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

    def prompted(self, request: InferenceRequest, embedding: ImageEmbedding, timer: StageTimer) -> Prediction:
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

    def automatic(self, request: InferenceRequest, embedding: ImageEmbedding, timer: StageTimer) -> Prediction:
        o = request.options
        params = automatic_params(self.settings, o.automatic, self.settings.points_per_side, o.nms_iou_threshold)
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
            params = proposal_params(s, o.automatic)
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

    def open_vocab(self, request: InferenceRequest, embedding: ImageEmbedding, timer: StageTimer) -> Prediction:
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

    def semantic(self, request: InferenceRequest, embedding: ImageEmbedding, timer: StageTimer) -> Prediction:
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
