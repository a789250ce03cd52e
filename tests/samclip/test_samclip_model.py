"""SAM-CLIP in process: every task, the caches, coordinates and concurrency.

Tiny configurations of the real architectures (segment-anything `Sam` with a
one-block ViT, open_clip `CLIP` with one-layer towers) run the real service code
on CPU with random weights. A fake backend with known masks and embeddings checks
the task logic where random weights could not.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch

from visioncompare.runtime.errors import InvalidArgument
from visioncompare.runtime.masks import decode_rle, encode_mask
from visioncompare.runtime.types import (
    AutomaticOptions,
    Box,
    InferenceRequest,
    ModelComponent,
    Point,
    Prediction,
    PromptKind,
    Task,
    TaskOptions,
    Vocabulary,
)
from visioncompare.samclip import openvocab
from visioncompare.samclip.backend import (
    AutomaticParams,
    BackendDescription,
    ImageEmbedding,
    MaskPrediction,
    MaskPrompts,
    ProposedMask,
)
from visioncompare.samclip.composed import ComposedSamOpenClip
from visioncompare.samclip.model import SamClipModel
from visioncompare.samclip.settings import SamClipSettings

AUTO = AutomaticOptions(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)


def tiny_settings(**overrides: Any) -> SamClipSettings:
    base: dict[str, Any] = dict(
        backend="composed",
        sam_variant="tiny",
        clip_model="tiny",
        sam_weights="random",
        clip_pretrained="random",
        device="cpu",
        prompt_templates=("a photo of a {}.", "a {}."),
        engine="torch",  # these tests count calls into the torch networks; test_samclip_onnx.py: ONNX Runtime
    )
    return SamClipSettings(**{**base, **overrides})


def loaded(**overrides: Any) -> SamClipModel:
    model = SamClipModel(tiny_settings(**overrides))
    model.load()
    model.warmup()
    return model


def noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def run(model: SamClipModel, task: Task, image: np.ndarray, **options: Any) -> Prediction:
    [answer] = model.predict([InferenceRequest(task, image, TaskOptions(**options))])
    assert isinstance(answer, Prediction), answer
    return answer


class Calls:
    """Counts forward calls of a module and the batch size of each."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.batches: list[int] = []
        self._handle = module.register_forward_hook(lambda _m, args, _out: self.batches.append(len(args[0])))

    @property
    def count(self) -> int:
        return len(self.batches)

    def close(self) -> None:
        self._handle.remove()


@pytest.fixture(scope="module")
def model() -> SamClipModel:
    return loaded()


def composed(model: SamClipModel) -> ComposedSamOpenClip:
    backend = model.backend
    assert isinstance(backend, ComposedSamOpenClip)
    return backend


@pytest.fixture
def counters(model: SamClipModel) -> Iterator[dict[str, Calls]]:
    backend = composed(model)
    backend.clear_caches()
    calls = {
        "sam_image": Calls(backend.sam.image_encoder),
        "clip_image": Calls(backend.clip.visual),
        "clip_text": Calls(backend.clip.transformer),
    }
    yield calls
    for c in calls.values():
        c.close()


# --- capabilities ----------------------------------------------------------------------


def test_capabilities_say_it_is_a_composition_with_random_parts(model: SamClipModel) -> None:
    caps = model.capabilities()
    assert "composed" in caps.card.name and "OpenCLIP" in caps.card.name
    assert caps.card.paper_url == "https://arxiv.org/abs/2310.15308" and caps.card.release_date == "2023-10"
    sam, clip = caps.runtime.components
    backend = composed(model)
    assert sam.parameter_count == sum(p.numel() for p in backend.sam.parameters())
    assert clip.parameter_count == sum(p.numel() for p in backend.clip.parameters())
    assert caps.card.parameter_count == sam.parameter_count + clip.parameter_count
    assert (sam.weights, sam.pretrained, clip.weights, clip.pretrained) == ("random", False, "random", False)
    assert caps.runtime.pretrained is False
    assert any("random weights" in w and "segment-anything" in w for w in caps.runtime.warnings)
    assert any("random weights" in w and "open_clip" in w for w in caps.runtime.warnings)
    tasks = {t.task: t for t in caps.tasks}
    assert tasks[Task.ZERO_SHOT_CLASSIFICATION].vocabulary == Vocabulary.OPEN
    assert tasks[Task.PROMPTED_SEGMENTATION].prompt_kinds == (PromptKind.POINT, PromptKind.BOX)
    assert tasks[Task.AUTOMATIC_SEGMENTATION].vocabulary == Vocabulary.NONE
    for task in (Task.OBJECT_DETECTION, Task.INSTANCE_SEGMENTATION, Task.SEMANTIC_SEGMENTATION):
        assert tasks[task].vocabulary == Vocabulary.OPEN and tasks[task].prompt_kinds == (PromptKind.TEXT,)
    assert Task.KEYPOINT_DETECTION not in tasks


