"""Train the shapes CLIP contrastively on object crops, scenes and background patches.

    python -m shapes.train_clip --steps 1200 --out visioncompare/shapes_models/weights

Crops are made as the SAM-CLIP service makes them (the mask's box, outside the
mask filled, squared) and preprocessed by the service's own transform. Captions
use their own phrasings ("a small red triangle", "red triangle", "triangle"), so
that zero-shot use with the service's prompt templates ("a photo of a {}.") is
a real transfer. With --proposal-scenes, batches also hold crops of the shapes
SAM's real proposals, which SAM-CLIP is asked to label: their blunt corners and
ragged edges are what perfect crops never show. Writes clip_shapes.pth (fp16
state dict) and clip_shapes.json.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.tokenizer import SimpleTokenizer

from shapes.evaluation import best_match
from shapes.scenes import CLASSES, EVAL_SEEDS, TRAIN_SEEDS, Scene, ShapeObject, generate_scene
from shapes.stages import load_stage, write_card
from visioncompare.samclip.algorithms import proposal_params
from visioncompare.samclip.backend import AutomaticParams, SamClipBackend
from visioncompare.samclip.composed import ClipPreprocess
from visioncompare.samclip.model import SamClipModel
from visioncompare.samclip.openvocab import mask_crop
from visioncompare.samclip.settings import DEFAULT_TEMPLATES, SamClipSettings
from visioncompare.shapes_models.cards import WEIGHTS_DIR
from visioncompare.shapes_models.clip import build_shapes_clip
from visioncompare.shapes_models.facts import SHAPES

TRAIN_CAPTIONS = (
    "a {size} {colour} {shape}",
    "{colour} {shape}",
    "{shape}",
    "a {colour} {shape}",
    "the {size} {shape}",
    "{shape} shape",
    "one {colour} {shape}",
)
BACKGROUND_CAPTIONS = (
    "background",
    "a background",
    "empty background",
    "a noisy background",
    "the textured background",
    "nothing",
)


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


def caption(rng: random.Random, obj: ShapeObject) -> str:
    return rng.choice(TRAIN_CAPTIONS).format(size=obj.size, colour=obj.colour, shape=obj.category)


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
        text = caption(rng, obj)  # drawn before the mask, as the shipped runs drew it
        mask = degrade(rng, obj.mask) if degrade_p and rng.random() < degrade_p else obj.mask
        out.append((mask_crop(scene.image, mask), text, CLASSES.index(obj.category)))
    patch = background_patch(rng, scene.image, union)
    if patch is not None:
        out.append((patch, rng.choice(BACKGROUND_CAPTIONS), len(CLASSES)))
    return out


@dataclass(frozen=True)
class ProposalCrop:
    image: torch.Tensor  # preprocessed as the service preprocesses crops
    target: ShapeObject | None  # the object it matches; None: it is background


def proposing_model(sam_weights: str) -> SamClipModel:
    """The SAM-CLIP service's model with a shapes SAM, for its proposals."""
    settings = SamClipSettings(
        backend="composed",
        device="cpu",
        engine="torch",  # a training tool: no ONNX export into the cache
        metrics_port=None,
        sam_variant=SHAPES,
        sam_weights=sam_weights,
    )
    sam_clip = SamClipModel(settings)
    sam_clip.load()
    return sam_clip


def matched_proposals(
    seeds: Iterable[int], backend: SamClipBackend, params: AutomaticParams
) -> Iterator[tuple[Scene, np.ndarray, ShapeObject | None]]:
    """The open-vocabulary proposals of `backend`'s SAM on the scenes of `seeds`, each with the
    object it matches: a proposal matching an object at IoU >= 0.5 is that object's, one
    overlapping every object at IoU < 0.2 is background (None); the fragments between are left out."""
    for seed in seeds:
        scene = generate_scene(seed)
        [embedding] = backend.embed_images([scene.image], [f"shapes-{seed}"])
        for proposal in backend.generate_masks(scene.image, embedding, params):
            if not proposal.mask.area:
                continue
            mask = proposal.binary()
            iou, target = best_match(mask, scene.objects)
            if iou < 0.2:
                yield scene, mask, None
            elif iou >= 0.5:
                yield scene, mask, target
        backend.clear_caches()


