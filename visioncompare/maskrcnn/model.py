"""Mask R-CNN as a VisionModel: detection, instance segmentation and keypoints.

A batch runs as one forward pass per network, in three timed stages that follow
torchvision's GeneralizedRCNN.forward: preprocess (to tensors, resize, normalize,
pad), inference (backbone, RPN, RoI heads) and postprocess. Each request's filters
(score, labels, max results) are applied to the RoI heads' output *before* masks
are pasted at full image size, so a batch pastes only the masks it returns, one at
a time. torchvision's own postprocess and paste_masks_in_image map boxes, masks and
keypoints back to the pixels of the original image.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from typing import Any, cast

import numpy as np
import torch
import torchvision
from torch import Tensor
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.roi_heads import paste_masks_in_image

from visioncompare.maskrcnn.builders import ARCHS, ArchSpec, parameter_count
from visioncompare.maskrcnn.categories import COCO, LabelSet, label_set_from_file
from visioncompare.maskrcnn.heads import use_filtered_heads
from visioncompare.maskrcnn.onnx_engine import export_and_install
from visioncompare.maskrcnn.options import ResolvedOptions, accepted_options, padded_shape, resolve_options
from visioncompare.maskrcnn.settings import MaskRCNNSettings
from visioncompare.maskrcnn.transform import use_any_aspect_transform
from visioncompare.maskrcnn.weights import ResolvedWeights, load_weights, resolve, scheme_of
from visioncompare.runtime.device import DevicePlan, plan_device
from visioncompare.runtime.engines import ExportedFile, OrtRunner, fp32_plan, ort_runner, ort_version
from visioncompare.runtime.errors import ServiceError
from visioncompare.runtime.masks import encode_mask
from visioncompare.runtime.model import StageTimer, VisionModel
from visioncompare.runtime.settings import Engine
from visioncompare.runtime.types import (
    Box,
    Capabilities,
    InferenceRequest,
    Instance,
    Keypoint,
    Label,
    Mask,
    ModelCard,
    ModelComponent,
    Prediction,
    RuntimeInfo,
    Task,
    TaskCapability,
    TaskOptions,
    Vocabulary,
)
from visioncompare.runtime.weights import WeightsSpec

log = logging.getLogger(__name__)

PAPER_URL = "https://arxiv.org/abs/1703.06870"
DETECTOR, KEYPOINTS = "detector", "keypoints"
TASK_NETWORK = {
    Task.OBJECT_DETECTION: DETECTOR,
    Task.INSTANCE_SEGMENTATION: DETECTOR,
    Task.KEYPOINT_DETECTION: KEYPOINTS,
}
RANDOM_WARNING = {DETECTOR: "random weights", KEYPOINTS: "random keypoint weights"}


@dataclass
class Network:
    """One loaded torchvision detector with its label set and provenance."""

    role: str  # DETECTOR or KEYPOINTS
    arch: ArchSpec
    net: GeneralizedRCNN
    labels: LabelSet
    weights: ResolvedWeights
    parameter_count: int
    warnings: tuple[str, ...]


def _software_version(runner: OrtRunner | None = None) -> str:
    try:
        own = version("visioncompare")
    except PackageNotFoundError:
        own = "0+unknown"
    ort = f", onnxruntime {ort_version()} on {runner.providers}" if runner is not None else ""
    return f"visioncompare {own} (torch {torch.__version__}, torchvision {torchvision.__version__}{ort})"


class MaskRCNNModel(VisionModel):
    name = "maskrcnn"

    def __init__(self, settings: MaskRCNNSettings, *, detector_kwargs: Mapping[str, Any] | None = None) -> None:
        """`detector_kwargs` go to torchvision's MaskRCNN/KeypointRCNN (e.g. RPN sizes in tests)."""
        self.settings = settings
        self.detector_kwargs = dict(detector_kwargs or {})
        self.networks: dict[str, Network] = {}
        self.plan: DevicePlan | None = None
        self.engine: Engine = "torch"  # what runs, once loaded (settings.engine resolved)
        self.runner: OrtRunner | None = None  # engine=onnxruntime: how its sessions run
        self.onnx_files: list[ExportedFile] = []  # engine=onnxruntime: the files its sessions run
        self._capabilities: Capabilities | None = None
        self._lock = threading.Lock()  # predict() reconfigures the shared networks per batch

    # --- lifecycle ----------------------------------------------------------------

    def load(self) -> None:
        s = self.settings
        self.plan = plan_device(s.device, s.precision)
        self.engine = s.resolved_engine(self.plan.device.type)
        why = " (engine=auto: measured faster for Mask R-CNN here, bench/engines.py)" if s.engine == "auto" else ""
        log.info("%s: engine %s on %s%s", self.name, self.engine, self.plan.device.type, why)
        if self.engine == "onnxruntime":
            self.plan = fp32_plan(self.plan, s.precision)
            self.runner = ort_runner(str(self.plan.device), s, torch.get_num_threads())
        scheme = scheme_of(s.weights_source)
        if scheme.categories is not None:
            labels = LabelSet(scheme.categories)
        elif s.categories_file is not None:
            labels = label_set_from_file(s.categories_file, s.num_classes)
        else:
            labels = COCO
        arch = ARCHS[scheme.arch or s.variant]
        networks = {DETECTOR: self._load_network(DETECTOR, arch, s.weights_source, labels)}
        if s.keypoints_enabled:
            kp_scheme = scheme_of(s.keypoint_weights_source)
            networks[KEYPOINTS] = self._load_network(
                KEYPOINTS,
                ARCHS[kp_scheme.keypoint_arch],
                s.keypoint_weights_source,
                LabelSet(kp_scheme.keypoint_categories),
            )
        self.networks = networks
        self._capabilities = self._make_capabilities()
        for w in self._capabilities.runtime.warnings:
            log.warning("%s: %s", self.name, w)

    def _load_network(self, role: str, arch: ArchSpec, source: WeightsSpec, labels: LabelSet) -> Network:
        assert self.plan is not None
        s = self.settings
        weights = resolve(source, arch, s.cache_dir)  # fails on a missing file before building
        kwargs = {
            "min_size": s.min_size,
            "max_size": s.max_size,
            "box_score_thresh": s.score_threshold,
            "box_nms_thresh": s.nms_iou_threshold,
            "box_detections_per_img": s.max_detections,
            **self.detector_kwargs,
        }
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)  # "random" weights are the same in every process
            net = arch.build(num_classes=labels.num_classes, **kwargs)
        heads = use_filtered_heads(net)
        use_any_aspect_transform(net)
        heads.class_agnostic_nms = s.class_agnostic_nms
        load_weights(net, weights, f"{arch.name} with num_classes={labels.num_classes}")
        weights = replace(weights, state_dict=None)  # the loaded copy lives in the network now
        net.eval().requires_grad_(False)
        count = parameter_count(net)
        engine = "torch"
        if self.runner is not None:
            installed = export_and_install(
                net,
                arch_name=arch.name,
                source=str(weights.source),
                weights_path=weights.path,
                cache_dir=s.cache_dir,
                runner=self.runner,
            )
            self.onnx_files.extend(installed.files)
            engine = f"onnxruntime ({self.runner.providers})"
        net.to(self.plan.device)
        note = scheme_of(source).note
        warnings = (
            self.plan.warnings
            + tuple(self.runner.warnings if self.runner is not None else ())
            + (() if weights.pretrained else (RANDOM_WARNING[role],))
            + ((note,) if note else ())
        )
        log.info(
            "loaded %s (%s weights=%s, %d parameters) on %s, %s, engine %s",
            arch.name, role, weights.source, count, self.plan.device, self.plan.precision, engine,
        )  # fmt: skip
        return Network(role, arch, net, labels, weights, count, warnings)

    def warmup(self) -> None:
        """One forward pass per network at the default input size, masks included."""
        s = self.settings
        h, w = s.min_size, min(s.max_size, math.ceil(s.min_size * 4 / 3))
        image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
        # A zero score floor sends detections through the mask and keypoint heads too.
        options = TaskOptions(score_threshold=0.0, max_results=1)
        requests = [InferenceRequest(task, image, options, request_id="warmup") for task in sorted(self.served_tasks())]
        for answer in self.predict(requests):
            if isinstance(answer, BaseException):
                raise answer

    def close(self) -> None:
        self.networks = {}
        if self.plan is not None and self.plan.device.type == "cuda":
            torch.cuda.empty_cache()

    # --- contract -----------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        if self._capabilities is None:
            raise RuntimeError("capabilities() before load()")
        return self._capabilities

    def _make_capabilities(self) -> Capabilities:
        assert self.plan is not None
        detector = self.networks[DETECTOR]
        nets = list(self.networks.values())
        tasks = [
            TaskCapability(task, Vocabulary.FIXED, detector.labels.vocabulary, accepted_options=accepted_options(task))
            for task in (Task.OBJECT_DETECTION, Task.INSTANCE_SEGMENTATION)
        ]
        features = ["Object Detection", "Instance Segmentation"]
        if KEYPOINTS in self.networks:
            tasks.append(
                TaskCapability(
                    Task.KEYPOINT_DETECTION,
                    Vocabulary.FIXED,
                    self.networks[KEYPOINTS].labels.vocabulary,
                    accepted_options=accepted_options(Task.KEYPOINT_DETECTION),
                )
            )
            features.append("Keypoint Detection")
        described = ", ".join(f"{n.arch.name} ({n.weights.source})" for n in nets)
        card = ModelCard(
            name="Mask R-CNN",
            organization="Meta",
            category="open",
            modality="vision",
            release_date="2017-10",
            parameter_count=sum(n.parameter_count for n in nets),
            license="MIT",
            paper_url=PAPER_URL,
            description=f"Mask R-CNN {detector.arch.title}, torchvision's implementation: {described}; "
            + ("class-agnostic NMS" if self.settings.class_agnostic_nms else "per-class NMS"),
            features=tuple(features),
        )
        runtime = RuntimeInfo(
            device=str(self.plan.device),
            engine=self.engine,
            precision=self.plan.precision,
            weights=str(detector.weights.source),
            pretrained=all(n.weights.pretrained for n in nets),
            max_batch_size=self.settings.max_batch_size,
            software_version=_software_version(self.runner),
            components=tuple(
                ModelComponent(n.arch.name, str(n.weights.source), n.weights.pretrained, n.parameter_count)
                for n in nets
            )
            if len(nets) > 1
            else (),
            warnings=tuple(dict.fromkeys(w for n in nets for w in n.warnings)),
            preset=self.settings.preset or "",
        )
        return Capabilities(card=card, tasks=tuple(tasks), runtime=runtime)

    def _options(self, request: InferenceRequest) -> ResolvedOptions:
        super().validate(request)  # UNIMPLEMENTED for tasks not served; options the task does not take
        labels = self.networks[TASK_NETWORK[request.task]].labels
        return resolve_options(request, self.settings, labels)

    def validate(self, request: InferenceRequest) -> None:
        self._options(request)

    def batch_key(self, request: InferenceRequest) -> Hashable:
        """Detection and segmentation share batches; resize bounds and NMS are per batch.

        Unless `batch_mixed_sizes`, only images with the same padded input shape share
        a batch: zero padding to a larger shape shifts the features near the border,
        so results would depend on what else is in the batch.
        """
        s, o = self.settings, request.options
        min_size, max_size = o.min_size or s.min_size, o.max_size or s.max_size
        key: tuple[Hashable, ...] = (
            TASK_NETWORK.get(request.task, request.task),
            min_size,
            max_size,
            o.nms_iou_threshold or s.nms_iou_threshold,
        )
        if not s.batch_mixed_sizes:
            key += (padded_shape(request.height, request.width, min_size, max_size),)
        return key

    # --- inference ----------------------------------------------------------------

    def predict(self, requests: Sequence[InferenceRequest]) -> list[Prediction | ServiceError]:
        answers: list[Prediction | ServiceError | None] = [None] * len(requests)
        groups: dict[tuple[str, int, int, float], list[tuple[int, ResolvedOptions]]] = {}
        for i, request in enumerate(requests):
            try:
                options = self._options(request)
            except ServiceError as exc:
                answers[i] = exc
                continue
            key = (
                TASK_NETWORK[request.task],
                options.min_size,
                options.max_size,
                options.nms_iou_threshold,
            )
            groups.setdefault(key, []).append((i, options))
        for (role, *_), members in groups.items():
            batch = [requests[i] for i, _ in members]
            predictions = self._run(self.networks[role], batch, [o for _, o in members])
            for (i, _), prediction in zip(members, predictions, strict=True):
                answers[i] = prediction
        return cast(list[Prediction | ServiceError], answers)  # every slot is answered

    def _run(
        self, network: Network, requests: list[InferenceRequest], options: list[ResolvedOptions]
    ) -> list[Prediction]:
        assert self.plan is not None
        net, device = network.net, self.plan.device
        timer = StageTimer()
        masks = any(r.task == Task.INSTANCE_SEGMENTATION for r in requests)
        with self._lock, torch.inference_mode(), _configured(net, options, network.labels, masks):
            with timer.stage("preprocess_ms"):
                images = [_to_tensor(r.image, device) for r in requests]
                original_sizes = [(r.height, r.width) for r in requests]
                image_list, _ = net.transform(images)
            with timer.stage("inference_ms"):
                with self.plan.autocast()():
                    features = net.backbone(image_list.tensors)
                    if isinstance(features, Tensor):
                        features = OrderedDict([("0", features)])
                    proposals, _ = net.rpn(image_list, features)
                    detections, _ = net.roi_heads(features, proposals, image_list.image_sizes)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
            with timer.stage("postprocess_ms"):
                kept = [_select(d, r, o, network.labels) for d, r, o in zip(detections, requests, options, strict=True)]
                # Boxes and keypoints back to image pixels; masks are pasted one at a time below.
                soft_masks = [d.pop("masks", None) for d in kept]
                kept = net.transform.postprocess(kept, image_list.image_sizes, original_sizes)
                instances = [
                    _instances(d, m, r, o, network)
                    for d, m, r, o in zip(kept, soft_masks, requests, options, strict=True)
                ]
        log.debug("%s: batch of %d in %s", self.name, len(requests), timer.timing)
        return [
            Prediction(
                instances=found,
                timing=replace(timer.timing),
                warnings=list(network.warnings),
                batch_size=len(requests),
            )
            for found in instances
        ]


