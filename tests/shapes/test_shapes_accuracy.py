"""End-to-end accuracy floors of the shipped shapes weights, through the real services.

The local stack (the compose file's commands and settings, shapes weights) runs as
processes; every figure is measured through gRPC and the gateway on held-out
scenes. A regression in any pre- or post-processing step (resize, coordinates,
label mapping, RLE, label maps) drops a figure below its floor. Floors sit well
below what the shipped weights measure on this subset (see the issue note).
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from PIL import Image

from shapes import accuracy
from shapes.evaluation import binary_iou
from shapes.scenes import generate_scene
from visioncompare.maskrcnn.model import MaskRCNNModel
from visioncompare.maskrcnn.settings import MaskRCNNSettings
from visioncompare.runtime.client import VisionModelClient, image_to_proto, result_from_proto
from visioncompare.testing.processes import free_port
from visioncompare.tools.cli import DEFAULT_SAMPLE
from visioncompare.tools.stack import LocalStack
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import comparison_service_pb2 as cs
from visioncompare.v1 import comparison_service_pb2_grpc as cs_grpc

SCENES = accuracy.eval_scenes(8)
KEYPOINT_SCENES = accuracy.eval_scenes(32)  # 27 triangles (8 scenes hold only 9); detection is cheap
# Measured on these 8 scenes with the shipped weights (CPU): box AP 0.827, mask AP 0.799; the
# composition's SAM mIoU 0.805 (point) / 0.802 (box), CLIP top-1 1.0, open-vocabulary mask AP
# 0.480, semantic mIoU 0.721; agreement of Mask R-CNN and the composition: mean IoU 0.834 and
# label agreement 0.906; on the 32 keypoint scenes, keypoint AP 0.703, triangle recall 0.963 and
# order-free corner error 4.13 px. The merged SAM-CLIP's (the merge trained on proposal crops
# with its own logit scale, December 2026; masks named from their crops as the shapes preset
# serves): SAM mIoU 0.804 / 0.801, top-1 0.897, open-vocabulary mask AP 0.530, semantic mIoU
# 0.720; with Mask R-CNN 3.4 matched instances per scene at mean IoU 0.810, label agreement
# 0.865. A broken
# resize, axis, label mapping or keypoint order takes these towards 0 (the error towards tens of
# pixels).
FLOORS = {
    "maskrcnn_box_ap": 0.70,
    "maskrcnn_mask_ap": 0.66,
    "keypoint_ap": 0.55,
    "triangle_recall": 0.75,
}
MERGED_FLOORS = {
    "sam_miou_point": 0.70,
    "sam_miou_box": 0.70,
    "clip_top1": 0.80,
    "open_vocabulary_mask_ap": 0.45,
    "semantic_miou": 0.62,
    "agreement_mean_iou": 0.75,
    "agreement_labels": 0.80,
}
MERGED_BUNDLED_FOUND = 4  # objects of the bundled scene the merged model finds and names (the shipped weights)
SAMCLIP_FLOORS = {
    "sam-clip-composed": {
        "sam_miou_point": 0.65,
        "sam_miou_box": 0.65,
        "clip_top1": 0.85,
        "open_vocabulary_mask_ap": 0.36,
        "semantic_miou": 0.58,
        "agreement_mean_iou": 0.68,
        "agreement_labels": 0.75,
    },
    "samclip": MERGED_FLOORS,
}
CEILINGS = {"corner_error_px": 6.0}  # order-free mean distance of a found triangle's corners


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # the models volume in a temporary directory: the services' ONNX exports stay out of ./models
    stack = LocalStack(port_offset=free_port() % 1000 + 14_000, models_dir=tmp_path_factory.mktemp("models"))
    stack.up(timeout=300)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def maskrcnn(stack: LocalStack) -> Iterator[VisionModelClient]:
    with VisionModelClient(f"127.0.0.1:{stack.port('maskrcnn')}", timeout=120) as client:
        yield client


@pytest.fixture(scope="module", params=sorted(SAMCLIP_FLOORS))
def samclip(stack: LocalStack, request: pytest.FixtureRequest) -> Iterator[tuple[VisionModelClient, dict[str, float]]]:
    """Each SAM-CLIP service (the merged model and the composition) with its floors."""
    with VisionModelClient(f"127.0.0.1:{stack.port(request.param)}", timeout=120) as client:
        yield client, SAMCLIP_FLOORS[request.param]


@pytest.fixture(scope="module")
def in_process_maskrcnn(stack: LocalStack) -> MaskRCNNModel:
    """The model object the service runs, with the service's settings, called directly."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        for key, value in stack.service_env("maskrcnn").items():
            monkeypatch.setenv(key, value)
        model = MaskRCNNModel(MaskRCNNSettings())
    model.load()
    return model