# --- every task on the real (tiny) networks ----------------------------------------------------


def test_classification_returns_top_k_softmax_and_cosine(model: SamClipModel) -> None:
    labels = ("cat", "dog", "car", "tree")
    result = run(model, Task.ZERO_SHOT_CLASSIFICATION, noise(40, 56, 1), labels=labels, max_results=3)
    assert len(result.scores) == 3
    probs = [s.label.score for s in result.scores]
    assert probs == sorted(probs, reverse=True)
    full = run(model, Task.ZERO_SHOT_CLASSIFICATION, noise(40, 56, 1), labels=labels, max_results=10)
    assert len(full.scores) == 4 and math.isclose(sum(s.label.score for s in full.scores), 1.0, rel_tol=1e-5)
    for s in full.scores:
        assert labels[s.label.id] == s.label.name and -1.0 <= s.similarity <= 1.0
    # softmax of logit_scale * cosine, as CLIP does
    sims = np.array([s.similarity for s in full.scores])
    expected = np.exp(model.backend.logit_scale * sims)
    np.testing.assert_allclose([s.label.score for s in full.scores], expected / expected.sum(), rtol=1e-4)


def test_caller_templates_change_the_text_embeddings(model: SamClipModel) -> None:
    image = noise(32, 32, 2)
    default = run(model, Task.ZERO_SHOT_CLASSIFICATION, image, labels=("a", "b"))
    custom = run(model, Task.ZERO_SHOT_CLASSIFICATION, image, labels=("a", "b"), prompt_templates=("{} art",))
    assert [s.similarity for s in default.scores] != [s.similarity for s in custom.scores]


def test_prompted_segmentation_multimask_with_iou(model: SamClipModel) -> None:
    image = noise(48, 72, 3)
    result = run(
        model,
        Task.PROMPTED_SEGMENTATION,
        image,
        points=(Point(10, 12), Point(30, 20, positive=False)),
        boxes=(Box(4, 4, 40, 40), Box(20, 10, 70, 46)),
        multimask_output=True,
    )
    assert len(result.instances) == 2 * 3  # each box is a query; three masks each
    for query in (result.instances[:3], result.instances[3:]):
        ious = [i.predicted_iou for i in query]
        assert all(i is not None for i in ious) and ious == sorted(ious, reverse=True)
    for instance in result.instances:
        assert instance.mask is not None and (instance.mask.rle.height, instance.mask.rle.width) == (48, 72)
        assert instance.label is None and 0.0 <= instance.score <= 1.0
    single = run(model, Task.PROMPTED_SEGMENTATION, image, points=(Point(10, 12),))
    assert len(single.instances) == 1


def test_automatic_segmentation(model: SamClipModel) -> None:
    image = noise(48, 64, 4)
    result = run(model, Task.AUTOMATIC_SEGMENTATION, image, automatic=AUTO, nms_iou_threshold=1.0, max_results=7)
    assert 1 <= len(result.instances) <= 7
    for instance in result.instances:
        assert instance.mask is not None and instance.mask.area > 0 and instance.label is None
        assert instance.stability_score is not None and instance.predicted_iou is not None
        mask = decode_rle(instance.mask.rle)
        assert mask.shape == (48, 64) and mask.sum() == instance.mask.area
    cleaned = run(
        model,
        Task.AUTOMATIC_SEGMENTATION,
        image,
        automatic=AutomaticOptions(
            points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, min_mask_region_area=50
        ),
    )
    assert cleaned.instances


