"""SAM-CLIP on ONNX Runtime (SAMCLIP_ENGINE=onnxruntime) against torch, on CPU, both backends.

The shipped shapes weights on held-out shapes scenes. Stated tolerances: SAM image
embeddings and CLIP image and text embeddings at cosine >= 0.9999 (each vector); SAM's
prompted masks (the prompt encoder and mask decoder in one ONNX graph) at IoU >= 0.99 with
predicted IoUs within 1e-3, for point, box and mixed prompts, single and multiple masks,
through gRPC; SAM mIoU (point and box prompts),
zero-shot top-1, open-vocabulary box and mask AP and semantic mIoU through the gRPC service
equal to torch's in process to 3 decimals.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from shapes.accuracy import InProcessClient, clip_top1, sam_miou, samclip_open_vocabulary_ap, semantic_miou
from shapes.scenes import CLASSES, EVAL_SEEDS, Scene, generate_scene, interior_point
from visioncompare.runtime.client import VisionModelClient
from visioncompare.runtime.masks import decode_rle
from visioncompare.runtime.types import Box, InferenceRequest, Point, Prediction, Task, TaskOptions
from visioncompare.samclip.model import SamClipModel
from visioncompare.samclip.onnx_engine import OrtImageEncoder, OrtMaskDecoder, OrtPromptEncoder
from visioncompare.samclip.settings import SamClipSettings
from visioncompare.testing.serving import ServerThread

COSINE, MASK_IOU, SCORE = 0.9999, 0.99, 1e-3
SCENES = [generate_scene(s) for s in EVAL_SEEDS[:6]]


@pytest.fixture(scope="module", params=["composed", "merged"])
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, SamClipModel, ServerThread]]:
    backend = request.param
    torch_model = SamClipModel(SamClipSettings(metrics_port=None, backend=backend, engine="torch"))
    torch_model.load()
    settings = SamClipSettings(
        host="127.0.0.1", port=0, metrics_port=None, log_json=False, backend=backend, engine="onnxruntime",
        cache_dir=tmp_path_factory.mktemp(f"onnx-{backend}"),
    )  # fmt: skip
    with ServerThread(SamClipModel(settings), settings) as srv:
        yield backend, torch_model, srv


def _cosines(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    x, y = torch.as_tensor(np.asarray(a)).flatten(1).float(), torch.as_tensor(np.asarray(b)).flatten(1).float()
    return float(torch.nn.functional.cosine_similarity(x, y).min())


def test_the_networks_run_in_onnxruntime_and_say_so(pair: tuple[str, SamClipModel, ServerThread]) -> None:
    backend, _, server = pair
    model = server.model
    assert isinstance(model, SamClipModel)
    assert isinstance(model.backend.sam.image_encoder, OrtImageEncoder) == (backend == "composed")  # type: ignore[attr-defined]
    assert isinstance(model.backend.sam.prompt_encoder, OrtPromptEncoder)  # type: ignore[attr-defined]
    assert isinstance(model.backend.sam.mask_decoder, OrtMaskDecoder)  # type: ignore[attr-defined]
    names = {f.path.name.split("-")[0] for f in model.backend.onnx_files}  # type: ignore[attr-defined]
    expected = (
        {"sam_shapes.image_encoder", "sam_shapes.prompt_decoder", "clip_shapes.text_tower", "clip_shapes.image_tower"}
        if backend == "composed"
        else {
            "merged_shapes.backbone",
            "merged_shapes.sam_neck",
            "merged_shapes.clip_head",
            "merged_shapes.prompt_decoder",
            "clip_shapes.text_tower",
        }  # fmt: skip
    )
    assert names == expected
    with VisionModelClient(server.address, timeout=60) as client:
        caps = client.capabilities()
        result = client.classify(SCENES[0].image, list(CLASSES))
    assert caps.runtime.engine == "onnxruntime" and "onnxruntime" in caps.runtime.software_version
    assert result.engine == "onnxruntime"


def test_embeddings_match_torch(pair: tuple[str, SamClipModel, ServerThread]) -> None:
    _, torch_model, server = pair
    ort_model = server.model
    assert isinstance(ort_model, SamClipModel)
    images = [s.image for s in SCENES[:3]]
    keys = [f"k{i}" for i in range(len(images))]
    expected, got = torch_model.backend.embed_images(images, keys), ort_model.backend.embed_images(images, keys)
    for a, b in zip(expected, got, strict=True):
        assert _cosines(a.features, b.features) >= COSINE
    texts = [f"a photo of a {c}." for c in CLASSES]
    t_text = torch_model.backend.embed_texts(list(CLASSES), ["a photo of a {}."])
    o_text = ort_model.backend.embed_texts(list(CLASSES), ["a photo of a {}."])
    assert len(texts) == len(t_text) and _cosines(t_text, o_text) >= COSINE


def test_prompted_masks_match_torch(pair: tuple[str, SamClipModel, ServerThread]) -> None:
    _, torch_model, server = pair
    ort_model = server.model
    assert isinstance(ort_model, SamClipModel)
    for scene in SCENES[:3]:
        obj = max(scene.objects, key=lambda o: int(o.mask.sum()))
        ys, xs = np.nonzero(obj.mask)
        options = TaskOptions(points=(Point(float(xs.mean()), float(ys.mean())),), multimask_output=True)
        request = [InferenceRequest(Task.PROMPTED_SEGMENTATION, scene.image, options)]
        [a], [b] = torch_model.predict(request), ort_model.predict(request)
        assert isinstance(a, Prediction) and isinstance(b, Prediction) and len(a.instances) == len(b.instances) == 3
        for x, y in zip(a.instances, b.instances, strict=True):
            assert x.mask is not None and y.mask is not None
            ma, mb = decode_rle(x.mask.rle), decode_rle(y.mask.rle)
            assert (ma & mb).sum() / max(1, (ma | mb).sum()) >= MASK_IOU
            assert abs(x.score - y.score) <= SCORE


def _prompts(scene: Scene) -> dict[str, TaskOptions]:
    """Point, box and mixed prompts on a scene's objects, as a client sends them."""
    objects = sorted(scene.objects, key=lambda o: -int(o.mask.sum()))[:3]
    points, boxes = [], []
    for obj in objects:
        ys, xs = np.nonzero(obj.mask)
        x, y = interior_point(obj.mask)
        points.append(Point(x, y, True))
        boxes.append(Box(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)))
    return {
        "point": TaskOptions(points=points[:1]),
        "point-multimask": TaskOptions(points=points[:1], multimask_output=True),
        "points-fg-bg": TaskOptions(points=(points[0], Point(points[-1].x, points[-1].y, False))),
        "box": TaskOptions(boxes=boxes[:1]),
        "boxes-multimask": TaskOptions(boxes=tuple(boxes), multimask_output=True),
        "boxes-and-point": TaskOptions(boxes=tuple(boxes), points=points[:1]),
    }


