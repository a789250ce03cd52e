"""Held-out shapes scenes as a COCO dataset on disk, for `vcompare evaluate`.

    python -m shapes.export_coco --scenes 20 --out data/shapes-eval
    vcompare evaluate data/shapes-eval/images --annotations data/shapes-eval/annotations.json

Writes `images/<seed>.png` and `annotations.json` (`shapes.scenes.coco_dataset`: instance
masks as RLE, boxes, areas, triangle corners as keypoints; image ids are the seeds). The
scenes are the held-out split from its `--start`-th seed on, the same scenes as
`shapes.accuracy.eval_scenes(count, start)` and so as `bench/accuracy.py --scenes N`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from shapes.scenes import EVAL_SEEDS, Scene, coco_dataset, generate_scene


def held_out_scenes(count: int, start: int = 0) -> list[Scene]:
    return [generate_scene(s) for s in EVAL_SEEDS[start : start + count]]


def export(scenes: list[Scene], out: Path) -> Path:
    """Write the scenes' PNGs under out/images and their annotations to out/annotations.json."""
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    dataset = coco_dataset(scenes)
    for scene, entry in zip(scenes, dataset["images"], strict=True):  # type: ignore[call-overload]
        Image.fromarray(scene.image).save(images / entry["file_name"])
    annotations = out / "annotations.json"
    annotations.write_text(json.dumps(dataset))
    return annotations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=20, help="how many held-out scenes")
    parser.add_argument("--start", type=int, default=0, help="index of the first held-out seed")
    parser.add_argument("--out", type=Path, default=Path("data/shapes-eval"))
    args = parser.parse_args()
    scenes = held_out_scenes(args.scenes, args.start)
    annotations = export(scenes, args.out)
    objects = sum(len(s.objects) for s in scenes)
    print(f"wrote {len(scenes)} scenes ({objects} objects) to {args.out}/images and {annotations}")
    print(f"vcompare evaluate {args.out}/images --annotations {annotations}")


if __name__ == "__main__":
    main()