@pytest.mark.parametrize("task", [Task.OBJECT_DETECTION, Task.INSTANCE_SEGMENTATION, Task.SEMANTIC_SEGMENTATION])
def test_open_vocabulary_tasks_run_on_the_real_networks(model: SamClipModel, task: Task) -> None:
    image = noise(40, 60, 5)
    result = run(model, task, image, labels=("cat", "dog"), automatic=AUTO, score_threshold=0.0)
    if task == Task.SEMANTIC_SEGMENTATION:
        assert result.label_map is not None
        assert result.label_map.class_names == ["background", "cat", "dog"]
        assert result.label_map.indices.shape == (40, 60) and result.label_map.indices.dtype == np.uint16
        assert result.label_map.indices.max() <= 2
    else:
        for instance in result.instances:
            assert instance.label is not None and instance.label.name in ("cat", "dog")
            assert (instance.mask is not None) == (task == Task.INSTANCE_SEGMENTATION)


# --- caches and batching, by counting encoder calls ---------------------------------------------


def test_second_prompt_on_the_same_image_skips_the_image_encoder(
    model: SamClipModel, counters: dict[str, Calls]
) -> None:
    image = noise(40, 50, 6)
    run(model, Task.PROMPTED_SEGMENTATION, image, points=(Point(5, 5),))
    assert counters["sam_image"].count == 1
    run(model, Task.PROMPTED_SEGMENTATION, image.copy(), boxes=(Box(1, 1, 30, 30),))  # equal pixels
    run(model, Task.AUTOMATIC_SEGMENTATION, image, automatic=AUTO)
    assert counters["sam_image"].count == 1
    run(model, Task.PROMPTED_SEGMENTATION, noise(40, 50, 7), points=(Point(5, 5),))
    assert counters["sam_image"].count == 2


def test_image_embedding_cache_is_bounded_by_bytes() -> None:
    one = 32 * 4 * 4 * 4  # tiny SAM: 1 x 32 x 4 x 4 float32
    small = loaded(embedding_cache_bytes=2 * one)
    backend = composed(small)
    backend.clear_caches()
    calls = Calls(backend.sam.image_encoder)
    images = [noise(32, 32, 10 + i) for i in range(3)]
    for image in images:
        run(small, Task.PROMPTED_SEGMENTATION, image, points=(Point(3, 3),))
    assert calls.count == 3 and backend.sam_part.cache.bytes <= 2 * one and len(backend.sam_part.cache) == 2
    run(small, Task.PROMPTED_SEGMENTATION, images[2], points=(Point(3, 3),))  # newest: cached
    assert calls.count == 3
    run(small, Task.PROMPTED_SEGMENTATION, images[0], points=(Point(3, 3),))  # oldest: evicted
    assert calls.count == 4


def test_text_embeddings_are_cached_per_label_and_template(model: SamClipModel, counters: dict[str, Calls]) -> None:
    image = noise(32, 32, 8)
    templates = ("a photo of a {}.", "a {}.", "{} art")
    run(model, Task.ZERO_SHOT_CLASSIFICATION, image, labels=("cat", "dog"), prompt_templates=templates)
    assert sum(counters["clip_text"].batches) == 6
    run(model, Task.ZERO_SHOT_CLASSIFICATION, image, labels=("dog", "cat"), prompt_templates=templates)
    assert sum(counters["clip_text"].batches) == 6  # all cached
    run(model, Task.ZERO_SHOT_CLASSIFICATION, image, labels=("cat", "bird"), prompt_templates=templates)
    assert counters["clip_text"].batches[-1] == 3 and sum(counters["clip_text"].batches) == 9


def test_mask_crops_are_scored_in_batches() -> None:
    batched = loaded(crop_batch_size=4, box_nms_thresh=1.0)
    backend = composed(batched)
    image = noise(48, 48, 9)
    proposals = run(batched, Task.AUTOMATIC_SEGMENTATION, image, automatic=AUTO, max_results=1000)
    n = len(proposals.instances)
    assert n > 8
    calls = Calls(backend.clip.visual)
    run(batched, Task.INSTANCE_SEGMENTATION, image, labels=("cat",), automatic=AUTO, score_threshold=0.0)
    assert sum(calls.batches) == n
    assert calls.count == math.ceil(n / 4) and all(b == 4 for b in calls.batches[:-1])