@contextlib.contextmanager
def _configured(net: GeneralizedRCNN, options: list[ResolvedOptions], labels: LabelSet, masks: bool) -> Iterator[None]:
    """Set the batch's resize bounds, NMS, score floor and class filters; skip unused masks.

    The score floor is the lowest threshold in the batch. Detections above a
    request's own threshold are the same either way: greedy NMS never lets a
    lower-scoring box suppress a higher one, and the top-k cut keeps an order.
    """
    transform, heads, first = net.transform, net.roi_heads, options[0]
    saved = (transform.min_size, transform.max_size, heads.nms_thresh, heads.score_thresh)
    mask_pool = getattr(heads, "mask_roi_pool", None)
    transform.min_size = (first.min_size,)
    transform.max_size = first.max_size
    heads.nms_thresh = first.nms_iou_threshold
    # roi_heads keeps float32 scores strictly above its threshold; requests keep >= theirs.
    floor = np.float32(min(o.score_threshold for o in options))
    heads.score_thresh = float(np.nextafter(floor, np.float32(-np.inf)))
    heads.label_filters = [
        torch.tensor(sorted(labels.valid_ids if o.label_ids is None else o.label_ids)) for o in options
    ]
    if not masks and mask_pool is not None:
        heads.mask_roi_pool = None  # RoIHeads.has_mask() is then False
    try:
        yield
    finally:
        transform.min_size, transform.max_size, heads.nms_thresh, heads.score_thresh = saved
        heads.label_filters = None
        if mask_pool is not None:
            heads.mask_roi_pool = mask_pool