def test_prompted_masks_through_the_service_match_torch(pair: tuple[str, SamClipModel, ServerThread]) -> None:
    """The prompt decoder's graph through gRPC against torch in process, on held-out scenes."""
    _, torch_model, server = pair
    compared = 0
    with VisionModelClient(server.address, timeout=120) as client:
        for scene in SCENES[:4]:
            for name, options in _prompts(scene).items():
                [expected] = torch_model.predict([InferenceRequest(Task.PROMPTED_SEGMENTATION, scene.image, options)])
                got = client.segment(scene.image, Task.PROMPTED_SEGMENTATION, options)
                assert isinstance(expected, Prediction) and got.engine == "onnxruntime"
                assert len(got.instances) == len(expected.instances) > 0, name
                for x, y in zip(expected.instances, got.instances, strict=True):
                    assert x.mask is not None and y.mask is not None
                    ma, mb = decode_rle(x.mask.rle), decode_rle(y.mask.rle)
                    assert (ma & mb).sum() / max(1, (ma | mb).sum()) >= MASK_IOU, name
                    assert abs(x.score - y.score) <= SCORE, name
                    assert abs((x.predicted_iou or 0) - (y.predicted_iou or 0)) <= SCORE, name
                    compared += 1
    assert compared >= 4 * 12


def test_accuracy_through_the_service_matches_torch_to_3_decimals(pair: tuple[str, SamClipModel, ServerThread]) -> None:
    _, torch_model, server = pair
    local = InProcessClient(torch_model)
    with VisionModelClient(server.address, timeout=120) as client:
        figures = {
            "sam": (sam_miou(local, SCENES[:3]), sam_miou(client, SCENES[:3])),
            "top1": (clip_top1(local, SCENES), clip_top1(client, SCENES)),
            "ap": (samclip_open_vocabulary_ap(local, SCENES[:4]), samclip_open_vocabulary_ap(client, SCENES[:4])),
            "semantic": (semantic_miou(local, SCENES[:3]), semantic_miou(client, SCENES[:3])),
        }
    for name, (expected, got) in figures.items():
        if isinstance(expected, dict):
            assert isinstance(got, dict)
            assert {k: round(v, 3) for k, v in got.items()} == {k: round(v, 3) for k, v in expected.items()}, name
        else:
            assert round(float(got), 3) == round(float(expected), 3), name  # type: ignore[arg-type]
    assert figures["sam"][0]["miou_box"] > 0.5 and float(figures["top1"][0]) > 0.3  # type: ignore[index,arg-type]


def test_the_second_start_loads_the_cached_files(pair: tuple[str, SamClipModel, ServerThread]) -> None:
    backend, _, server = pair
    settings = server.model.settings  # type: ignore[attr-defined]
    again = SamClipModel(SamClipSettings(metrics_port=None, backend=backend, engine="onnxruntime",
                                         cache_dir=Path(settings.cache_dir)))  # fmt: skip
    again.load()
    files = again.backend.onnx_files  # type: ignore[attr-defined]
    assert files and not any(f.exported for f in files)