def test_a_batch_encodes_its_new_images_together_and_answers_in_order(
    model: SamClipModel, counters: dict[str, Calls]
) -> None:
    a, b = noise(32, 48, 20), noise(40, 40, 21)
    requests = [
        InferenceRequest(Task.PROMPTED_SEGMENTATION, a, TaskOptions(points=(Point(4, 4),))),
        InferenceRequest(Task.PROMPTED_SEGMENTATION, b, TaskOptions(points=(Point(4, 4),))),
        InferenceRequest(Task.PROMPTED_SEGMENTATION, a, TaskOptions(points=(Point(100, 4),))),  # outside
        InferenceRequest(Task.PROMPTED_SEGMENTATION, a, TaskOptions(boxes=(Box(0, 0, 20, 20),))),
    ]
    answers = model.predict(requests)
    assert counters["sam_image"].batches == [2]
    assert isinstance(answers[2], InvalidArgument)
    sizes = [
        (p.instances[0].mask.rle.height, p.instances[0].mask.rle.width)
        for p in (answers[0], answers[1], answers[3])
        if isinstance(p, Prediction) and p.instances[0].mask
    ]
    assert sizes == [(32, 48), (40, 40), (32, 48)]
    assert all(p.batch_size == 4 for p in answers if isinstance(p, Prediction))


# --- coordinates: prompts in, masks out, on a resized non-square image ------------------------------


class BoxPainter(torch.nn.Module):
    """Stands in for SAM's mask decoder: paints each query's prompt into its low-res mask.

    The low-res mask covers the padded input frame at 1/4 scale, as SAM's does; a
    box paints its area, a point the cell it falls in. So the masks that come back
    show where the service put the prompts, through SAM's own postprocessing.
    """

    def __init__(self, prompt_encoder: torch.nn.Module, img_size: int) -> None:
        super().__init__()
        self.low = img_size // 4
        self.seen: dict[str, Any] = {}
        prompt_encoder.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, _m: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        self.seen = dict(kwargs)

    def forward(self, *, sparse_prompt_embeddings: torch.Tensor, multimask_output: bool, **_: Any) -> Any:
        queries = sparse_prompt_embeddings.shape[0]
        logits = torch.full((queries, 1, self.low, self.low), -20.0)
        boxes, points = self.seen.get("boxes"), self.seen.get("points")
        for q in range(queries):
            if boxes is not None:
                x1, y1, x2, y2 = (boxes[q] / 4).tolist()
                logits[q, 0, round(y1) : round(y2), round(x1) : round(x2)] = 20.0
            elif points is not None:
                x, y = (points[0][q, 0] / 4).tolist()
                logits[q, 0, int(y), int(x)] = 20.0
        channels = 3 if multimask_output else 1
        return logits.repeat(1, channels, 1, 1), torch.full((queries, channels), 0.9)


@pytest.fixture
def painter() -> tuple[SamClipModel, BoxPainter]:
    model = loaded()
    sam = composed(model).sam
    painter = BoxPainter(sam.prompt_encoder, sam.image_encoder.img_size)
    sam.mask_decoder = painter
    return model, painter


def test_boxes_round_trip_through_the_resize(painter: tuple[SamClipModel, BoxPainter]) -> None:
    model, paint = painter
    image = noise(80, 128, 11)  # tiny SAM input is 64: this image becomes 64 x 40 (scale 1/2)
    boxes = (Box(16, 8, 96, 56), Box(64, 40, 128, 80))
    result = run(model, Task.PROMPTED_SEGMENTATION, image, boxes=boxes)
    np.testing.assert_allclose(paint.seen["boxes"].numpy(), [[8, 4, 48, 28], [32, 20, 64, 40]])
    assert len(result.instances) == 2
    for box, instance in zip(boxes, result.instances, strict=True):
        assert instance.mask is not None and (instance.mask.rle.height, instance.mask.rle.width) == (80, 128)
        got = instance.mask.bbox.as_list()
        np.testing.assert_allclose(got, box.as_list(), atol=2.0)
        assert instance.box == instance.mask.bbox