def _to_tensor(image: np.ndarray, device: torch.device) -> Tensor:
    """H x W x 3 uint8 -> 3 x H x W float in [0, 1], converted on the device."""
    array = image if image.flags.writeable else image.copy()
    return torch.from_numpy(array).to(device).permute(2, 0, 1).float().div_(255.0)


def _select(
    detections: dict[str, Tensor], request: InferenceRequest, o: ResolvedOptions, labels: LabelSet
) -> dict[str, Tensor]:
    """Apply one request's filters to the RoI heads' output (sorted by score, best first).

    Masks are dropped for detection requests that shared a batch with segmentation ones,
    so that postprocess pastes only the masks that are returned.
    """
    keep = detections["scores"] >= o.score_threshold
    ids = labels.valid_ids if o.label_ids is None else o.label_ids
    allowed = torch.tensor(sorted(ids), device=keep.device)
    keep &= torch.isin(detections["labels"], allowed)
    index = torch.nonzero(keep).flatten()[: o.max_results]
    # Keep the full-precision path in postprocess even if autocast produced halves.
    wanted = {k: v for k, v in detections.items() if k != "masks" or request.task == Task.INSTANCE_SEGMENTATION}
    return {k: (v[index].float() if v.is_floating_point() else v[index]) for k, v in wanted.items()}


