"""Train the shapes CLIP contrastively on object crops, scenes and background patches.

    python -m shapes.train_clip --steps 1200 --out shapes/weights

Crops are made as the SAM-CLIP service makes them (the mask's box, outside the
mask filled, squared) and preprocessed by the service's own transform. Captions
use their own phrasings ("a small red triangle", "red triangle", "triangle"), so
that zero-shot use with the service's prompt templates ("a photo of a {}.") is
a real transfer. Writes clip_shapes.pth (fp16 state dict) and clip_shapes.json.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from services.samclip.composed import ClipPreprocess
from services.samclip.openvocab import mask_crop
from services.samclip.settings import DEFAULT_TEMPLATES
from shapes.clip_arch import build_shapes_clip
from shapes.scenes import CLASSES, EVAL_SEEDS, TRAIN_SEEDS, generate_scene
from shapes.weights import load_stage, write_card

TRAIN_CAPTIONS = ("a {size} {colour} {shape}", "{colour} {shape}", "{shape}", "a {colour} {shape}",
                  "the {size} {shape}", "{shape} shape", "one {colour} {shape}")
BACKGROUND_CAPTIONS = ("background", "a background", "empty background", "a noisy background",
                       "the textured background", "nothing")


def degrade(rng: random.Random, mask: np.ndarray) -> np.ndarray:
    """The mask roughly as the shapes SAM proposes it: resampled from low resolution (blunt
    corners, wobbly edges), then grown or shrunk by up to three pixels. Never empty."""
    h, w = mask.shape
    factor = rng.choice((2, 4, 6, 8))
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    low = F.adaptive_avg_pool2d(t, (max(h // factor, 2), max(w // factor, 2)))
    soft = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    grow = rng.choice((-3, -2, -1, 0, 1, 2, 3))
    if grow > 0:
        soft = F.max_pool2d(soft, 2 * grow + 1, 1, grow)
    elif grow < 0:
        soft = -F.max_pool2d(-soft, -2 * grow + 1, 1, -grow)
    out = (soft[0, 0] > rng.uniform(0.3, 0.7)).numpy()
    return out if out.sum() >= 16 else mask


def background_patch(rng: random.Random, image: np.ndarray, objects_mask: np.ndarray) -> np.ndarray | None:
    h, w = objects_mask.shape
    for _ in range(10):
        side = rng.randint(16, min(h, w) // 2)
        y, x = rng.randint(0, h - side), rng.randint(0, w - side)
        if objects_mask[y : y + side, x : x + side].mean() < 0.05:
            mask = np.zeros_like(objects_mask)
            mask[y : y + side, x : x + side] = True
            return mask_crop(image, mask)
    return None


def samples(seed: int, rng: random.Random, degrade_p: float = 0.0) -> list[tuple[np.ndarray, str, int]]:
    """(crop, caption, class index; len(CLASSES) = background) for one scene; with
    probability `degrade_p` an object's crop is cut with a proposal-like mask."""
    scene = generate_scene(seed)
    out = []
    union = np.zeros(scene.image.shape[:2], bool)
    for obj in scene.objects:
        union |= obj.mask
        if obj.mask.sum() < 60:
            continue
        caption = rng.choice(TRAIN_CAPTIONS).format(size=obj.size, colour=obj.colour, shape=obj.category)
        mask = degrade(rng, obj.mask) if degrade_p and rng.random() < degrade_p else obj.mask
        out.append((mask_crop(scene.image, mask), caption, CLASSES.index(obj.category)))
    patch = background_patch(rng, scene.image, union)
    if patch is not None:
        out.append((patch, rng.choice(BACKGROUND_CAPTIONS), len(CLASSES)))
    return out