def test_points_round_trip_through_the_resize(painter: tuple[SamClipModel, BoxPainter]) -> None:
    model, paint = painter
    image = noise(80, 128, 12)
    point = Point(44.0, 28.0)
    result = run(model, Task.PROMPTED_SEGMENTATION, image, points=(point,))
    coords = paint.seen["points"][0]
    np.testing.assert_allclose(coords[0, 0].numpy(), [22.0, 14.0])
    [instance] = result.instances
    box = instance.mask.bbox if instance.mask else None
    assert box is not None and box.x1 <= point.x <= box.x2 and box.y1 <= point.y <= box.y2
    assert box.x2 - box.x1 <= 10 and box.y2 - box.y1 <= 10  # one low-res cell: 8 px here


def test_odd_scale_boxes_round_trip(painter: tuple[SamClipModel, BoxPainter]) -> None:
    model, _ = painter
    image = noise(50, 97, 13)  # scale 64/97: nothing divides evenly
    box = Box(20, 10, 80, 45)
    [instance] = run(model, Task.PROMPTED_SEGMENTATION, image, boxes=(box,)).instances
    assert instance.mask is not None and (instance.mask.rle.height, instance.mask.rle.width) == (50, 97)
    np.testing.assert_allclose(instance.mask.bbox.as_list(), box.as_list(), atol=97 / 64 * 4)


# --- concurrency ------------------------------------------------------------------------------------


def test_concurrent_requests_on_different_images_do_not_mix(model: SamClipModel) -> None:
    shapes = [(32, 48), (40, 40), (48, 32), (36, 60)]
    images = [noise(h, w, 30 + i) for i, (h, w) in enumerate(shapes)]

    def ask(i: int) -> list[tuple[bytes, float]]:
        prediction = run(model, Task.PROMPTED_SEGMENTATION, images[i], points=(Point(5 + i, 6),), multimask_output=True)
        return [(inst.mask.rle.counts, inst.predicted_iou) for inst in prediction.instances if inst.mask]

    def ask_auto(i: int) -> list[bytes]:
        prediction = run(model, Task.AUTOMATIC_SEGMENTATION, images[i], automatic=AUTO)
        return [inst.mask.rle.counts for inst in prediction.instances if inst.mask]

    composed(model).clear_caches()
    expected = [ask(i) for i in range(4)]
    expected_auto = [ask_auto(i) for i in range(4)]
    composed(model).clear_caches()
    jobs = [i % 4 for i in range(16)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(ask, jobs))
        got_auto = list(pool.map(ask_auto, jobs))
    for i, answer in zip(jobs, got, strict=True):
        assert [c for c, _ in answer] == [c for c, _ in expected[i]]
        np.testing.assert_allclose([s for _, s in answer], [s for _, s in expected[i]], rtol=1e-4)
    for i, answer in zip(jobs, got_auto, strict=True):
        assert answer == expected_auto[i]


# --- task logic on a fake backend with known masks and embeddings ---------------------------------------


RED, GREEN, GREY = (220, 30, 30), (30, 200, 40), (128, 128, 128)


def colour_scene() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    image = np.zeros((40, 60, 3), np.uint8)
    image[:] = GREY
    masks = {name: np.zeros((40, 60), bool) for name in ("red", "green", "red_part", "grey")}
    masks["red"][5:25, 5:25] = True
    masks["red_part"][5:24, 5:25] = True  # a near-duplicate of red: NMS drops it
    masks["green"][20:38, 30:55] = True
    masks["grey"][30:40, 0:20] = True
    image[masks["red"]] = RED
    image[masks["green"]] = GREEN
    return image, masks


