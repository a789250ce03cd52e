"""torch vs ONNX Runtime, per model and task, on CPU, in one run; and the SAM ViT-B image
encoder's GFLOP/s as a share of a 2048 x 2048 fp32 matmul measured in the same run.

    .venv/bin/python -m bench.engines                 # everything (about 10-20 min on 2 cores)
    .venv/bin/python -m bench.engines --only shapes   # the shapes models only (a minute)
    .venv/bin/python -m bench.engines --only sam      # the SAM ViT-B encoder share only
    .venv/bin/python -m bench.engines --only decoder  # SAM's prompt encoder + mask decoder (shapes, ViT-B)

Full-size architectures with random weights (the figures are compute, not accuracy):
Mask R-CNN R50-FPN v1 at 800/1333 on an 800 x 1066 image (10 detections an image, so the
mask head runs on 10 RoIs), Keypoint R-CNN R50-FPN likewise, SAM ViT-B at 1024 (the image
encoder; its relative-position tables drawn from N(0, 0.02) rather than left at zero) and
CLIP ViT-B-32 (image tower at 224, text tower on 8 prompts); and the shipped shapes models.

Each latency is the best of --repeat runs after one warm-up run, in one process with
torch.set_num_threads(--threads) and ONNX Runtime on as many intra-op threads, spinning off
(as the services run). The matmul rate is measured before and after each SAM encoder timing
and the share is against their mean (each a sustained 2 s of back-to-back products), so a
machine shared with other work (whose load moves both) still gives a fair ratio. The Mask
R-CNN and SAM-CLIP rows go through the services' model classes (pre- and postprocessing
included, which stay in torch in both engines); the SAM and CLIP rows time the networks alone,
the SAM prompt encoder + mask decoder rows the two modules as the backends call them.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from visioncompare.runtime.engines import CPU, onnxruntime_module, ort_inputs, session_options, torch_export

ROOT = Path(__file__).resolve().parent.parent
MATMUL_N = 2048


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_rate(seconds: float = 2.0) -> float:
    """Sustained GFLOP/s of 2048 x 2048 fp32 matmuls, back to back for `seconds` (not the best
    single one: on a shared machine a 50 ms product can land in a quiet moment that a 10 s
    encoder run does not get)."""
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    with torch.inference_mode():
        a @ b
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            count += 1
        elapsed = time.perf_counter() - start
    return 2 * MATMUL_N**3 * count / elapsed / 1e9


def ort_session(path: Path, threads: int) -> Any:
    ort = onnxruntime_module()  # telemetry off, as in the services
    return ort.InferenceSession(str(path), sess_options=session_options(threads), providers=[CPU])


def row(model: str, task: str, torch_s: float, ort_s: float | None, note: str = "") -> None:
    ort_text = f"{ort_s * 1000:10.1f}" if ort_s is not None else f"{'-':>10}"
    ratio = f"{torch_s / ort_s:6.2f}x" if ort_s else f"{'-':>7}"
    faster = ("onnxruntime" if ort_s < torch_s else "torch") if ort_s else ""
    print(f"{model:34s} {task:26s} {torch_s * 1000:10.1f} {ort_text} {ratio} {faster:12s} {note}", flush=True)


def header() -> None:
    print(f"{'model':34s} {'task':26s} {'torch ms':>10} {'ORT ms':>10} {'t/ORT':>7} {'faster':12s} note")


# --- Mask R-CNN through the service's model --------------------------------------------------


def maskrcnn_rows(args: argparse.Namespace, cache_dir: Path, full: bool) -> None:
    from shapes.scenes import EVAL_SEEDS, generate_scene
    from visioncompare.maskrcnn.model import MaskRCNNModel
    from visioncompare.maskrcnn.settings import MaskRCNNSettings
    from visioncompare.runtime.types import InferenceRequest, Task

    if full:
        image = np.random.default_rng(0).integers(0, 256, (800, 1066, 3), dtype=np.uint8)
        base = {"weights": "random", "variant": "v1", "min_size": 800, "max_size": 1333, "score_threshold": 0.0,
                "max_detections": 10}  # fmt: skip
        configs = [("Mask R-CNN R50-FPN v1 (random)", base, [Task.OBJECT_DETECTION, Task.INSTANCE_SEGMENTATION])]
        if args.keypoints:
            configs.append(("Keypoint R-CNN R50-FPN (random)",
                            {**base, "keypoints_enabled": True, "keypoint_weights": "random"},
                            [Task.KEYPOINT_DETECTION]))  # fmt: skip
        repeat = max(1, args.repeat // 2)
    else:
        image = generate_scene(EVAL_SEEDS[0]).image
        configs = [("Mask R-CNN shapes (+ keypoints)", {}, [Task.INSTANCE_SEGMENTATION, Task.KEYPOINT_DETECTION])]
        repeat = args.repeat * 4
    for name, settings, tasks in configs:
        models = {}
        for engine in ("torch", "onnxruntime"):
            start = time.perf_counter()
            m = MaskRCNNModel(MaskRCNNSettings(metrics_port=None, cache_dir=cache_dir, engine=engine, **settings))
            m.load()
            models[engine] = m
            if engine == "onnxruntime":
                exported = sum(f.exported for f in m.onnx_files)
                print(f"# {name}: ONNX Runtime ready in {time.perf_counter() - start:.1f} s "
                      f"({exported} of {len(m.onnx_files)} files exported now)", flush=True)  # fmt: skip
        for task in tasks:
            request = [InferenceRequest(task, image)]
            found = {e: len(m.predict(request)[0].instances) for e, m in models.items()}  # type: ignore[union-attr]
            times = {e: best_of(lambda m=m, r=request: m.predict(r), repeat) for e, m in models.items()}
            row(name, task.name.lower(), times["torch"], times["onnxruntime"],
                f"{image.shape[1]}x{image.shape[0]}, {found['torch']}/{found['onnxruntime']} instances")  # fmt: skip


# --- SAM-CLIP through the service's model ------------------------------------------------------------


def samclip_rows(args: argparse.Namespace, cache_dir: Path) -> None:
    """The SAM-CLIP service's default configuration (its shipped shapes weights), per task;
    its caches emptied before each run, so that every run encodes the image."""
    from shapes.scenes import CLASSES, EVAL_SEEDS, generate_scene
    from visioncompare.runtime.types import InferenceRequest, Point, Task, TaskOptions
    from visioncompare.samclip.model import SamClipModel
    from visioncompare.samclip.settings import SamClipSettings

    image = generate_scene(EVAL_SEEDS[0]).image
    labels = tuple(CLASSES)
    tasks = [
        (Task.ZERO_SHOT_CLASSIFICATION, TaskOptions(labels=labels)),
        (Task.PROMPTED_SEGMENTATION, TaskOptions(points=(Point(60, 60),), multimask_output=True)),
        (Task.AUTOMATIC_SEGMENTATION, TaskOptions()),
        (Task.INSTANCE_SEGMENTATION, TaskOptions(labels=labels)),
        (Task.SEMANTIC_SEGMENTATION, TaskOptions(labels=labels)),
    ]
    for backend in ("merged", "composed"):
        models = {}
        for engine in ("torch", "onnxruntime"):
            m = SamClipModel(SamClipSettings(metrics_port=None, backend=backend, engine=engine, cache_dir=cache_dir))
            m.load()
            models[engine] = m
        for task, options in tasks:
            request = [InferenceRequest(task, image, options)]

            def run(m: Any = None, r: Any = request) -> None:
                m.backend.clear_caches()
                m.predict(r)

            times = {e: best_of(functools.partial(run, m), args.repeat * 2) for e, m in models.items()}
            row(f"SAM-CLIP {backend} shapes", task.name.lower(), times["torch"], times["onnxruntime"],
                f"{image.shape[1]}x{image.shape[0]}, caches emptied")  # fmt: skip


# --- SAM ------------------------------------------------------------------------------------------


def sam_rows(args: argparse.Namespace, variant: str, tmp: Path) -> None:
    from visioncompare.samclip.architectures import build_sam
    from visioncompare.samclip.attention import use_chunked_mlp, use_sdpa_attention

    torch.manual_seed(0)
    sam = build_sam(variant).eval()
    if variant != "shapes":
        with torch.no_grad():
            for block in sam.image_encoder.blocks:
                block.attn.rel_pos_h.normal_(0, 0.02)
                block.attn.rel_pos_w.normal_(0, 0.02)
    else:
        from visioncompare.shapes_models.cards import verified_path

        sam.load_state_dict(torch.load(verified_path("sam_shapes"), map_location="cpu", weights_only=True))
    eager = sam.image_encoder
    fused = copy.deepcopy(eager)
    use_sdpa_attention(fused)
    use_chunked_mlp(fused)
    size = eager.img_size
    x = torch.randn(1, 3, size, size)
    repeat = args.repeat if variant == "shapes" else max(1, args.repeat // 2)
    name = f"SAM {variant} image encoder"
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            reference = eager(x)
        gflop = counter.get_total_flops() / 1e9
        fused_out = fused(x)
    cos = torch.nn.functional.cosine_similarity(reference.flatten(), fused_out.flatten(), dim=0).item()
    path = tmp / f"sam_{variant}_encoder.onnx"
    start = time.perf_counter()
    torch_export(fused, (x,), path, input_names=["images"], output_names=["embeddings"],
                 dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}})  # fmt: skip
    export_s = time.perf_counter() - start
    session = ort_session(path, args.threads)
    feed = ort_inputs(session, x)
    ort_out = torch.from_numpy(session.run(None, feed)[0])
    ort_cos = torch.nn.functional.cosine_similarity(reference.flatten(), ort_out.flatten(), dim=0).item()
    timings: dict[str, tuple[float, float, float]] = {}
    with torch.inference_mode():
        for label, fn in (("torch eager", lambda: eager(x)), ("torch SDPA", lambda: fused(x)),
                          ("onnxruntime", lambda: session.run(None, feed))):  # fmt: skip
            before = matmul_rate()
            seconds = best_of(fn, repeat)
            after = matmul_rate()
            timings[label] = (seconds, before, after)
    eager_s = timings["torch eager"][0]
    row(name, "embed (eager attention)", eager_s, timings["onnxruntime"][0], f"{size} px")
    row(name, "embed (SDPA attention)", timings["torch SDPA"][0], timings["onnxruntime"][0],
        f"{eager_s / timings['torch SDPA'][0]:.2f}x eager; cosine SDPA {cos:.6f}, ORT {ort_cos:.6f}")  # fmt: skip
    print(f"# {name}: {gflop:.1f} GFLOP a {size} px image; ONNX export {export_s:.0f} s "
          f"({path.stat().st_size / 1e6:.0f} MB)")  # fmt: skip
    for label, (seconds, before, after) in timings.items():
        rate = gflop / seconds
        mm = (before + after) / 2
        print(f"#   {label:12s} {seconds:7.2f} s  {rate:6.1f} GFLOP/s  matmul {before:.0f}/{after:.0f} GFLOP/s  "
              f"share {rate / mm:.0%}", flush=True)  # fmt: skip
    if args.profile:
        from torch.profiler import profile

        with torch.inference_mode(), profile() as prof:
            fused(x)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8, max_name_column_width=48))


# --- SAM's prompt encoder and mask decoder -----------------------------------------------------


def decoder_rows(args: argparse.Namespace, variant: str, tmp: Path) -> None:
    """SAM's prompt encoder + mask decoder as the backends call them: torch's two modules against
    the ONNX Runtime stand-ins (one graph, visioncompare.samclip.onnx_engine), on one image embedding,
    for a point (three masks), four boxes, and a 64-point batch of the automatic generator."""
    from visioncompare.runtime.engines import OrtRunner, plan_providers
    from visioncompare.samclip.architectures import build_sam
    from visioncompare.samclip.onnx_engine import Exporter, install_sam_decoder

    torch.manual_seed(0)
    sam = build_sam(variant).eval()
    if variant == "shapes":
        from visioncompare.shapes_models.cards import verified_path

        sam.load_state_dict(torch.load(verified_path("sam_shapes"), map_location="cpu", weights_only=True))
    reference = copy.deepcopy(sam)
    plan, _ = plan_providers("cpu")
    start = time.perf_counter()
    install_sam_decoder(sam, Exporter(tmp / "decoder-cache", OrtRunner(plan, args.threads), "bench"), "0" * 64, variant)
    export_s = time.perf_counter() - start
    pe = reference.prompt_encoder
    side = float(max(pe.input_image_size))
    embedding = torch.randn(1, pe.embed_dim, *pe.image_embedding_size)
    grid = torch.rand(64, 1, 2, generator=torch.Generator().manual_seed(0)) * side
    cases = [
        ("1 point, 3 masks", {"points": (torch.tensor([[[side / 3, side / 2]]]), torch.tensor([[1]])), "boxes": None},
         True),
        ("4 boxes, 1 mask each", {"points": None, "boxes": torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.3, 0.2, 0.9, 0.7],
                                                                          [0.0, 0.0, 1.0, 1.0], [0.6, 0.6, 0.8, 0.9]])
                                  * side}, False),
        ("64 points (automatic batch)", {"points": (grid, torch.ones(64, 1, dtype=torch.int)), "boxes": None}, True),
    ]  # fmt: skip

    def decode(model: Any, prompts: dict[str, Any], multimask: bool) -> Any:
        sparse, dense = model.prompt_encoder(masks=None, **prompts)
        return model.mask_decoder(embedding, model.prompt_encoder.get_dense_pe(), sparse, dense, multimask)

    name = f"SAM {variant} prompt+mask decoder"
    print(f"# {name}: ONNX export {export_s:.1f} s", flush=True)
    with torch.inference_mode():
        for what, prompts, multimask in cases:
            (a, ia), (b, ib) = decode(reference, prompts, multimask), decode(sam, prompts, multimask)
            agree = float(((a > 0) == (b > 0)).float().mean())
            t = best_of(lambda p=prompts, mm=multimask: decode(reference, p, mm), args.repeat * 4)
            o = best_of(lambda p=prompts, mm=multimask: decode(sam, p, mm), args.repeat * 4)
            diff = float((ia - ib).abs().max())
            row(name, what, t, o, f"mask pixels agree {agree:.5f}, IoU pred. max diff {diff:.1e}")


# --- CLIP -----------------------------------------------------------------------------------------


class _ImageTower(torch.nn.Module):
    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(images)


class _TextTower(torch.nn.Module):
    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(tokens)


def clip_rows(args: argparse.Namespace, name: str, tmp: Path) -> None:
    from visioncompare.samclip.architectures import build_clip

    torch.manual_seed(0)
    clip, tokenizer = build_clip(name)
    clip.eval()
    if name == "shapes":
        from visioncompare.shapes_models.cards import verified_path

        clip.load_state_dict(torch.load(verified_path("clip_shapes"), map_location="cpu", weights_only=True))
    size = clip.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else size
    images = torch.randn(1, 3, size, size)
    crops = torch.randn(16, 3, size, size)
    tokens = tokenizer([f"a photo of a {w}." for w in ("cat", "dog", "car", "tree", "cup", "star", "cross", "sky")])
    label = f"CLIP {name}"
    for tower, module, inputs in (("image", _ImageTower(clip), [images, crops]), ("text", _TextTower(clip), [tokens])):
        path = tmp / f"clip_{name}_{tower}.onnx"
        axis = "batch"
        torch_export(module, (inputs[0],), path, input_names=["x"], output_names=["embeddings"],
                     dynamic_axes={"x": {0: axis}, "embeddings": {0: axis}})  # fmt: skip
        session = ort_session(path, args.threads)
        for x in inputs:
            with torch.inference_mode():
                expected = module(x)
            got = torch.from_numpy(session.run(None, ort_inputs(session, x))[0])
            cos = torch.nn.functional.cosine_similarity(expected, got, dim=-1).min().item()
            feed = ort_inputs(session, x)
            with torch.inference_mode():
                t = best_of(lambda x=x, m=module: m(x), args.repeat * 2)
            o = best_of(lambda feed=feed, s=session: s.run(None, feed), args.repeat * 2)
            what = f"{tower} tower x{x.shape[0]}"
            row(label, what, t, o, f"min cosine {cos:.6f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="maskrcnn,sam,decoder,clip,shapes",
                        help="comma-separated: maskrcnn, sam, decoder, clip, shapes (default: all)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keypoints", action="store_true", help="also Keypoint R-CNN R50-FPN (another R50 export)")
    parser.add_argument("--profile", action="store_true", help="profile the SDPA SAM encoder once")
    parser.add_argument("--cache-dir", type=Path, default=None, help="the services' ONNX cache (default: a temp dir)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads; {os.cpu_count()} CPUs; "
          f"matmul {MATMUL_N}^2 fp32 {matmul_rate():.0f} GFLOP/s", flush=True)  # fmt: skip
    header()
    with tempfile.TemporaryDirectory(prefix="vc-engines-") as tmp_name:
        tmp = Path(tmp_name)
        cache_dir = args.cache_dir or tmp / "cache"
        if "shapes" in only:
            maskrcnn_rows(args, cache_dir, full=False)
            samclip_rows(args, cache_dir)
            sam_rows(args, "shapes", tmp)
            decoder_rows(args, "shapes", tmp)
            clip_rows(args, "shapes", tmp)
        if "maskrcnn" in only:
            maskrcnn_rows(args, cache_dir, full=True)
        if "clip" in only:
            clip_rows(args, "ViT-B-32", tmp)
        if "decoder" in only:
            if "shapes" not in only:
                decoder_rows(args, "shapes", tmp)
            decoder_rows(args, "vit_b", tmp)
        if "sam" in only:
            sam_rows(args, "vit_b", tmp)
    print(f"# matmul {MATMUL_N}^2 fp32 at the end: {matmul_rate():.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
