"""Train the shapes Keypoint R-CNN (triangle corners) on generated scenes (CPU, reproducible).

    python -m shapes.train_keypoints --iterations 4500 --out visioncompare/shapes_models/weights

Starts from the shipped shapes Mask R-CNN (or `--detector`): its backbone and RPN are
copied and frozen, its box head is copied and fine-tuned, its box predictor's background
and triangle rows become the two-class predictor, and the keypoint head learns from
scratch. Triangles are the only class; every triangle carries its three corners in the
canonical order of `shapes.scenes.TRIANGLE_KEYPOINTS`.

Writes keypointrcnn_shapes.pth (a state dict in fp16) and keypointrcnn_shapes.json with
the hyper-parameters, the training time and the held-out keypoint metrics, measured on
the fp16 weights that ship.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from torchvision.models.detection import KeypointRCNN

from shapes.evaluation import TRIANGLE_ID, detections, keypoint_metrics
from shapes.scenes import EVAL_SEEDS, TRAIN_SEEDS, TRIANGLE_KEYPOINTS, Scene, corner_visibility, generate_scene
from shapes.stages import load_stage, write_card
from shapes.train_maskrcnn import (
    add_training_arguments,
    make_optimizer,
    predict,
    seed_everything,
    targets_of,
    to_tensor,
    warmup_cosine,
)
from visioncompare.maskrcnn.categories import SHAPES_KEYPOINT_CATEGORIES
from visioncompare.maskrcnn.settings import PRESETS
from visioncompare.runtime.weights import sha256_of
from visioncompare.shapes_models.cards import WEIGHTS_DIR
from visioncompare.shapes_models.maskrcnn import build_shapes_keypointrcnn

CLASSES = SHAPES_KEYPOINT_CATEGORIES  # background, triangle: the label set the service gives these weights
FROZEN = ("backbone.", "rpn.")  # shared with the Mask R-CNN and left as it learned them
TRAINED_LOSSES = ("loss_classifier", "loss_box_reg", "loss_keypoint")
SCORE_THRESHOLD = float(PRESETS["shapes"]["score_threshold"])  # as served; for the corner errors


def build() -> KeypointRCNN:
    return build_shapes_keypointrcnn(num_classes=len(CLASSES), num_keypoints=len(TRIANGLE_KEYPOINTS))


def from_detector(model: torch.nn.Module, detector: dict[str, torch.Tensor]) -> None:
    """Copy the detector's backbone, RPN and box head; keep its background and triangle rows."""
    state = model.state_dict()
    copied = {k: v for k, v in detector.items() if k in state and v.shape == state[k].shape and "predictor" not in k}
    rows = [0, TRIANGLE_ID]
    prefix = "roi_heads.box_predictor."
    copied[prefix + "cls_score.weight"] = detector[prefix + "cls_score.weight"][rows]
    copied[prefix + "cls_score.bias"] = detector[prefix + "cls_score.bias"][rows]
    boxes_w = detector[prefix + "bbox_pred.weight"].reshape(-1, 4, state[prefix + "bbox_pred.weight"].shape[1])
    copied[prefix + "bbox_pred.weight"] = boxes_w[rows].reshape(-1, boxes_w.shape[2])
    copied[prefix + "bbox_pred.bias"] = detector[prefix + "bbox_pred.bias"].reshape(-1, 4)[rows].reshape(-1)
    missing = [k for k in state if k not in copied and not k.startswith("roi_heads.keypoint_")]
    if missing:
        raise ValueError(f"the detector lacks {missing[:5]}: is it the shapes Mask R-CNN?")
    model.load_state_dict(copied, strict=False)


def keypoint_targets(scene: Scene) -> dict[str, torch.Tensor]:
    triangles = [o for o in scene.objects if o.corners]
    boxes = targets_of(scene)["boxes"][[i for i, o in enumerate(scene.objects) if o.corners]]
    keypoints = [[(x, y, v) for (x, y), v in zip(o.corners, corner_visibility(o), strict=True)] for o in triangles]
    return {
        "boxes": boxes,
        "labels": torch.ones(len(triangles), dtype=torch.int64),
        "keypoints": torch.tensor(keypoints, dtype=torch.float32).reshape(-1, len(TRIANGLE_KEYPOINTS), 3),
    }