class FakeBackend:
    """Known masks, and embeddings that say a crop's dominant colour."""

    def __init__(self, masks: dict[str, np.ndarray]) -> None:
        self.masks = masks
        self.crop_batches: list[int] = []

    @property
    def logit_scale(self) -> float:
        return 100.0

    def describe(self) -> BackendDescription:
        part = ModelComponent("fake", "none", True, 0)
        return BackendDescription("fake", "tests", "MIT", "fake backend", (part,))

    def embed_images(self, images: Sequence[np.ndarray], keys: Sequence[str]) -> list[ImageEmbedding]:
        return [ImageEmbedding(torch.zeros(1), (im.shape[0], im.shape[1]), (im.shape[0], im.shape[1])) for im in images]

    def predict_masks(self, embedding: ImageEmbedding, prompts: MaskPrompts) -> MaskPrediction:
        raise NotImplementedError

    def generate_masks(
        self, image: np.ndarray, embedding: ImageEmbedding, params: AutomaticParams
    ) -> list[ProposedMask]:
        quality = {"red": 0.95, "red_part": 0.9, "green": 0.92, "grey": 0.91}
        return [ProposedMask(encode_mask(m), quality[k], 0.97) for k, m in self.masks.items()]

    def embed_texts(self, labels: Sequence[str], templates: Sequence[str]) -> np.ndarray:
        axis = {"red thing": 0, "green thing": 1, "background": 2, "blue thing": 3}
        return np.eye(4)[[axis[label] for label in labels]]

    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        self.crop_batches.append(len(crops))
        out = []
        for crop in crops:
            r, g, _ = crop.reshape(-1, 3).astype(float).mean(axis=0)
            out.append(np.eye(4)[0 if r > g + 40 else 1 if g > r + 40 else 2])
        return np.array(out)

    def embed_regions(
        self, image: np.ndarray, embedding: ImageEmbedding, proposals: Sequence[ProposedMask]
    ) -> np.ndarray:
        return self.embed_crops([openvocab.mask_crop(image, p.binary()) for p in proposals])

    text_to_pixel = False

    def clear_caches(self) -> None:
        pass


@pytest.fixture
def fake() -> tuple[SamClipModel, np.ndarray, dict[str, np.ndarray]]:
    image, masks = colour_scene()
    model = SamClipModel(tiny_settings(), backend_factory=lambda _s, _p: FakeBackend(masks))  # type: ignore[arg-type,return-value]
    model.load()
    return model, image, masks


def test_open_vocab_instances_are_labelled_thresholded_and_deduplicated(fake: Any) -> None:
    model, image, masks = fake
    labels = ("green thing", "red thing", "blue thing")
    result = run(model, Task.INSTANCE_SEGMENTATION, image, labels=labels)
    got = [(i.label.name, i.label.id) for i in result.instances if i.label]
    assert got == [("red thing", 1), ("green thing", 0)]  # grey is background; red_part suppressed
    red, green = result.instances
    assert np.array_equal(decode_rle(red.mask.rle), masks["red"]) if red.mask else False
    assert red.box.as_list() == [5, 5, 25, 25] and green.box.as_list() == [30, 20, 55, 38]
    assert red.label is not None and red.label.score > 0.99 and red.predicted_iou == pytest.approx(0.95)
    assert red.score == pytest.approx(red.label.score * 0.97)  # label probability x stability
    boxes = run(model, Task.OBJECT_DETECTION, image, labels=labels)
    assert [i.box for i in boxes.instances] == [red.box, green.box]
    assert all(i.mask is None for i in boxes.instances)
    kept_all = run(model, Task.INSTANCE_SEGMENTATION, image, labels=labels, nms_iou_threshold=1.0)
    assert len(kept_all.instances) == 3
    top = run(model, Task.INSTANCE_SEGMENTATION, image, labels=labels, max_results=1)
    assert [i.label.name for i in top.instances if i.label] == ["red thing"]
    # nothing is blue: every crop is a 50/50 tie between "blue thing" and background, below the threshold
    assert run(model, Task.INSTANCE_SEGMENTATION, image, labels=("blue thing",), score_threshold=0.6).instances == []


