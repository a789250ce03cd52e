"""Awkward but valid inputs, through real gRPC servers of both services on their default
(shapes) weights: strips 1 px wide or high, a 1 x 1 image, tiny masks.

Every image that passes the limits gets an answer on every task: OK with whatever is
found, with boxes and masks inside the image.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from visioncompare.maskrcnn.model import MaskRCNNModel
from visioncompare.maskrcnn.options import input_shape
from visioncompare.maskrcnn.settings import MaskRCNNSettings
from visioncompare.maskrcnn.transform import AnyAspectTransform
from visioncompare.runtime.client import Result, VisionModelClient
from visioncompare.runtime.types import Box, Point, Task, TaskOptions
from visioncompare.samclip import composed
from visioncompare.samclip.composed import ClipPreprocess
from visioncompare.samclip.model import SamClipModel
from visioncompare.samclip.openvocab import mask_crop
from visioncompare.samclip.settings import SamClipSettings
from visioncompare.testing.images import encode
from visioncompare.testing.serving import ServerThread

# (width, height): strips far more elongated than either service's max_size : 1, and one pixel.
SHAPES = [(4000, 1), (1, 4000), (1000, 3), (1, 1)]


def noise(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def assert_inside(result: Result, width: int, height: int) -> None:
    assert (result.image_width, result.image_height) == (width, height)
    for instance in result.instances:
        box = instance.box
        assert 0 <= box.x1 <= box.x2 <= width and 0 <= box.y1 <= box.y2 <= height, box
        assert 0.0 <= instance.score <= 1.0
    assert result.masks().shape == (len(result.instances), height, width)


# --- Mask R-CNN -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def maskrcnn() -> Iterator[VisionModelClient]:
    s = MaskRCNNSettings(host="127.0.0.1", port=0, metrics_port=None, log_json=False, device="cpu")
    with ServerThread(MaskRCNNModel(s), s) as srv, VisionModelClient(srv.address, timeout=60) as client:
        yield client


@pytest.mark.parametrize(("width", "height"), SHAPES, ids=[f"{w}x{h}" for w, h in SHAPES])
def test_maskrcnn_answers_every_task_for_extreme_shapes(maskrcnn: VisionModelClient, width: int, height: int) -> None:
    image = encode(noise(width, height))
    everything = TaskOptions(score_threshold=0.0, max_results=5)  # sends boxes through the mask/keypoint heads
    for task in (Task.OBJECT_DETECTION, Task.KEYPOINT_DETECTION):
        result = maskrcnn.detect(image, task, everything)
        assert_inside(result, width, height)
        assert result.instances and all(not i.mask for i in result.instances)
    keypoints = maskrcnn.detect(image, Task.KEYPOINT_DETECTION, everything).instances
    assert all(len(i.keypoints) == 3 and all(0.0 <= k.score <= 1.0 for k in i.keypoints) for i in keypoints)
    result = maskrcnn.segment(image, Task.INSTANCE_SEGMENTATION, everything)
    assert_inside(result, width, height)
    assert result.instances and all(i.mask for i in result.instances)


def test_the_resize_is_torchvisions_except_that_no_side_is_0_px() -> None:
    """Same sizes and pixels as GeneralizedRCNNTransform wherever torchvision's resize works."""
    kwargs = {"min_size": 192, "max_size": 288, "image_mean": [0.5] * 3, "image_std": [0.25] * 3}
    ours, theirs = AnyAspectTransform(**kwargs).eval(), GeneralizedRCNNTransform(**kwargs).eval()
    for height, width in [(48, 64), (600, 400), (1, 288), (37, 1001), (192, 192)]:
        image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(height))
        got, expected = ours([image])[0], theirs([image])[0]
        assert got.image_sizes == expected.image_sizes == [input_shape(height, width, 192, 288)]
        assert torch.equal(got.tensors, expected.tensors)
    assert ours([torch.rand(3, 1, 289)])[0].image_sizes == [(1, 288)]  # torchvision: 0 x 288, and a crash
    assert ours([torch.rand(3, 4000, 1)])[0].image_sizes == [(288, 1)]


# --- SAM-CLIP ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["merged", "composed"])
def samclip(request: pytest.FixtureRequest) -> Iterator[VisionModelClient]:
    s = SamClipSettings(
        backend=request.param, host="127.0.0.1", port=0, metrics_port=None, log_json=False, device="cpu"
    )
    with ServerThread(SamClipModel(s), s) as srv, VisionModelClient(srv.address, timeout=60) as client:
        yield client


