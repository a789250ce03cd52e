"""Agreement metrics on hand-built outputs whose IoUs are known."""

from __future__ import annotations

import numpy as np
import pytest

from visioncompare.gateway.agreement import (
    box_iou,
    classification_agreement,
    greedy_match,
    instance_agreement,
    label_map_agreement,
    pairwise,
    spearman,
)
from visioncompare.runtime.masks import encode_mask
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import comparison_service_pb2 as cs
from visioncompare.v1 import vision_model_service_pb2 as vms


def inst(box: tuple[float, float, float, float], label: str, mask: np.ndarray | None = None) -> pb.Instance:
    i = pb.Instance(box=pb.BoundingBox(x1=box[0], y1=box[1], x2=box[2], y2=box[3]), label=pb.Label(name=label))
    if mask is not None:
        m = encode_mask(mask)
        i.mask.CopyFrom(pb.Mask(rle=pb.RleMask(height=m.rle.height, width=m.rle.width, counts=m.rle.counts)))
    return i


def test_box_iou_known_values() -> None:
    a = [pb.BoundingBox(x1=0, y1=0, x2=10, y2=10)]
    b = [pb.BoundingBox(x1=5, y1=0, x2=15, y2=10), pb.BoundingBox(x1=20, y1=20, x2=30, y2=30)]
    iou = box_iou(a, b)
    assert iou[0, 0] == pytest.approx(50 / 150) and iou[0, 1] == 0


def test_greedy_matching_is_one_to_one_and_best_first() -> None:
    iou = np.array([[0.9, 0.8], [0.85, 0.1]])
    assert greedy_match(iou, 0.5) == [(0, 0, 0.9)]  # row 1's only good match was taken
    assert greedy_match(np.array([[0.6, 0.0], [0.0, 0.7]]), 0.5) == [(1, 1, 0.7), (0, 0, 0.6)]


def test_box_agreement_counts_matches_labels_and_leftovers() -> None:
    a = [inst((0, 0, 10, 10), "cat"), inst((20, 20, 30, 30), "dog"), inst((50, 50, 60, 60), "cup")]
    b = [inst((0, 0, 10, 8), "cat"), inst((20, 20, 30, 30), "person")]  # IoUs 0.8 and 1.0
    agreement = instance_agreement(a, b, 0.5)
    assert agreement.iou_kind == cs.IOU_KIND_BOX
    assert [(m.index_a, m.index_b) for m in agreement.matches] == [(1, 1), (0, 0)]
    assert agreement.mean_iou == pytest.approx(0.9)
    assert agreement.label_agreement_rate == pytest.approx(0.5)
    assert (agreement.only_a_count, agreement.only_b_count) == (1, 0)


def test_mask_iou_is_used_when_both_sides_have_masks() -> None:
    m1 = np.zeros((20, 20), bool)
    m1[0:10, 0:10] = True  # 100 px
    m2 = np.zeros((20, 20), bool)
    m2[0:10, 0:5] = True  # 50 px inside m1: IoU 0.5, but boxes given as identical
    a = [inst((0, 0, 10, 10), "cat", m1)]
    b = [inst((0, 0, 10, 10), "cat", m2)]
    agreement = instance_agreement(a, b, 0.5)
    assert agreement.iou_kind == cs.IOU_KIND_MASK
    assert agreement.matches[0].iou == pytest.approx(0.5)
    assert instance_agreement(a, b, 0.51).only_a_count == 1


def test_classification_agreement() -> None:
    def scores(*names: str) -> list[vms.ClassScore]:
        return [vms.ClassScore(label=pb.Label(name=n)) for n in names]

    agreement = classification_agreement(scores("cat", "dog", "cup"), scores("cat", "cup", "car"))
    assert agreement.top1_agree and agreement.k == 3
    assert agreement.topk_overlap == pytest.approx(2 / 4)


def test_pairwise_skips_failed_models() -> None:
    ok = cs.ModelResult(model_name="a", detect=vms.DetectResponse(instances=[inst((0, 0, 1, 1), "x")]))
    ok2 = cs.ModelResult(model_name="b", detect=vms.DetectResponse(instances=[inst((0, 0, 1, 1), "x")]))
    failed = cs.ModelResult(model_name="c", status=cs.ModelStatus(code=14, message="down"))
    pairs = pairwise([ok, failed, ok2], 0.5)
    assert [(p.model_a, p.model_b) for p in pairs] == [("a", "b")]
    assert pairs[0].instances.mean_iou == pytest.approx(1.0)