def test_semantic_map_paints_labelled_masks_over_background(fake: Any) -> None:
    model, image, masks = fake
    result = run(model, Task.SEMANTIC_SEGMENTATION, image, labels=("red thing", "green thing"))
    label_map = result.label_map
    assert label_map is not None and label_map.class_names == ["background", "red thing", "green thing"]
    expected = np.zeros((40, 60), np.uint16)
    expected[masks["red"]] = 1
    expected[masks["green"]] = 2  # the grey mask is background
    assert np.array_equal(label_map.indices, expected)
    assert result.instances == []


def test_a_merged_backend_could_replace_the_composition(fake: Any) -> None:
    model, image, _ = fake
    caps = model.capabilities()
    assert caps.card.name == "fake" and caps.runtime.components[0].name == "fake"
    assert isinstance(model.backend, FakeBackend)


# --- automatic masks equal segment-anything's own generator -----------------------------------------


def test_request_generator_matches_segment_anything(model: SamClipModel) -> None:
    from segment_anything import SamAutomaticMaskGenerator, SamPredictor

    from visioncompare.samclip.architectures import tiny_sam
    from visioncompare.samclip.automatic import generate

    torch.manual_seed(1)
    sam = tiny_sam()
    with torch.no_grad():  # spread predicted IoUs around 0.5 so that the IoU filter has work to do
        sam.mask_decoder.iou_prediction_head.layers[-1].bias += 0.5
    image = noise(48, 72, 40)
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    embedding = ImageEmbedding(predictor.features, (48, 72), tuple(predictor.input_size))  # type: ignore[arg-type]

    def stock(iou: float) -> list[dict[str, Any]]:
        return SamAutomaticMaskGenerator(
            sam,
            points_per_side=6,
            pred_iou_thresh=iou,
            stability_score_thresh=0.0,
            box_nms_thresh=1.0,
            output_mode="coco_rle",
        ).generate(image)

    ious = sorted(r["predicted_iou"] for r in stock(0.0))
    threshold = (ious[len(ious) // 2 - 1] + ious[len(ious) // 2]) / 2
    expected = stock(threshold)
    params = AutomaticParams(6, threshold, 0.0, 0, 1.0)
    got = generate(sam, image, embedding, params)
    assert 0 < len(expected) < len(ious)
    assert sorted(r["segmentation"]["counts"].encode() for r in expected if r["area"]) == sorted(
        m.mask.rle.counts for m in got
    )
    assert sorted(r["predicted_iou"] for r in expected if r["area"]) == pytest.approx(
        sorted(m.predicted_iou for m in got)
    )


def _proposal(mask: np.ndarray, stability: float) -> ProposedMask:
    return ProposedMask(encode_mask(mask), predicted_iou=0.9, stability_score=stability)


def test_open_vocab_scores_weigh_the_label_by_mask_stability_and_nms_ignores_labels() -> None:
    whole = np.zeros((20, 20), bool)
    whole[2:18, 2:18] = True
    most = np.zeros((20, 20), bool)
    most[2:18, 2:16] = True  # mask IoU with `whole` 0.875
    apart = np.zeros((20, 20), bool)
    apart[0:2, 0:20] = True
    proposals = [_proposal(whole, 0.9), _proposal(most, 0.3), _proposal(apart, 0.8)]
    # One-hot crop vectors against texts for labels "a", "b" and a background prompt.
    crops = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    labelled = openvocab.label_masks(proposals, crops, np.eye(3), n_labels=2, logit_scale=10.0, threshold=0.0)
    assert [m.label for m in labelled] == [0, 1]  # the third is background
    p = float(np.exp(10) / (np.exp(10) + 2))
    assert [m.label_score for m in labelled] == pytest.approx([p, p])
    assert [m.score for m in labelled] == pytest.approx([p * 0.9, p * 0.3])
    # "b" overlaps the better-scoring "a" at mask IoU 0.875: dropped although its label differs.
    assert [m.label for m in openvocab.nms(labelled, 0.5)] == [0]
    assert [m.label for m in openvocab.nms(labelled, 0.9)] == [0, 1]
    # A threshold on the combined score drops the unstable mask first.
    kept = openvocab.label_masks(proposals, crops, np.eye(3), n_labels=2, logit_scale=10.0, threshold=0.5)
    assert [m.label for m in kept] == [0]