@pytest.mark.parametrize(("width", "height"), SHAPES, ids=[f"{w}x{h}" for w, h in SHAPES])
def test_samclip_answers_every_task_for_extreme_shapes(samclip: VisionModelClient, width: int, height: int) -> None:
    image = encode(noise(width, height))
    labels = ["circle", "square", "triangle"]
    scores = samclip.classify(image, labels).scores
    assert sorted(s.label.name for s in scores) == labels
    prompts = [
        TaskOptions(points=(Point(width / 2, height / 2),)),
        TaskOptions(boxes=(Box(0, 0, width, height),), multimask_output=True),
        TaskOptions(points=(Point(0, 0), Point(width, height, positive=False)), boxes=(Box(0, 0, width, height),)),
    ]
    for options in prompts:
        result = samclip.segment(image, Task.PROMPTED_SEGMENTATION, options)
        assert_inside(result, width, height)
        assert result.instances
    assert_inside(samclip.segment(image, Task.AUTOMATIC_SEGMENTATION, TaskOptions(score_threshold=0.0)), width, height)
    everything = TaskOptions(labels=tuple(labels), score_threshold=0.0)
    for task in (Task.INSTANCE_SEGMENTATION, Task.SEMANTIC_SEGMENTATION):
        result = samclip.segment(image, task, everything)
        assert_inside(result, width, height)
    assert result.label_map is not None and result.label_map.indices.shape == (height, width)
    assert_inside(samclip.detect(image, Task.OBJECT_DETECTION, everything), width, height)


def test_samclip_labels_masks_of_one_pixel() -> None:
    """A 1-pixel mask's crop is a 1 x 1 image that CLIP's preprocessing scales up."""
    image = noise(16, 12)
    mask = np.zeros((12, 16), bool)
    mask[5, 7] = True
    crop = mask_crop(image, mask)
    assert crop.shape == (1, 1, 3) and (crop[0, 0] == image[5, 7]).all()
    preprocess = ClipPreprocess(size=(48, 48))
    assert preprocess(crop).shape == (3, 48, 48)
    assert preprocess(noise(4000, 1)).shape == preprocess(noise(1, 4000)).shape == (3, 48, 48)


def test_clip_preprocess_of_a_strip_scales_only_its_centre(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scaling a 1 x 40000 strip's shorter side to 48 px would make a 48 x 1.92M image
    (1.1 GB of floats) before the centre crop; only the part the crop keeps is scaled, to
    nearly the same pixels."""
    interpolate, sizes = torch.nn.functional.interpolate, []

    def recording(*args: Any, **kwargs: Any) -> torch.Tensor:
        out = interpolate(*args, **kwargs)
        sizes.append(out.numel())
        return out

    monkeypatch.setattr(torch.nn.functional, "interpolate", recording)
    preprocess = ClipPreprocess(size=(48, 48))
    assert preprocess(noise(40_000, 1)).shape == (3, 48, 48)
    assert max(sizes) <= 48 * 400 * 3  # the crop and its margins, not 48 x 1.92M
    assert preprocess(noise(4_000, 1)).shape == (3, 48, 48) and sizes[-1] == sizes[0]  # whatever the length
    waves = np.linspace(0, 6 * np.pi, 300)  # a smooth 300 x 5 strip, scaled whole to 2880 x 48
    strip = np.stack([127 + 100 * np.sin(waves), 127 + 100 * np.cos(0.7 * waves), 127 + 0 * waves], axis=-1)
    strip = np.repeat(strip[None].astype(np.uint8), 5, axis=0)
    cut = preprocess(strip)
    monkeypatch.setattr(composed, "MAX_OVERSIZE", 10**6)
    whole = preprocess(strip)
    assert max(sizes) == 48 * 2880 * 3
    assert torch.allclose(cut, whole, atol=0.02)  # the cut part is scaled by a ratio a hair apart
    monkeypatch.setattr(composed, "MAX_OVERSIZE", 4)
    for width, height in [(64, 48), (48, 64), (192, 48), (48, 192)]:  # up to 4:1, scaled whole as before
        image = noise(width, height)
        assert preprocess._centre_part(image) is image
    assert preprocess._centre_part(noise(193, 48)).shape == (48, 55, 3)  # 48, 3 px a side, 1 to centre


def test_a_box_prompt_without_area_is_invalid_argument_and_the_server_serves_on(samclip: VisionModelClient) -> None:
    image = encode(noise(60, 40))
    for box, field in [
        (Box(10, 5, 10, 20), "options.prompts.boxes[0]"),
        (Box(5, 20, 30, 20), "options.prompts.boxes[0]"),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            samclip.segment(image, Task.PROMPTED_SEGMENTATION, TaskOptions(boxes=(box,)))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "no area" in err.value.details() and "x2 > x1 and y2 > y1" in err.value.details()
        status = rpc_status.from_call(err.value)
        bad = error_details_pb2.BadRequest()
        assert status is not None and any(d.Unpack(bad) for d in status.details)
        assert [v.field for v in bad.field_violations] == [field]
    assert samclip.segment(image, Task.PROMPTED_SEGMENTATION, TaskOptions(boxes=(Box(10, 5, 11, 20),))).instances