def test_maskrcnn_ap_through_the_service_equals_in_process(
    maskrcnn: VisionModelClient, in_process_maskrcnn: MaskRCNNModel
) -> None:
    served = accuracy.maskrcnn_service_ap(maskrcnn, SCENES)
    assert accuracy.maskrcnn_in_process_ap(in_process_maskrcnn, SCENES) == served
    print("maskrcnn", served)
    assert served["box_ap"] >= FLOORS["maskrcnn_box_ap"]
    assert served["mask_ap"] >= FLOORS["maskrcnn_mask_ap"]


def test_triangle_corners_through_the_service_equal_in_process(
    maskrcnn: VisionModelClient, in_process_maskrcnn: MaskRCNNModel
) -> None:
    served = accuracy.maskrcnn_service_keypoints(maskrcnn, KEYPOINT_SCENES)
    assert accuracy.maskrcnn_in_process_keypoints(in_process_maskrcnn, KEYPOINT_SCENES) == served
    print("keypoints", served)
    assert served["keypoint_ap"] >= FLOORS["keypoint_ap"]
    assert served["triangle_recall"] >= FLOORS["triangle_recall"]
    assert served["corner_error_px"] is not None and served["corner_error_px"] <= CEILINGS["corner_error_px"]


def test_sam_prompted_segmentation(samclip: tuple[VisionModelClient, dict[str, float]]) -> None:
    client, floors = samclip
    figures = accuracy.sam_miou(client, SCENES)
    print("sam", figures)
    assert figures["miou_point"] >= floors["sam_miou_point"]
    assert figures["miou_box"] >= floors["sam_miou_box"]


def test_clip_zero_shot_classification(samclip: tuple[VisionModelClient, dict[str, float]]) -> None:
    client, floors = samclip
    top1 = accuracy.clip_top1(client, SCENES)
    print("clip", top1)
    assert top1 >= floors["clip_top1"]


def test_samclip_open_vocabulary_and_semantic(samclip: tuple[VisionModelClient, dict[str, float]]) -> None:
    client, floors = samclip
    ap = accuracy.samclip_open_vocabulary_ap(client, SCENES)
    miou = accuracy.semantic_miou(client, SCENES)
    print("open vocabulary", ap, "semantic", miou)
    assert ap["mask_ap"] >= floors["open_vocabulary_mask_ap"]
    assert miou >= floors["semantic_miou"]


def test_gateway_agreement_of_every_pair(stack: LocalStack) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{stack.port('gateway')}") as channel:
        figures = accuracy.gateway_agreement(cs_grpc.ComparisonServiceStub(channel), SCENES)
    print("agreement", figures)
    assert set(figures) == {"maskrcnn vs samclip", "maskrcnn vs sam-clip-composed", "samclip vs sam-clip-composed"}
    for model, floors in SAMCLIP_FLOORS.items():
        pair = figures[f"maskrcnn vs {model}"]
        assert pair["mean_iou"] >= floors["agreement_mean_iou"], model
        if "agreement_labels" in floors:
            assert pair["label_agreement"] >= floors["agreement_labels"], model


def test_bundled_scene_every_mask_is_an_object_with_its_label(stack: LocalStack) -> None:
    """The main command's comparison (`make demo`) on the bundled held-out scene: every mask
    a model returns is one object, no object twice. Mask R-CNN finds all 5 objects and the
    composition 4 (it misses the star, half hidden under a cross), each with its object's
    label. The merged SAM-CLIP finds the same 4, each with its object's label."""
    scene = generate_scene(1002013)
    image = np.asarray(Image.open(DEFAULT_SAMPLE).convert("RGB"))
    assert np.array_equal(image, scene.image)
    with grpc.insecure_channel(f"127.0.0.1:{stack.port('gateway')}") as channel:
        response = cs_grpc.ComparisonServiceStub(channel).Compare(
            cs.CompareRequest(image=image_to_proto(image), task=pb.TASK_INSTANCE_SEGMENTATION), timeout=120
        )
    # model -> (objects it finds at least, whether its labels are held)
    expected = {
        "maskrcnn": (len(scene.objects), True),
        "samclip": (MERGED_BUNDLED_FOUND, True),
        "sam-clip-composed": (len(scene.objects) - 1, True),
    }
    assert [r.model_name for r in response.results] == list(expected)
    for model in response.results:
        least_found, labels_held = expected[model.model_name]
        result = result_from_proto(model.segment)
        matched = []
        for instance, mask in zip(result.instances, result.masks(), strict=True):
            ious = [binary_iou(mask, obj.mask) for obj in scene.objects]
            best = int(np.argmax(ious))
            assert ious[best] >= 0.5, f"{model.model_name}: a mask matches no object"
            assert instance.label is not None, model.model_name
            if labels_held:
                assert instance.label.name == scene.objects[best].category, model.model_name
            matched.append(best)
        print(model.model_name, [i.label.name for i in result.instances if i.label])
        assert len(set(matched)) == len(matched) >= least_found, model.model_name
