"""How far two models' outputs agree.

Instances are matched one-to-one, greedily by descending IoU (as COCO evaluation
does), keeping pairs at or above the threshold. Mask IoU is used when both sides
have masks, box IoU otherwise. Semantic label maps are compared pixel by pixel
(per-class IoU, their mean, pixel agreement); classifications by their top labels
and by the rank correlation of their scores. Names compare case-insensitively.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from visioncompare.runtime.masks import mask_iou
from visioncompare.runtime.types import RleMask
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import comparison_service_pb2 as cs
from visioncompare.v1 import vision_model_service_pb2 as vms


def box_iou(a: Sequence[pb.BoundingBox], b: Sequence[pb.BoundingBox]) -> np.ndarray:
    """Pairwise IoU (len(a) x len(b)) of x1, y1, x2, y2 boxes."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    ba = np.array([[x.x1, x.y1, x.x2, x.y2] for x in a], dtype=np.float64)
    bb = np.array([[x.x1, x.y1, x.x2, x.y2] for x in b], dtype=np.float64)
    area_a = np.clip(ba[:, 2] - ba[:, 0], 0, None) * np.clip(ba[:, 3] - ba[:, 1], 0, None)
    area_b = np.clip(bb[:, 2] - bb[:, 0], 0, None) * np.clip(bb[:, 3] - bb[:, 1], 0, None)
    lt = np.maximum(ba[:, None, :2], bb[None, :, :2])
    rb = np.minimum(ba[:, None, 2:], bb[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """One-to-one pairs (i, j, iou) with iou >= threshold, best pairs first."""
    pairs = [(float(iou[i, j]), i, j) for i, j in zip(*np.nonzero(iou >= threshold), strict=True)]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    used_a: set[int] = set()
    used_b: set[int] = set()
    matches = []
    for value, i, j in pairs:
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        matches.append((int(i), int(j), value))
    return matches


def _rle(m: pb.Mask) -> RleMask:
    return RleMask(m.rle.height, m.rle.width, m.rle.counts)


def instance_agreement(a: Sequence[pb.Instance], b: Sequence[pb.Instance], threshold: float) -> cs.InstanceAgreement:
    use_masks = bool(a) and bool(b) and all(i.HasField("mask") for i in [*a, *b])
    if use_masks:
        iou = mask_iou([_rle(i.mask) for i in a], [_rle(i.mask) for i in b])
    else:
        iou = box_iou([i.box for i in a], [i.box for i in b])
    matches = greedy_match(iou, threshold)
    result = cs.InstanceAgreement(
        iou_kind=cs.IOU_KIND_MASK if use_masks else cs.IOU_KIND_BOX,
        iou_threshold=threshold,
        only_a_count=len(a) - len(matches),
        only_b_count=len(b) - len(matches),
    )
    for i, j, value in matches:
        agree = a[i].label.name.lower() == b[j].label.name.lower() if a[i].HasField("label") else False
        result.matches.append(cs.InstanceMatch(index_a=i, index_b=j, iou=value, labels_agree=agree))
    if matches:
        result.mean_iou = float(np.mean([m[2] for m in matches]))
        result.label_agreement_rate = sum(m.labels_agree for m in result.matches) / len(matches)
    return result


def ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks of `values`, ties taking the mean of the ranks they span."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    out = np.empty(len(x))
    sorted_x = x[order]
    start = 0
    while start < len(x):
        end = start
        while end + 1 < len(x) and sorted_x[end + 1] == sorted_x[start]:
            end += 1
        out[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rank correlation (Pearson's of the tie-averaged ranks); None with fewer than two
    values, or when either side holds one value only."""
    if len(a) < 2:
        return None
    ra, rb = ranks(a), ranks(b)
    da, db = ra - ra.mean(), rb - rb.mean()
    norm = float(np.sqrt((da * da).sum() * (db * db).sum()))
    if norm == 0.0:
        return None
    return float(np.clip((da * db).sum() / norm, -1.0, 1.0))


def classification_agreement(a: Sequence[vms.ClassScore], b: Sequence[vms.ClassScore]) -> cs.ClassificationAgreement:
    k = min(len(a), len(b))
    top_a = {s.label.name.lower() for s in a[:k]}
    top_b = {s.label.name.lower() for s in b[:k]}
    union = top_a | top_b
    result = cs.ClassificationAgreement(
        top1_agree=k > 0 and a[0].label.name.lower() == b[0].label.name.lower(),
        topk_overlap=len(top_a & top_b) / len(union) if union else 0.0,
        k=k,
    )
    scores_a: dict[str, float] = {}
    scores_b: dict[str, float] = {}
    for scores, out in ((a, scores_a), (b, scores_b)):
        for s in scores:
            out.setdefault(s.label.name.lower(), s.label.score)
    shared = [name for name in scores_a if name in scores_b]
    result.shared_labels = len(shared)
    rho = spearman([scores_a[n] for n in shared], [scores_b[n] for n in shared])
    if rho is not None:
        result.rank_correlation = rho
    return result


def class_map(label_map: pb.LabelMap, ids: dict[str, int]) -> np.ndarray | None:
    """A label map's pixels as class ids shared by both maps (`ids`: lower-case name -> id, 0 the
    background; names met first get the next id); None when its bytes do not fill width x height."""
    n = label_map.width * label_map.height
    if len(label_map.class_indices_u16le) != 2 * n:
        return None
    lut = [0]
    for name in list(label_map.class_names)[1:]:
        lut.append(ids.setdefault(name.lower(), len(ids) + 1))
    indices = np.frombuffer(label_map.class_indices_u16le, dtype="<u2").astype(np.int64)
    table = np.array(lut, dtype=np.int64)
    return np.where(indices < len(table), table[np.minimum(indices, len(table) - 1)], 0)


def label_map_agreement(a: pb.LabelMap, b: pb.LabelMap) -> cs.LabelMapAgreement | None:
    """Pixel agreement and per-class IoU of two label maps of the same size; None when the sizes differ."""
    if (a.width, a.height) != (b.width, b.height):
        return None
    ids: dict[str, int] = {}
    ca, cb = class_map(a, ids), class_map(b, ids)
    if ca is None or cb is None:
        return None
    names = {v: k for k, v in ids.items()}
    spelled = {name.lower(): name for name in [*list(b.class_names)[1:], *list(a.class_names)[1:]]}  # A's spelling
    size = len(ids) + 1
    joint = np.bincount(ca * size + cb, minlength=size * size).reshape(size, size)
    pixels_a, pixels_b, both = joint.sum(axis=1), joint.sum(axis=0), np.diag(joint)
    result = cs.LabelMapAgreement(pixel_agreement=float(both.sum() / ca.size) if ca.size else 0.0, pixels=int(ca.size))
    for c in range(1, size):
        union = int(pixels_a[c] + pixels_b[c] - both[c])
        if union == 0:
            continue
        result.classes.append(
            cs.ClassIou(
                name=spelled[names[c]],
                iou=float(both[c] / union),
                pixels_a=int(pixels_a[c]),
                pixels_b=int(pixels_b[c]),
            )
        )
    if result.classes:
        result.mean_iou = float(np.mean([c.iou for c in result.classes]))
    return result


def pairwise(results: Sequence[cs.ModelResult], threshold: float) -> list[cs.PairAgreement]:
    """Agreement for every pair of successful results that carry instances, label maps or scores."""
    ok = [r for r in results if r.status.code == 0 and r.WhichOneof("output")]
    out = []
    for n, ra in enumerate(ok):
        for rb in ok[n + 1 :]:
            pair = cs.PairAgreement(model_a=ra.model_name, model_b=rb.model_name)
            out_a, out_b = getattr(ra, ra.WhichOneof("output")), getattr(rb, rb.WhichOneof("output"))
            if isinstance(out_a, vms.ClassifyResponse) and isinstance(out_b, vms.ClassifyResponse):
                pair.classification.CopyFrom(classification_agreement(out_a.scores, out_b.scores))
            elif isinstance(out_a, vms.SegmentResponse) and out_a.HasField("label_map"):
                if not (isinstance(out_b, vms.SegmentResponse) and out_b.HasField("label_map")):
                    continue
                agreement = label_map_agreement(out_a.label_map, out_b.label_map)
                if agreement is None:
                    continue
                pair.label_map.CopyFrom(agreement)
            elif hasattr(out_a, "instances") and hasattr(out_b, "instances"):
                pair.instances.CopyFrom(instance_agreement(out_a.instances, out_b.instances, threshold))
            else:
                continue
            out.append(pair)
    return out
