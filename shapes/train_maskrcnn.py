"""Train the shapes Mask R-CNN from scratch on generated scenes (CPU, reproducible).

    python -m shapes.train_maskrcnn --iterations 3000 --out visioncompare/shapes_models/weights

Writes maskrcnn_shapes.pth (a state dict), and maskrcnn_shapes.json with the
hyper-parameters, the training time and the held-out box/mask AP.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shapes.evaluation import coco_ap
from shapes.scenes import CLASSES, EVAL_SEEDS, TRAIN_SEEDS, Scene, generate_scene
from shapes.stages import load_stage, write_card
from visioncompare.shapes_models.cards import WEIGHTS_DIR
from visioncompare.shapes_models.maskrcnn import build_shapes_maskrcnn

NUM_CLASSES = len(CLASSES) + 1


def targets_of(scene: Scene) -> dict[str, torch.Tensor]:
    masks = np.stack([o.mask for o in scene.objects]).astype(np.uint8)
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.tensor([o.category_id for o in scene.objects], dtype=torch.int64),
        "masks": torch.from_numpy(masks),
    }


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float().div(255)


def predict(model: torch.nn.Module, scenes: list[Scene]) -> list[dict[str, Any]]:
    model.eval()
    with torch.inference_mode():
        return [model([to_tensor(s.image)])[0] for s in scenes]


def add_training_arguments(parser: argparse.ArgumentParser, *, iterations: int, lr: float, warmup: int) -> None:
    """What the R-CNN training scripts share: schedule, optimizer, seeds, threads, evaluation."""
    parser.add_argument("--iterations", type=int, default=iterations)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd", help="sgd: momentum 0.9")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-scenes", type=int, default=100)
    parser.add_argument("--seed-offset", type=int, default=0, help="first training scene seed")


def seed_everything(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)


def make_optimizer(params: list[torch.nn.Parameter], args: argparse.Namespace) -> torch.optim.Optimizer:
    if args.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    return torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)


def warmup_cosine(args: argparse.Namespace) -> Callable[[int], float]:
    """The learning rate at a step: a linear warm-up from 0.1% of --lr, then a cosine to 0."""

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (0.001 + 0.999 * step / args.warmup)
        progress = (step - args.warmup) / max(args.iterations - args.warmup, 1)
        return args.lr * 0.5 * (1 + math.cos(math.pi * progress))

    return lr_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_training_arguments(parser, iterations=3000, lr=0.02, warmup=200)
    parser.add_argument("--init", type=Path, help="continue from these weights (a state dict)")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args()
    seed_everything(args.seed, args.threads)

    model = build_shapes_maskrcnn(num_classes=NUM_CLASSES)
    init_card = None
    if args.init is not None:
        state, init_card = load_stage(args.init)
        model.load_state_dict(state)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, args)
    lr_at = warmup_cosine(args)

    start = time.time()
    model.train()
    for step in range(args.iterations):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        first = args.seed_offset + step * args.batch_size
        seeds = TRAIN_SEEDS[first : first + args.batch_size]
        scenes = [generate_scene(s) for s in seeds]
        scenes = [s for s in scenes if s.objects]
        losses = model([to_tensor(s.image) for s in scenes], [targets_of(s) for s in scenes])
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        if step % 50 == 0 or step == args.iterations - 1:
            parts = " ".join(f"{k.removeprefix('loss_')}={v.item():.3f}" for k, v in losses.items())
            print(
                f"step {step:5d} lr {lr_at(step):.4f} loss {loss.item():.3f} ({parts}) {time.time() - start:.0f}s",
                flush=True,
            )
    train_seconds = time.time() - start

    eval_scenes = [generate_scene(s) for s in EVAL_SEEDS[: args.eval_scenes]]
    metrics = coco_ap(eval_scenes, predict(model, eval_scenes))
    print(json.dumps(metrics), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "maskrcnn_shapes.pth"
    torch.save(model.state_dict(), path)
    write_card(
        path,
        model="torchvision MaskRCNN, narrow ResNet-style backbone + FPN (64 ch), trained from scratch",
        data=f"shapes world: {args.iterations * args.batch_size} generated scenes (seeds from {args.seed_offset})",
        hyperparameters={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        metrics={**metrics, "eval_scenes": args.eval_scenes, "train_seconds": round(train_seconds)},
        classes=list(CLASSES),
        continued_from=init_card,
    )


if __name__ == "__main__":
    main()
