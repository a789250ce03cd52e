"""Where the merged SAM-CLIP loses semantic mIoU to the composition: naming, by how well the
proposal fits its object.

    python -m bench.samclip_naming [--scenes 50]

For the merged backend and the composition, as the shapes preset serves them (masks named by
their crops), on held-out shapes scenes (`shapes.accuracy.eval_scenes`), prints
  - the served semantic mIoU;
  - the same with every proposal named by the truth (the object it matches at IoU >= 0.5, else
    background): what the proposals allow when the naming is right;
  - for proposals that match an object, by their IoU with it, how many there are and the share
    named right (top-1 over the five classes and background, as the service labels them).
The proposals and their crop embeddings are computed once per scene and backend; the truth's
names are the text embeddings of the class names (and of the first background prompt).
The service's settings apply (SAMCLIP_*): SAMCLIP_MERGED_WEIGHTS=file:<path> measures a candidate merge.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch

from shapes import accuracy
from shapes.evaluation import best_match
from shapes.scenes import Scene
from visioncompare.samclip.algorithms import proposal_params
from visioncompare.samclip.model import SamClipModel
from visioncompare.samclip.openvocab import softmax
from visioncompare.samclip.settings import SamClipSettings
from visioncompare.shapes_models.vocabulary import CLASSES

#: IoU with the matched object: [low, high)
BUCKETS = ((0.5, 0.75), (0.75, 0.9), (0.9, 1.01))


def matched(scene: Scene, mask: np.ndarray) -> tuple[float, int | None]:
    """The IoU of `mask` with the object it overlaps most, and that object's class (None: no object)."""
    iou, obj = best_match(mask, scene.objects)
    return iou, CLASSES.index(obj.category) if obj is not None else None


def memoized(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn(image, ...)` computed once per image (the scenes' images are distinct)."""
    done: dict[bytes, Any] = {}

    def call(image: np.ndarray, *args: Any) -> Any:
        key = image.tobytes()
        if key not in done:
            done[key] = fn(image, *args)
        return done[key]

    return call


def naming(backend: Literal["merged", "composed"], scenes: Sequence[Scene]) -> dict[str, Any]:
    settings = SamClipSettings(backend=backend, metrics_port=None)
    model = SamClipModel(settings)
    model.load()
    b = model.backend
    b.generate_masks = memoized(b.generate_masks)  # type: ignore[method-assign]
    served_regions = b.embed_regions = memoized(b.embed_regions)  # type: ignore[method-assign]
    client = accuracy.InProcessClient(model)
    out: dict[str, Any] = {"served": accuracy.semantic_miou(client, scenes)}

    text = b.embed_texts([*CLASSES, *settings.background_prompts], settings.prompt_templates)
    by_image = {s.image.tobytes(): s for s in scenes}

    def truth(image: np.ndarray, embedding: Any, proposals: Sequence[Any]) -> np.ndarray:
        rows = []
        for p in proposals:
            iou, label = matched(by_image[image.tobytes()], p.binary())
            rows.append(text[label if label is not None and iou >= 0.5 else len(CLASSES)])
        return np.stack(rows) if rows else np.zeros((0, text.shape[1]), np.float32)

    b.embed_regions = truth  # type: ignore[method-assign]
    out["truth"] = accuracy.semantic_miou(client, scenes)
    b.embed_regions = served_regions  # type: ignore[method-assign]

    counts = {bucket: [0, 0] for bucket in BUCKETS}  # [proposals, named right]
    params = proposal_params(settings)
    for scene in scenes:
        embedding = b.embed_images([scene.image], [f"scene-{id(scene)}"])[0]
        proposals = [p for p in b.generate_masks(scene.image, embedding, params) if p.mask.area]
        if not proposals:
            continue
        probs = softmax(b.logit_scale * b.embed_regions(scene.image, embedding, proposals) @ text.T)
        named = np.concatenate([probs[:, : len(CLASSES)], probs[:, len(CLASSES) :].sum(1, keepdims=True)], 1)
        for p, row in zip(proposals, named, strict=True):
            iou, label = matched(scene, p.binary())
            for bucket in BUCKETS:
                if label is not None and bucket[0] <= iou < bucket[1]:
                    counts[bucket][0] += 1
                    counts[bucket][1] += int(row.argmax()) == label
    out["buckets"] = counts
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    scenes = accuracy.eval_scenes(args.scenes)
    results = {backend: naming(backend, scenes) for backend in ("merged", "composed")}
    print(f"{args.scenes} held-out scenes, masks named by their crops (the shapes preset)")
    print(f"{'':34} | {'merged':>16} | {'composed':>16}")
    for key, title in (("served", "semantic mIoU, served"), ("truth", "semantic mIoU, named by the truth")):
        print(f"{title:34} | {results['merged'][key]:16.3f} | {results['composed'][key]:16.3f}")
    for bucket in BUCKETS:
        cells = []
        for backend in ("merged", "composed"):
            n, right = results[backend]["buckets"][bucket]
            cells.append(f"{right / n if n else float('nan'):.3f} of {n:>4}")
        title = f"top-1, proposals at IoU {bucket[0]:.2f}-{min(bucket[1], 1.0):.2f}"
        print(f"{title:34} | {cells[0]:>16} | {cells[1]:>16}")


if __name__ == "__main__":
    main()
