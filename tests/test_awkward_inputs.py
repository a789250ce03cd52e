"""Awkward but valid inputs, through real gRPC servers of both services on their default
(shapes) weights: strips 1 px wide or high, a 1 x 1 image, tiny masks.

Every image that passes the limits gets an answer on every task: OK with whatever is
found, with boxes and masks inside the image.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from services.maskrcnn.model import MaskRCNNModel
from services.maskrcnn.options import input_shape
from services.maskrcnn.settings import MaskRCNNSettings
from services.maskrcnn.transform import AnyAspectTransform
from services.runtime.client import Result, VisionModelClient
from services.runtime.types import Task, TaskOptions
from tests.images import encode
from tests.serving import ServerThread

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
