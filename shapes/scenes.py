"""A deterministic generator of synthetic scenes with COCO-format annotations.

Each scene is 128-256 px on a side (not square), with a noisy, textured or
gradient background and 2-6 objects from a handful of shape classes in several
colours and sizes. Later objects occlude earlier ones; every annotation mask is
the object's visible part. The same seed always yields the same scene.

    scene = generate_scene(seed=7)
    coco = coco_dataset(generate_scene(s) for s in range(100))   # images, annotations, categories
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from visioncompare.runtime.masks import encode_mask
from visioncompare.shapes_models.vocabulary import CLASSES, TRIANGLE_KEYPOINTS

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 200),
    "white": (240, 240, 240),
}
SIZES = {"small": (14, 24), "medium": (26, 40), "large": (42, 60)}  # radius range in px
TRAIN_SEEDS = range(0, 1_000_000)
EVAL_SEEDS = range(1_000_000, 1_100_000)  # held out: never overlaps the train seeds


@dataclass(frozen=True)
class ShapeObject:
    category: str
    colour: str
    size: str
    mask: np.ndarray  # H x W bool, the visible part
    centre: tuple[float, float]
    corners: tuple[tuple[float, float], ...]  # triangle corners in TRIANGLE_KEYPOINTS order; else ()

    @property
    def category_id(self) -> int:
        return CLASSES.index(self.category) + 1  # 0 is background

    @property
    def caption(self) -> str:
        return f"a {self.size} {self.colour} {self.category}"


@dataclass(frozen=True)
class Scene:
    seed: int
    image: np.ndarray  # H x W x 3 uint8
    objects: tuple[ShapeObject, ...]


def _outline(category: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    def ring(n: int, radius: float, offset: float = 0.0) -> list[tuple[float, float]]:
        return [
            (
                cx + radius * math.cos(angle + offset + 2 * math.pi * k / n),
                cy + radius * math.sin(angle + offset + 2 * math.pi * k / n),
            )
            for k in range(n)
        ]

    if category == "square":
        return ring(4, r)
    if category == "triangle":
        return ring(3, r)
    if category == "star":
        outer, inner = ring(5, r), ring(5, r * 0.45, math.pi / 5)
        return [p for pair in zip(outer, inner, strict=True) for p in pair]
    if category == "cross":
        w = r * 0.38
        arm = [
            (-w, -r),
            (w, -r),
            (w, -w),
            (r, -w),
            (r, w),
            (w, w),
            (w, r),
            (-w, r),
            (-w, w),
            (-r, w),
            (-r, -w),
            (-w, -w),
        ]
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in arm]
    raise ValueError(category)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    kind = rng.integers(3)
    base = rng.integers(30, 200, size=3).astype(np.float32)
    if kind == 0:  # noise
        img = base + rng.normal(0, 18, size=(h, w, 3))
    elif kind == 1:  # gradient
        ramp = np.linspace(-1, 1, w if rng.random() < 0.5 else h, dtype=np.float32)
        ramp = ramp[None, :, None] if ramp.size == w else ramp[:, None, None]
        img = base + 50 * ramp * rng.choice([-1, 1], size=3) + rng.normal(0, 8, size=(h, w, 3))
    else:  # stripes / checks texture
        yy, xx = np.mgrid[0:h, 0:w]
        period = rng.integers(6, 20)
        pattern = ((xx // period + yy // period) % 2) if rng.random() < 0.5 else ((xx + yy) // period % 2)
        img = base + 25 * pattern[..., None] + rng.normal(0, 8, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def generate_scene(seed: int, *, min_objects: int = 2, max_objects: int = 6) -> Scene:
    rng = np.random.default_rng(seed)
    w, h = int(rng.integers(128, 257)), int(rng.integers(128, 257))
    while w == h:
        h = int(rng.integers(128, 257))
    image = Image.fromarray(_background(rng, h, w))
    draw = ImageDraw.Draw(image)
    drawn: list[tuple[str, str, str, np.ndarray, tuple[float, float], tuple[tuple[float, float], ...]]] = []
    for _ in range(int(rng.integers(min_objects, max_objects + 1))):
        category = CLASSES[int(rng.integers(len(CLASSES)))]
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        size = list(SIZES)[int(rng.integers(len(SIZES)))]
        lo, hi = SIZES[size]
        r = float(rng.uniform(lo, min(hi, min(w, h) / 2 - 2)))
        cx, cy = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
        angle = float(rng.uniform(0, 2 * math.pi))
        mask_img = Image.new("L", (w, h), 0)
        mask_draw = ImageDraw.Draw(mask_img)
        fill = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in COLOURS[colour])
        corners: tuple[tuple[float, float], ...] = ()
        if category == "circle":
            bbox = [cx - r, cy - r, cx + r, cy + r]
            draw.ellipse(bbox, fill=fill)
            mask_draw.ellipse(bbox, fill=255)
        else:
            outline = _outline(category, cx, cy, r, angle)
            draw.polygon(outline, fill=fill)
            mask_draw.polygon(outline, fill=255)
            if category == "triangle":
                corners = canonical_corners(outline)
        mask = np.asarray(mask_img) > 0
        drawn = [(c, col, s, m & ~mask, ctr, cor) for c, col, s, m, ctr, cor in drawn]  # occlusion
        drawn.append((category, colour, size, mask, (cx, cy), corners))
    objects = tuple(ShapeObject(*d) for d in drawn if d[3].sum() >= 30)  # drop objects hidden almost entirely
    return Scene(seed=seed, image=np.asarray(image, dtype=np.uint8).copy(), objects=objects)


def canonical_corners(outline: list[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """A triangle's corners from the topmost one on (ties: the leftmost); `_outline` lists them
    by increasing angle, which is clockwise on screen (y points down)."""
    first = min(range(len(outline)), key=lambda k: (outline[k][1], outline[k][0]))
    return tuple(outline[first:] + outline[:first])


def corner_visibility(obj: ShapeObject) -> list[int]:
    """COCO visibility of each corner: 2 where the visible mask reaches within 2 px of it, else 1
    (occluded but inside the image; the generator keeps every shape inside)."""
    h, w = obj.mask.shape
    flags = []
    for x, y in obj.corners:
        cx, cy = min(max(int(x), 0), w - 1), min(max(int(y), 0), h - 1)
        near = obj.mask[max(cy - 2, 0) : cy + 3, max(cx - 2, 0) : cx + 3]
        flags.append(2 if near.any() else 1)
    return flags


def coco_categories() -> list[dict[str, object]]:
    return [
        {
            "id": i + 1,
            "name": name,
            "supercategory": "shape",
            **(
                {"keypoints": list(TRIANGLE_KEYPOINTS), "skeleton": [[1, 2], [2, 3], [3, 1]]}
                if name == "triangle"
                else {}
            ),
        }
        for i, name in enumerate(CLASSES)
    ]


def coco_dataset(scenes: Iterable[Scene]) -> dict[str, object]:
    """COCO instances for `scenes` (e.g. `generate_scene(s) for s in seeds`); image ids are the seeds."""
    images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    for scene in scenes:
        h, w = scene.image.shape[:2]
        images.append({"id": scene.seed, "width": w, "height": h, "file_name": f"{scene.seed}.png"})
        for obj in scene.objects:
            m = encode_mask(obj.mask)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": scene.seed,
                    "category_id": obj.category_id,
                    "segmentation": {"size": [m.rle.height, m.rle.width], "counts": m.rle.counts.decode()},
                    "area": m.area,
                    "bbox": [m.bbox.x1, m.bbox.y1, m.bbox.x2 - m.bbox.x1, m.bbox.y2 - m.bbox.y1],
                    "iscrowd": 0,
                    "attributes": {"colour": obj.colour, "size": obj.size},
                    **(
                        {
                            "keypoints": [
                                v
                                for (x, y), f in zip(obj.corners, corner_visibility(obj), strict=True)
                                for v in (x, y, f)
                            ],
                            "num_keypoints": len(obj.corners),
                        }
                        if obj.corners
                        else {}
                    ),
                }
            )
    return {"images": images, "annotations": annotations, "categories": coco_categories()}


# Prompts for a scene object, as the accuracy checks and SAM's training give them.
def interior_point(mask: np.ndarray) -> tuple[float, float]:
    """A point well inside the mask: the mask pixel nearest its centroid, moved inward by erosion."""
    core = mask.copy()
    for _ in range(64):  # erode until a few pixels are left
        eroded = core.copy()
        eroded[1:, :] &= core[:-1, :]
        eroded[:-1, :] &= core[1:, :]
        eroded[:, 1:] &= core[:, :-1]
        eroded[:, :-1] &= core[:, 1:]
        if eroded.sum() < 4:
            break
        core = eroded
    ys, xs = np.nonzero(core)
    i = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
    return float(xs[i]) + 0.5, float(ys[i]) + 0.5


def box_of(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
