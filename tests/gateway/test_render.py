"""The side-by-side picture stays legible: scaled panels, wrapped headers, labels inside and apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import ImageFont

from visioncompare.gateway.render import MAX_PANEL_PX, MIN_PANEL_PX, Sheet, TextBox, render, wrap
from visioncompare.testing.images import encode, scene
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import comparison_service_pb2 as cs
from visioncompare.v1 import vision_model_service_pb2 as vms

SAMPLE = Path(__file__).resolve().parents[2] / "visioncompare" / "gateway" / "samples" / "shapes-scene.png"  # 245 x 252
# The objects of the bundled scene (boxes in its pixels): two crosses that touch, a star under them.
OBJECTS = [
    ("star", (73, 109, 122, 172)),
    ("circle", (2, 125, 38, 161)),
    ("cross", (92, 25, 168, 102)),
    ("cross", (101, 98, 165, 162)),
    ("triangle", (56, 170, 94, 207)),
]
ERROR = (
    "model unavailable: UNAVAILABLE: failed to connect to all addresses; last error: UNKNOWN: "
    "ipv4:127.0.0.1:50053: Failed to connect to remote host: Connection refused"
)
WARNING = "shapes reference weights, synthetic data"


def detections(objects: list[tuple[str, tuple[int, int, int, int]]]) -> vms.SegmentResponse:
    instances = [
        pb.Instance(box=pb.BoundingBox(x1=x1, y1=y1, x2=x2, y2=y2), label=pb.Label(name=name, score=0.9), score=0.9)
        for name, (x1, y1, x2, y2) in objects
    ]
    return vms.SegmentResponse(instances=instances, info=pb.InferenceInfo(warnings=[WARNING]))


def response() -> cs.CompareResponse:
    return cs.CompareResponse(
        task=pb.TASK_INSTANCE_SEGMENTATION,
        results=[
            cs.ModelResult(model_name="maskrcnn", latency_ms=412, segment=detections(OBJECTS)),
            cs.ModelResult(model_name="samclip", latency_ms=2392, segment=detections(OBJECTS[:3])),
            cs.ModelResult(model_name="other", latency_ms=3, status=cs.ModelStatus(code=14, message=ERROR)),
        ],
    )


def inside(box: tuple[int, int, int, int], area: tuple[int, int, int, int]) -> bool:
    return area[0] <= box[0] and area[1] <= box[1] and box[2] <= area[2] and box[3] <= area[3]


def overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


@pytest.fixture(scope="module")
def sheet() -> Sheet:
    return render(SAMPLE.read_bytes(), response())


def test_small_image_is_upscaled_to_a_legible_panel(sheet: Sheet) -> None:
    assert sheet.scale == pytest.approx(MIN_PANEL_PX / 252)
    labels = [t for t in sheet.texts if t.kind == "label"]
    assert labels and min(t.box[3] - t.box[1] for t in labels) >= 12  # 14 px text in its tag
    headers = [t for t in sheet.texts if t.kind == "header"]
    assert min(t.box[3] - t.box[1] for t in headers) >= 11  # a 16 px font's lowercase letters and up


def test_header_is_wrapped_whole_inside_its_panel(sheet: Sheet) -> None:
    headers = [t for t in sheet.texts if t.kind == "header"]
    for t in headers:
        assert inside(t.box, t.area), t
    by_panel: dict[tuple[int, int, int, int], list[TextBox]] = {}
    for t in headers:
        by_panel.setdefault(t.area, []).append(t)
    texts = [" ".join(t.text for t in lines) for lines in by_panel.values()]
    assert texts == [
        f"maskrcnn · 412 ms · OK {WARNING}",
        f"samclip · 2392 ms · OK {WARNING}",
        f"other · 3 ms · UNAVAILABLE: {ERROR}",  # the status by name, as the page says it; every word, none clipped
    ]


def test_labels_stay_inside_their_panel_and_apart(sheet: Sheet) -> None:
    labels = [t for t in sheet.texts if t.kind == "label"]
    assert [t.text for t in labels] == [f"{name} 0.90" for name, _ in OBJECTS + OBJECTS[:3]]
    for t in labels:
        assert inside(t.box, t.area), t
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            assert not overlap(a.box, b.box), (a, b)


def test_labels_at_the_edges_are_pulled_inside() -> None:
    edges = [("circle", (0, 0, 10, 10)), ("a-very-long-label-name-for-a-tiny-image", (50, 38, 64, 48))]
    result = cs.ModelResult(model_name="m", segment=detections(edges))
    sheet = render(encode(scene(64, 48)), cs.CompareResponse(results=[result]))
    labels = [t for t in sheet.texts if t.kind == "label"]
    assert len(labels) == 2
    for t in labels:
        assert inside(t.box, t.area), t


def test_huge_image_is_scaled_down() -> None:
    image = np.full((1500, 3000, 3), 40, np.uint8)
    result = cs.ModelResult(model_name="m", segment=detections([("x", (100, 100, 2900, 1400))]))
    sheet = render(encode(image), cs.CompareResponse(results=[result]))
    assert sheet.image.width == MAX_PANEL_PX and sheet.scale == pytest.approx(MAX_PANEL_PX / 3000)


def test_wrap_breaks_words_wider_than_the_line() -> None:
    font = ImageFont.load_default(size=16)
    lines = wrap("see https://example.org/" + "x" * 200 + " for more", font, 200)
    assert all(font.getlength(line) <= 200 for line in lines)
    assert "".join(lines).replace(" ", "") == ("see https://example.org/" + "x" * 200 + " for more").replace(" ", "")


def label_map_result(name: str, indices: np.ndarray, classes: list[str]) -> cs.ModelResult:
    h, w = indices.shape
    label_map = pb.LabelMap(
        width=w, height=h, class_names=["background", *classes], class_indices_u16le=indices.astype("<u2").tobytes()
    )
    return cs.ModelResult(model_name=name, latency_ms=5, segment=vms.SegmentResponse(label_map=label_map))


def test_label_map_and_classification_agreement_are_printed_under_the_panels() -> None:
    from visioncompare.gateway.agreement import pairwise

    a = np.zeros((48, 64), np.uint16)
    a[:24] = 1
    b = np.zeros((48, 64), np.uint16)
    b[:12] = 1
    results = [label_map_result("merged", a, ["sky"]), label_map_result("composed", b, ["sky"])]
    response = cs.CompareResponse(
        task=pb.TASK_SEMANTIC_SEGMENTATION, results=results, agreements=pairwise(results, 0.5)
    )
    sheet = render(encode(scene(64, 48)), response)
    [footer] = [t for t in sheet.texts if t.kind == "agreement"]
    assert footer.text == (
        "agreement merged vs composed: pixel agreement 75.0%, mean IoU 0.500 over 1 class either found (sky 0.50)"
    )
    assert inside(footer.box, footer.area) and footer.area[3] == sheet.image.height
    assert sheet.image.height > max(t.area[3] for t in sheet.texts if t.kind == "header") + 360  # below the panels

    def scores(*names: str) -> cs.ModelResult:
        ranked = [vms.ClassScore(label=pb.Label(name=n, score=1 - k / 10)) for k, n in enumerate(names)]
        return cs.ModelResult(model_name="-".join(names), classify=vms.ClassifyResponse(scores=ranked))

    results = [scores("cat", "dog", "cup"), scores("cat", "cup", "dog")]
    response = cs.CompareResponse(
        task=pb.TASK_ZERO_SHOT_CLASSIFICATION, results=results, agreements=pairwise(results, 0.5)
    )
    [footer] = [t for t in render(encode(scene(64, 48)), response).texts if t.kind == "agreement"]
    assert footer.text.endswith("top-1 agrees, top-3 overlap 1.00, rank correlation 0.50 over 3 shared labels")


def test_instance_agreement_stays_out_of_the_picture() -> None:
    from visioncompare.gateway.agreement import pairwise

    compared = response()
    compared.agreements.extend(pairwise(compared.results, 0.5))
    assert [p.WhichOneof("agreement") for p in compared.agreements] == ["instances"]
    sheet = render(SAMPLE.read_bytes(), compared)
    assert not [t for t in sheet.texts if t.kind == "agreement"]  # the panels show the matches themselves
