"""SAM-CLIP latency and memory, in process through SamClipModel.predict (the service path minus gRPC).

    python -m bench.samclip                      # vit_b + ViT-B-32, random weights, defaults
    python -m bench.samclip --points-per-side 32 # the service's default grid also on CPU (minutes)

Prints:
  - prompted segmentation latency on a new image (image encoder + decoder) against a cached
    image (decoder only), and their ratio;
  - classification latency for 1, 10 and 100 labels with the text-embedding cache cold and warm;
  - automatic segmentation latency (SamAutomaticMaskGenerator, default settings; on CPU the grid is
    reduced to 8 x 8 points by default, said so in the output, with an estimate for the default 32 x 32);
  - the process's peak resident memory.
Random weights are fine for timing: the work is the same as with trained weights.
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import time
from collections.abc import Callable

import numpy as np

from visioncompare.runtime.types import (
    AutomaticOptions,
    Box,
    InferenceRequest,
    Point,
    Prediction,
    Task,
    TaskOptions,
)
from visioncompare.samclip.model import SamClipModel
from visioncompare.samclip.settings import SamClipSettings

WORDS = (
    "person bicycle car motorcycle airplane bus train truck boat light hydrant sign meter bench bird cat dog horse "
    "sheep cow elephant bear zebra giraffe backpack umbrella handbag tie suitcase frisbee skis snowboard ball kite "
    "bat glove skateboard surfboard racket bottle glass cup fork knife spoon bowl banana apple sandwich orange "
    "broccoli carrot hotdog pizza donut cake chair couch plant bed table toilet tv laptop mouse remote keyboard "
    "phone microwave oven toaster sink refrigerator book clock vase scissors bear drier toothbrush tree house road "
    "river mountain cloud sky grass flower rock sand snow water window door wall floor roof fence bridge tower lamp"
).split()
WORDS = list(dict.fromkeys(WORDS))
#: On CPU the mask decoder takes seconds per 64-point batch; the default grid (32 x 32 = 16 batches)
#: alone would take minutes, so the default run measures one batch and extrapolates.
CPU_POINTS_PER_SIDE = 8


def scene(seed: int, width: int, height: int) -> np.ndarray:
    """A synthetic photo-like image: a gradient with a few filled shapes."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = np.linspace(40, 200, width, dtype=np.uint8)[None, :, None]
    for _ in range(6):
        x, y = rng.integers(0, width - 40), rng.integers(0, height - 40)
        w, h = rng.integers(30, width // 3), rng.integers(30, height // 3)
        image[y : y + h, x : x + w] = rng.integers(0, 256, 3)
    return image


def timed(fn: Callable[[], Prediction | Exception]) -> float:
    start = time.perf_counter()
    answer = fn()
    if not isinstance(answer, Prediction):
        raise SystemExit(f"bench request failed: {answer}")
    return (time.perf_counter() - start) * 1000.0


def counted(answer: Prediction | Exception, into: list[int]) -> Prediction | Exception:
    if isinstance(answer, Prediction):
        into.append(len(answer.instances))
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sam-variant", default="vit_b")
    parser.add_argument("--clip-model", default="ViT-B-32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--iterations", type=int, default=2, help="repeats per measurement; median reported")
    parser.add_argument("--labels", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument(
        "--points-per-side",
        type=int,
        default=None,
        help=f"automatic grid; default: {CPU_POINTS_PER_SIDE} on CPU, else the service's",
    )
    args = parser.parse_args()

    settings = SamClipSettings(
        backend="composed",
        sam_variant=args.sam_variant,
        clip_model=args.clip_model,
        sam_weights="random",
        clip_pretrained="random",
        device=args.device,
        metrics_port=None,
    )
    model = SamClipModel(settings)
    start = time.perf_counter()
    model.load()
    loaded_s = time.perf_counter() - start
    caps = model.capabilities()
    print(f"model: {caps.card.name}; {caps.card.parameter_count / 1e6:.1f} M parameters")
    for part in caps.runtime.components:
        print(f"  {part.name}: {part.parameter_count / 1e6:.1f} M, weights={part.weights}")
    runtime = caps.runtime
    print(f"device={runtime.device} precision={runtime.precision}; load {loaded_s:.1f} s (no warm-up)")
    print(f"image {args.width}x{args.height}, median of {args.iterations} runs\n")

    def ask(task: Task, image: np.ndarray, options: TaskOptions) -> Prediction | Exception:
        return model.predict([InferenceRequest(task, image, options)])[0]

    # prompted segmentation: new image vs cached embedding
    prompt = TaskOptions(
        points=(Point(args.width / 2, args.height / 2),),
        boxes=(Box(args.width / 4, args.height / 4, 3 * args.width / 4, 3 * args.height / 4),),
        multimask_output=True,
    )
    new, cached = [], []
    for i in range(args.iterations):
        image = scene(100 + i, args.width, args.height)
        new.append(timed(lambda image=image: ask(Task.PROMPTED_SEGMENTATION, image, prompt)))  # type: ignore[misc]
        cached.append(timed(lambda image=image: ask(Task.PROMPTED_SEGMENTATION, image, prompt)))  # type: ignore[misc]
    new_ms, cached_ms = statistics.median(new), statistics.median(cached)
    print("prompted segmentation (1 point + 1 box, multimask):")
    print(f"  new image    {new_ms:9.1f} ms  (SAM image encoder + mask decoder)")
    print(f"  cached image {cached_ms:9.1f} ms  (mask decoder only)")
    print(f"  ratio        {new_ms / cached_ms:9.1f}x\n")

    # classification vs number of labels, text cache cold and warm
    backend = model.backend
    image = scene(7, args.width, args.height)
    templates = len(settings.prompt_templates)
    print(f"zero-shot classification ({templates} templates per label; cold once, warm median):")
    print(f"  {'labels':>6} {'cold ms':>10} {'warm ms':>10}")
    timed(
        lambda: ask(Task.ZERO_SHOT_CLASSIFICATION, scene(6, args.width, args.height), TaskOptions(labels=("warm-up",)))
    )
    for n in args.labels:
        labels = tuple(f"{WORDS[i % len(WORDS)]} {i // len(WORDS) or ''}".strip() for i in range(n))
        classify = TaskOptions(labels=labels)
        backend.clear_caches()
        cold = timed(lambda o=classify: ask(Task.ZERO_SHOT_CLASSIFICATION, image, o))  # type: ignore[misc]
        warm = [
            timed(lambda o=classify: ask(Task.ZERO_SHOT_CLASSIFICATION, image, o))  # type: ignore[misc]
            for _ in range(args.iterations)
        ]
        print(f"  {n:>6} {cold:10.1f} {statistics.median(warm):10.1f}")
    print()

    # automatic segmentation
    default_pps = settings.points_per_side
    pps = args.points_per_side or (CPU_POINTS_PER_SIDE if runtime.device == "cpu" else default_pps)
    automatic = TaskOptions(automatic=AutomaticOptions(points_per_side=pps))
    backend.clear_caches()
    image = scene(8, args.width, args.height)
    auto_new = timed(lambda: ask(Task.AUTOMATIC_SEGMENTATION, image, automatic))
    masks: list[int] = []
    auto_cached = timed(lambda: counted(ask(Task.AUTOMATIC_SEGMENTATION, image, automatic), masks))
    batches = math.ceil(pps * pps / settings.points_per_batch)
    note = "the service default" if pps == default_pps else f"REDUCED from the service default {default_pps}"
    print(f"automatic segmentation (points_per_side={pps}, {note}; other settings default):")
    print(f"  new image    {auto_new:9.1f} ms")
    print(
        f"  cached image {auto_cached:9.1f} ms  ({batches} decoder batches of {settings.points_per_batch} points, "
        f"{masks[0]} masks kept)"
    )
    if pps != default_pps:
        per_batch = auto_cached / batches
        full = math.ceil(default_pps * default_pps / settings.points_per_batch)
        estimate = (new_ms - cached_ms) + full * per_batch
        print(
            f"  ESTIMATE at the default {default_pps} ({full} batches): ~{estimate / 1000:.0f} s on a new image "
            f"(encoder + {full} x {per_batch / 1000:.1f} s); measure with --points-per-side {default_pps}"
        )
    print(
        f"  note: of {pps * pps * 3} candidate masks only those with predicted IoU > {settings.pred_iou_thresh} are\n"
        "  upsampled and scored; random weights keep few, trained weights more (more post-processing).\n"
    )

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