def scored(*pairs: tuple[str, float]) -> list[vms.ClassScore]:
    return [vms.ClassScore(label=pb.Label(name=n, score=p)) for n, p in pairs]


def test_classification_agreement_has_the_rank_correlation_over_the_shared_labels() -> None:
    a = scored(("cat", 0.6), ("dog", 0.3), ("cup", 0.1))
    same_order = scored(("Cat", 0.9), ("dog", 0.05), ("cup", 0.01), ("car", 0.04))
    agreement = classification_agreement(a, same_order)
    assert agreement.shared_labels == 3 and agreement.rank_correlation == pytest.approx(1.0)
    reversed_order = scored(("cup", 0.5), ("dog", 0.3), ("cat", 0.2))
    agreement = classification_agreement(a, reversed_order)
    assert not agreement.top1_agree and agreement.rank_correlation == pytest.approx(-1.0)
    # cat, dog, cup ranked 3, 2, 1 by A and 2, 3, 1 by B: rho = 1 - 6 * (1 + 1 + 0) / (3 * 8) = 0.5
    assert classification_agreement(a, scored(("dog", 0.5), ("cat", 0.3), ("cup", 0.2))).rank_correlation == 0.5
    one_shared = classification_agreement(a, scored(("cat", 1.0), ("car", 0.0)))
    assert one_shared.shared_labels == 1 and not one_shared.HasField("rank_correlation")


def test_spearman_takes_the_mean_rank_of_ties() -> None:
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1])
    assert spearman([0.5, 0.5], [0.1, 0.9]) is None  # one side scores them alike
    assert spearman([1.0], [2.0]) is None


def label_map(indices: np.ndarray, names: list[str]) -> pb.LabelMap:
    h, w = indices.shape
    return pb.LabelMap(
        width=w, height=h, class_names=["background", *names], class_indices_u16le=indices.astype("<u2").tobytes()
    )


def test_label_map_agreement_is_per_class_iou_their_mean_and_pixel_agreement() -> None:
    a = np.zeros((10, 10), np.uint16)
    a[0:5, :] = 1  # cat: 50 px
    a[5:10, 0:2] = 2  # dog: 10 px
    b = np.zeros((10, 10), np.uint16)
    b[0:4, :] = 2  # "Cat" (B's index 2): 40 px inside A's 50
    b[9, :] = 1  # cup: 10 px, 2 of them on A's dog
    agreement = label_map_agreement(label_map(a, ["cat", "dog"]), label_map(b, ["cup", "Cat"]))
    assert agreement is not None
    assert [(c.name, c.pixels_a, c.pixels_b) for c in agreement.classes] == [
        ("cat", 50, 40),
        ("dog", 10, 0),
        ("cup", 0, 10),
    ]
    assert [c.iou for c in agreement.classes] == pytest.approx([40 / 50, 0.0, 0.0])
    assert agreement.mean_iou == pytest.approx((0.8 + 0 + 0) / 3)
    # same class: 40 cat pixels, and background where both say background (100 - 50 - 10 - 8 = 32)
    assert agreement.pixel_agreement == pytest.approx((40 + 32) / 100) and agreement.pixels == 100


def test_label_maps_of_other_sizes_are_not_compared() -> None:
    a, b = np.zeros((4, 4), np.uint16), np.zeros((4, 5), np.uint16)
    assert label_map_agreement(label_map(a, ["x"]), label_map(b, ["x"])) is None
    empty = label_map_agreement(label_map(a, ["x"]), label_map(a, ["y"]))
    assert empty is not None and empty.pixel_agreement == 1.0 and list(empty.classes) == [] and empty.mean_iou == 0


def test_pairwise_compares_label_maps() -> None:
    a = np.zeros((6, 6), np.uint16)
    a[:3] = 1
    results = [
        cs.ModelResult(model_name=n, segment=vms.SegmentResponse(label_map=label_map(a, ["sky"])))
        for n in ("merged", "composed")
    ]
    [pair] = pairwise(results, 0.5)
    assert pair.WhichOneof("agreement") == "label_map"
    assert pair.label_map.pixel_agreement == 1.0 and pair.label_map.mean_iou == 1.0
    assert [(c.name, c.iou) for c in pair.label_map.classes] == [("sky", 1.0)]