def scenes_with_triangles(first_seed: int, count: int) -> tuple[list[Scene], int]:
    """The next `count` scenes from `first_seed` on that hold a triangle, and the seed after them."""
    scenes: list[Scene] = []
    seed = first_seed
    while len(scenes) < count:
        scene = generate_scene(TRAIN_SEEDS[seed])
        seed += 1
        if any(o.corners for o in scene.objects):
            scenes.append(scene)
    return scenes, seed


def evaluate_model(model: torch.nn.Module, scenes: list[Scene]) -> dict[str, float | None]:
    outputs = predict(model, scenes)
    results = detections(scenes, outputs, category_ids=[0, TRIANGLE_ID])
    return keypoint_metrics(scenes, results, SCORE_THRESHOLD)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_training_arguments(parser, iterations=4500, lr=0.01, warmup=100)
    parser.add_argument(
        "--detector",
        type=Path,
        default=WEIGHTS_DIR / "maskrcnn_shapes.pth",
        help="shapes Mask R-CNN weights to start from",
    )
    parser.add_argument("--init", type=Path, help="continue from these keypoint weights instead")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args()
    seed_everything(args.seed, args.threads)

    model = build()
    init_card = None
    if args.init is not None:
        state, init_card = load_stage(args.init)
        model.load_state_dict(state)
        detector_sha256 = (init_card or {}).get("detector_sha256")
    else:
        detector, _ = load_stage(args.detector)
        from_detector(model, detector)
        detector_sha256 = sha256_of(args.detector)
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(FROZEN))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, args)
    lr_at = warmup_cosine(args)

    start, seed = time.time(), args.seed_offset
    model.train()
    model.backbone.eval()  # frozen: its BatchNorm statistics stay the detector's
    for step in range(args.iterations):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        scenes, seed = scenes_with_triangles(seed, args.batch_size)
        losses = model([to_tensor(s.image) for s in scenes], [keypoint_targets(s) for s in scenes])
        loss = sum(losses[k] for k in TRAINED_LOSSES)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        if step % 50 == 0 or step == args.iterations - 1:
            parts = " ".join(f"{k.removeprefix('loss_')}={losses[k].item():.3f}" for k in TRAINED_LOSSES)
            print(
                f"step {step:5d} lr {lr_at(step):.4f} loss {loss.item():.3f} ({parts}) {time.time() - start:.0f}s",
                flush=True,
            )
    train_seconds = time.time() - start

    # Ship fp16 and measure what ships: the service loads these values into fp32 parameters.
    shipped: dict[str, Any] = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    model.load_state_dict(shipped)
    eval_scenes = [generate_scene(s) for s in EVAL_SEEDS[: args.eval_scenes]]
    metrics = evaluate_model(model, eval_scenes)
    print(json.dumps(metrics), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "keypointrcnn_shapes.pth"
    torch.save(shipped, path)
    write_card(
        path,
        model="torchvision KeypointRCNN on the shapes Mask R-CNN's backbone, RPN and box head "
        "(backbone and RPN frozen), keypoint head trained from scratch",
        data=f"shapes world: {args.iterations * args.batch_size} generated scenes with a triangle "
        f"(seeds {args.seed_offset} to {seed - 1})",
        hyperparameters={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        metrics={
            **metrics,
            "eval_scenes": args.eval_scenes,
            "score_threshold": SCORE_THRESHOLD,
            "train_seconds": round(train_seconds),
        },
        classes=list(CLASSES[1:]),
        keypoints=list(TRIANGLE_KEYPOINTS),
        detector_sha256=detector_sha256,  # the Mask R-CNN whose backbone and RPN these weights carry
        continued_from=init_card,
    )


if __name__ == "__main__":
    main()