def accuracy(model: torch.nn.Module, tokenizer: object, preprocess: ClipPreprocess, seeds: range,
             degraded: bool = False) -> float:
    """Zero-shot top-1 on eval object crops with the service's default templates and bare names;
    `degraded`: crops cut with proposal-like masks (a fixed draw)."""
    rng = random.Random(0)
    model.eval()
    with torch.inference_mode():
        texts = [[t.format(c) for t in DEFAULT_TEMPLATES] for c in CLASSES]
        text = torch.stack([
            F.normalize(F.normalize(model.encode_text(tokenizer(ts)), dim=-1).mean(0), dim=-1) for ts in texts
        ])
        correct = total = 0
        for seed in seeds:
            scene = generate_scene(seed)
            objs = [o for o in scene.objects if o.mask.sum() >= 60]
            if not objs:
                continue
            masks = [degrade(rng, o.mask) if degraded else o.mask for o in objs]
            crops = torch.stack([preprocess(mask_crop(scene.image, m)) for m in masks])
            pred = (F.normalize(model.encode_image(crops), dim=-1) @ text.T).argmax(1)
            correct += sum(int(p) == CLASSES.index(o.category) for p, o in zip(pred, objs, strict=True))
            total += len(objs)
    model.train()
    return correct / max(total, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--scenes-per-step", type=int, default=24)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-scenes", type=int, default=150)
    parser.add_argument("--degrade", type=float, default=0.0,
                        help="probability of cutting an object crop with a proposal-like mask")
    parser.add_argument("--init", type=Path, help="continue from these weights (a clip_shapes.pth)")
    parser.add_argument("--seed-offset", type=int, default=500_000,
                        help="first training scene seed (apart from the Mask R-CNN's)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "weights")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    torch.set_num_threads(args.threads)

    model, tokenizer = build_shapes_clip()
    preprocess = ClipPreprocess.from_cfg(open_clip.get_model_preprocess_cfg(model))
    init_card = None
    if args.init is not None:
        state, init_card = load_stage(args.init)
        model.load_state_dict(state)  # the fp16 file is cast into the fp32 parameters
    offset = args.seed_offset
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    model.train()
    start = time.time()
    for step in range(args.steps):
        batch = [s for i in range(args.scenes_per_step)
                 for s in samples(TRAIN_SEEDS[offset + step * args.scenes_per_step + i], rng, args.degrade)]
        images = torch.stack([preprocess(c) for c, _, _ in batch])
        texts = tokenizer([t for _, t, _ in batch])
        classes = torch.tensor([k for _, _, k in batch])
        image_features = F.normalize(model.encode_image(images), dim=-1)
        text_features = F.normalize(model.encode_text(texts), dim=-1)
        logits = model.logit_scale.exp() * image_features @ text_features.T
        # Crops of the same class are positives of each other: soft multi-positive targets.
        same = (classes[:, None] == classes[None, :]).float()
        targets = same / same.sum(1, keepdim=True)
        loss = (torch.sum(-targets * logits.log_softmax(1), 1).mean()
                + torch.sum(-targets * logits.T.log_softmax(1), 1).mean()) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d} loss {loss.item():.3f} batch {len(batch)} {time.time() - start:.0f}s", flush=True)
    train_seconds = time.time() - start
    top1 = accuracy(model, tokenizer, preprocess, EVAL_SEEDS[: args.eval_scenes])
    top1_degraded = accuracy(model, tokenizer, preprocess, EVAL_SEEDS[: args.eval_scenes], degraded=True)
    print(json.dumps({"zero_shot_top1": top1, "zero_shot_top1_degraded": top1_degraded}), flush=True)
    degraded = f"; {args.degrade:.0%} of object crops cut with proposal-like (degraded) masks" if args.degrade else ""
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "clip_shapes.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, path)
    write_card(
        path,
        model="open_clip CLIP, ViT 3x96 (patch 8, 48 px) + text transformer 2x64, embed 64; stored fp16",
        data=f"shapes world: crops of {args.steps * args.scenes_per_step} generated scenes "
             f"(seeds from {offset}), captions {list(TRAIN_CAPTIONS)} and background patches" + degraded,
        hyperparameters={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        metrics={"zero_shot_top1_crops": round(top1, 4),
                 "zero_shot_top1_degraded_crops": round(top1_degraded, 4), "eval_scenes": args.eval_scenes,
                 "eval_templates": list(DEFAULT_TEMPLATES), "train_seconds": round(train_seconds)},
        classes=list(CLASSES),
        continued_from=init_card,
    )


if __name__ == "__main__":
    main()