def _instances(
    d: dict[str, Tensor], soft_masks: Tensor | None, request: InferenceRequest, o: ResolvedOptions, network: Network
) -> list[Instance]:
    labels = network.labels
    boxes = d["boxes"].cpu().tolist()
    scores = d["scores"].cpu().tolist()
    label_ids = d["labels"].cpu().tolist()
    keypoints = scores_kp = None
    if "keypoints" in d:
        keypoints = d["keypoints"].cpu().tolist()
        # torchvision's keypoint scores are heatmap logits (any real number): the contract's
        # Keypoint.score is their sigmoid, in [0, 1] and in the same order.
        scores_kp = torch.sigmoid(d["keypoints_scores"].float()).cpu().tolist()
    found = []
    for i, (box, score, label) in enumerate(zip(boxes, scores, label_ids, strict=True)):
        instance = Instance(box=Box(*box), score=score, label=Label(label, labels.names[label], score))
        if soft_masks is not None:
            instance.mask = _mask(soft_masks[i : i + 1], d["boxes"][i : i + 1], request, o.mask_threshold)
        if keypoints is not None and scores_kp is not None:
            instance.keypoints = [
                Keypoint(name, x, y, s)
                for name, (x, y, _), s in zip(network.arch.keypoint_names, keypoints[i], scores_kp[i], strict=True)
            ]
        found.append(instance)
    return found


def _mask(soft: Tensor, box: Tensor, request: InferenceRequest, threshold: float) -> Mask:
    """Paste one 28 x 28 mask into the image as torchvision's postprocess does, threshold, encode.

    One at a time: all masks at once would hold N full-size float images.
    """
    pasted = paste_masks_in_image(soft, box, (request.height, request.width))
    return encode_mask((pasted[0, 0] > threshold).cpu().numpy())