def proposal_crops(seeds: Sequence[int], sam_clip: SamClipModel, preprocess: ClipPreprocess) -> list[ProposalCrop]:
    """Crops of the open-vocabulary proposals of `sam_clip`'s SAM, made as the service makes
    them (its proposal settings, its crop), with the object each matches (matched_proposals)."""
    params = proposal_params(sam_clip.settings)
    return [
        ProposalCrop(preprocess(mask_crop(scene.image, mask)), target)
        for scene, mask, target in matched_proposals(seeds, sam_clip.backend, params)
    ]


def proposal_accuracy(model: open_clip.CLIP, tokenizer: SimpleTokenizer, crops: Sequence[ProposalCrop]) -> float:
    """Zero-shot top-1 (shape names, the service's templates) on proposal crops of objects."""
    objects = [(c.image, c.target) for c in crops if c.target is not None]
    if not objects:
        return 0.0
    model.eval()
    with torch.inference_mode():
        text = class_vectors(model, tokenizer)
        images = torch.stack([image for image, _ in objects])
        pred = (F.normalize(model.encode_image(images), dim=-1) @ text.T).argmax(1)
    model.train()
    return sum(int(p) == CLASSES.index(t.category) for p, (_, t) in zip(pred, objects, strict=True)) / len(objects)


def class_vectors(model: open_clip.CLIP, tokenizer: SimpleTokenizer) -> torch.Tensor:
    texts = [[t.format(c) for t in DEFAULT_TEMPLATES] for c in CLASSES]
    return torch.stack(
        [F.normalize(F.normalize(model.encode_text(tokenizer(ts)), dim=-1).mean(0), dim=-1) for ts in texts]
    )


