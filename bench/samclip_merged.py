"""Merged SAM-CLIP vs the composition (Segment Anything + OpenCLIP), in one run.

    python -m bench.samclip_merged [--repeats 5] [--image visioncompare/gateway/samples/shapes-scene.png]

The merged backend (with SAM's point grid as open-vocabulary proposals, as served; with
text-prompted proposals; with masks named from their crops, SAMCLIP_MERGED_REGIONS=crops) and
the composition, with the service's settings (shapes weights by
default; any SAMCLIP_* variable applies to all), each in a process of its own so that its
peak memory is its own. Prints, per configuration: parameters, peak RSS after loading and
after the runs, and the median latency of every task on one image, with the embedding cache
emptied before each request (the cost of a new image: one backbone pass included). Then
composed / merged ratios, and whether the issue's goal holds: open-vocabulary instance
segmentation at least 3x faster merged.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parent.parent
LABELS = ("circle", "square", "triangle", "star", "cross")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


CONFIGS: dict[str, tuple[Literal["merged", "composed"], Literal["grid", "text"], Literal["tokens", "crops"]]] = {
    # name -> (backend, open-vocabulary proposals, how the merged model names a mask)
    "merged": ("merged", "grid", "tokens"),
    "merged, text proposals": ("merged", "text", "tokens"),
    "merged, masks by crops": ("merged", "grid", "crops"),
    "composed": ("composed", "grid", "tokens"),
}


def measure(config: str, image_path: Path, repeats: int) -> dict[str, object]:
    """Run in a child process: load one backend, time every task."""
    import numpy as np
    import torch
    from PIL import Image

    from visioncompare.runtime.types import Box, InferenceRequest, Point, Task, TaskOptions
    from visioncompare.samclip.model import SamClipModel
    from visioncompare.samclip.settings import SamClipSettings

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    image = np.asarray(Image.open(image_path).convert("RGB"))
    h, w = image.shape[:2]
    backend, proposals, regions = CONFIGS[config]
    model = SamClipModel(
        SamClipSettings(backend=backend, open_vocab_proposals=proposals, merged_regions=regions, metrics_port=None)
    )
    model.load()
    model.warmup()
    loaded = peak_rss_mib()
    tasks = {
        "classification": (Task.ZERO_SHOT_CLASSIFICATION, TaskOptions(labels=LABELS)),
        "prompted (point)": (Task.PROMPTED_SEGMENTATION, TaskOptions(points=(Point(w / 2, h / 2),))),
        "prompted (box)": (Task.PROMPTED_SEGMENTATION, TaskOptions(boxes=(Box(w / 4, h / 4, 3 * w / 4, 3 * h / 4),))),
        "automatic": (Task.AUTOMATIC_SEGMENTATION, TaskOptions()),
        "semantic": (Task.SEMANTIC_SEGMENTATION, TaskOptions(labels=LABELS)),
        "object detection": (Task.OBJECT_DETECTION, TaskOptions(labels=LABELS)),
        "instance segmentation": (Task.INSTANCE_SEGMENTATION, TaskOptions(labels=LABELS)),
    }
    latency = {}
    for name, (task, options) in tasks.items():
        times = []
        for _ in range(repeats):
            model.backend.sam_part.cache.clear()  # type: ignore[attr-defined]
            start = time.perf_counter()
            [answer] = model.predict([InferenceRequest(task, image, options)])
            times.append((time.perf_counter() - start) * 1000)
            if isinstance(answer, Exception):
                raise SystemExit(f"{config} {name}: {answer}")
        latency[name] = round(float(np.median(times)), 1)
    caps = model.capabilities()
    return {
        "config": config,
        "model": caps.card.name,
        "weights": caps.runtime.weights,
        "parameters": caps.card.parameter_count,
        "components": {c.name: c.parameter_count for c in caps.runtime.components},
        "peak_rss_mib_loaded": round(loaded, 1),
        "peak_rss_mib_after_runs": round(peak_rss_mib(), 1),
        "latency_ms": latency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--image", type=Path, default=ROOT / "visioncompare" / "gateway" / "samples" / "shapes-scene.png"
    )
    parser.add_argument("--child", choices=list(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.image, args.repeats)))
        return
    figures = {}
    for config in CONFIGS:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.samclip_merged",
                "--child",
                config,
                "--repeats",
                str(args.repeats),
                "--image",
                str(args.image),
            ],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
        )
        if run.returncode:
            raise SystemExit(f"{config} failed:\n{run.stderr[-3000:]}")
        figures[config] = json.loads(run.stdout.strip().splitlines()[-1])
    print(json.dumps(figures, indent=2))
    print(f"\nimage: {args.image.name}; median of {args.repeats}, embedding cache emptied before each request")
    composed = figures["composed"]["latency_ms"]
    print(f"{'task':24}" + "".join(f"{c:>24}" for c in CONFIGS) + f"{'composed / merged':>20}")
    for task in composed:
        row = [figures[c]["latency_ms"][task] for c in CONFIGS]
        print(f"{task:24}" + "".join(f"{ms:22.1f}ms" for ms in row) + f"{composed[task] / row[0]:19.2f}x")
    print(f"{'parameters':24}" + "".join(f"{figures[c]['parameters']:24,}" for c in CONFIGS))
    print(f"{'peak RSS MiB':24}" + "".join(f"{figures[c]['peak_rss_mib_after_runs']:24}" for c in CONFIGS))
    for config in ("merged", "merged, text proposals", "merged, masks by crops"):
        speedup = composed["instance segmentation"] / figures[config]["latency_ms"]["instance segmentation"]
        verdict = "holds" if speedup >= 3 else "does not hold"
        print(f"goal: open-vocabulary instance segmentation >= 3x faster merged ({config}): {speedup:.2f}x, {verdict}")


if __name__ == "__main__":
    main()