def accuracy(
    model: open_clip.CLIP, tokenizer: SimpleTokenizer, preprocess: ClipPreprocess, seeds: range, degraded: bool = False
) -> float:
    """Zero-shot top-1 on eval object crops with the service's default templates and bare names;
    `degraded`: crops cut with proposal-like masks (a fixed draw)."""
    rng = random.Random(0)
    model.eval()
    with torch.inference_mode():
        text = class_vectors(model, tokenizer)
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
    parser.add_argument(
        "--degrade", type=float, default=0.0, help="probability of cutting an object crop with a proposal-like mask"
    )
    parser.add_argument(
        "--proposal-scenes",
        type=int,
        default=0,
        help="scenes whose SAM proposals are cut into crops, mixed into every batch",
    )
    parser.add_argument("--proposals-per-step", type=int, default=48)
    parser.add_argument(
        "--proposal-seed-offset", type=int, default=540_000, help="first scene seed of the proposal crops"
    )
    parser.add_argument(
        "--sam-weights",
        default=SHAPES,
        help="the shapes SAM that proposes: shapes (shipped) or file:/path/sam_shapes.pth",
    )
    parser.add_argument("--init", type=Path, help="continue from these weights (a clip_shapes.pth)")
    parser.add_argument(
        "--seed-offset", type=int, default=500_000, help="first training scene seed (apart from the Mask R-CNN's)"
    )
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
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
    pool: list[ProposalCrop] = []
    eval_proposals: list[ProposalCrop] = []
    proposal_seconds = 0.0
    if args.proposal_scenes:
        start = time.time()
        first = args.proposal_seed_offset
        sam_clip = proposing_model(args.sam_weights)
        pool = proposal_crops(TRAIN_SEEDS[first : first + args.proposal_scenes], sam_clip, preprocess)
        eval_proposals = proposal_crops(EVAL_SEEDS[: args.eval_scenes], sam_clip, preprocess)
        sam_clip.close()
        proposal_seconds = time.time() - start
        print(
            f"{len(pool)} proposal crops ({sum(c.target is None for c in pool)} background); "
            f"top-1 on eval proposals {proposal_accuracy(model, tokenizer, eval_proposals):.4f}; "
            f"{proposal_seconds:.0f}s",
            flush=True,
        )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    model.train()
    start = time.time()
    for step in range(args.steps):
        batch = [
            s
            for i in range(args.scenes_per_step)
            for s in samples(TRAIN_SEEDS[offset + step * args.scenes_per_step + i], rng, args.degrade)
        ]
        images = [preprocess(c) for c, _, _ in batch]
        captions = [t for _, t, _ in batch]
        classes = [k for _, _, k in batch]
        for i in rng.sample(range(len(pool)), min(args.proposals_per_step, len(pool))):
            crop = pool[i]
            images.append(crop.image)
            if crop.target is None:
                captions.append(rng.choice(BACKGROUND_CAPTIONS))
                classes.append(len(CLASSES))
            else:
                captions.append(caption(rng, crop.target))
                classes.append(CLASSES.index(crop.target.category))
        image_batch, text_batch, class_ids = torch.stack(images), tokenizer(captions), torch.tensor(classes)
        image_features = F.normalize(model.encode_image(image_batch), dim=-1)
        text_features = F.normalize(model.encode_text(text_batch), dim=-1)
        logits = model.logit_scale.exp() * image_features @ text_features.T
        # Crops of the same class are positives of each other: soft multi-positive targets.
        same = (class_ids[:, None] == class_ids[None, :]).float()
        targets = same / same.sum(1, keepdim=True)
        loss = (
            torch.sum(-targets * logits.log_softmax(1), 1).mean()
            + torch.sum(-targets * logits.T.log_softmax(1), 1).mean()
        ) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d} loss {loss.item():.3f} batch {len(images)} {time.time() - start:.0f}s", flush=True)
    train_seconds = time.time() - start + proposal_seconds
    metrics = {
        "zero_shot_top1_crops": accuracy(model, tokenizer, preprocess, EVAL_SEEDS[: args.eval_scenes]),
        "zero_shot_top1_degraded_crops": accuracy(
            model, tokenizer, preprocess, EVAL_SEEDS[: args.eval_scenes], degraded=True
        ),
    }
    if eval_proposals:
        metrics["zero_shot_top1_proposal_crops"] = proposal_accuracy(model, tokenizer, eval_proposals)
    print(json.dumps(metrics), flush=True)
    degraded = f"; {args.degrade:.0%} of object crops cut with proposal-like (degraded) masks" if args.degrade else ""
    if pool:
        degraded += (
            f"; plus {args.proposals_per_step} crops per step of SAM-CLIP proposals ({args.sam_weights} SAM, "
            f"the service's settings) on {args.proposal_scenes} scenes from seed {args.proposal_seed_offset}: "
            "objects matched at IoU >= 0.5, background where every IoU < 0.2"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "clip_shapes.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, path)
    write_card(
        path,
        model="open_clip CLIP, ViT 3x96 (patch 8, 48 px) + text transformer 2x64, embed 64; stored fp16",
        data=f"shapes world: crops of {args.steps * args.scenes_per_step} generated scenes "
        f"(seeds from {offset}), captions {list(TRAIN_CAPTIONS)} and background patches" + degraded,
        hyperparameters={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        metrics={
            **{k: round(v, 4) for k, v in metrics.items()},
            "eval_scenes": args.eval_scenes,
            "eval_templates": list(DEFAULT_TEMPLATES),
            "train_seconds": round(train_seconds),
        },
        classes=list(CLASSES),
        continued_from=init_card,
    )


if __name__ == "__main__":
    main()
