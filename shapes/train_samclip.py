"""Merge a SAM and a CLIP into one SAM-CLIP by multi-task distillation (arXiv 2310.15308).

Shapes teachers on the shapes world (the shipped weights):

    python -m shapes.train_samclip --probe-steps 400 --steps 1600 --threads 2

Official teachers on image folders, on a GPU (the same code; each teacher is loaded by the
SAM-CLIP service's own loaders from `--cache-dir`, filled by `fetch-weights samclip`):

    python -m shapes.train_samclip --device cuda --sam-variant vit_b --sam-weights official \\
        --clip-model ViT-B-32 --clip-pretrained laion2b_e16 --cache-dir models \\
        --sam-images /data/sa1b/images --clip-images /data/datacomp/images \\
        --probe-steps 20000 --steps 100000 --clip-batch 64 --sam-batch 8 --out runs/samclip_vit_b

The recipe (`services/samclip/merged_arch.py` has the network):
- The student's backbone and SAM head (neck, mask decoder) start as copies of the SAM teacher;
  its prompt encoder is the teacher's, frozen. The CLIP head's three blocks start as copies of
  the backbone's last block.
- CLIP loss: 1 - cosine(student's pooled CLIP-head embedding, CLIP teacher's image embedding).
  SAM loss: 20 x focal + dice between the student's and the teacher's mask logits for the same
  point and box prompts (the teacher's masks as targets), plus the IoU head's squared error
  against the teacher's predicted IoUs. Total = CLIP + lambda x SAM, lambda = 10.
- Stage 1, head probing (`--probe-steps`): backbone frozen, only the CLIP head trains.
- Stage 2, multi-task distillation (`--steps`): everything but the prompt encoder trains, the
  backbone and the SAM head at `--backbone-lr-scale` (0.1) x the learning rate; each step
  takes a CLIP batch and a SAM batch, accumulates both gradients in the shared backbone and
  makes one optimizer step, so SAM data is replayed throughout.

Data. Image folders: the CLIP batch is whole images (student and teacher see the same image,
as in the paper); the SAM batch prompts each image with a point and the box of masks the SAM
teacher's automatic mask generator finds. Shapes world: the CLIP teacher knows single objects
(it was trained on mask crops), so the CLIP batch holds such crops as whole images (the
paper's loss unchanged) and, for the same loss per region, scenes in which the student's
CLIP-head tokens are max-pooled inside one object's mask (or the background) and matched to
the teacher's embedding of that object's crop (or a background patch): the pooling the
service uses to label masks. The SAM batch is scenes with a point and a jittered box per object.

Writes samclip_shapes.pth (the student, fp16 state dict) and samclip_shapes.json (teachers
with their SHA-256, data, hyper-parameters, metrics on held-out scenes, time). `--init`
continues from a checkpoint; `--save-every` writes one during training, so a run that is
stopped can go on from it.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from services.runtime.device import plan_device
from services.runtime.weights import sha256_of
from services.samclip import automatic
from services.samclip.backend import AutomaticParams
from services.samclip.composed import ComposedSamOpenClip, build_composed, cache_and_batch_sizes
from services.samclip.merged import MergedSamClipBackend, clip_embed_dim, text_tower_only
from services.samclip.merged_arch import MergedSamClip, build_merged, region_weights
from services.samclip.model import SamClipModel
from services.samclip.openvocab import mask_crop
from services.samclip.settings import SamClipSettings
from services.samclip.weights import SHAPES_NOTE
from shapes.scenes import TRAIN_SEEDS, box_of, generate_scene
from shapes.train_clip import background_patch, degrade
from shapes_models.cards import WEIGHTS_DIR, load_stage, write_card

LAMBDA_SAM = 10.0  # the paper's: 1 made SAM forget, 100 stalled CLIP
FOCAL_TO_DICE = 20.0
CONTRASTIVE_TEMPERATURE = 0.07
MIN_OBJECT_PIXELS = 60
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@dataclass
class ClipSample:
    """One student image and the regions of it that are matched to a teacher image each
    (region None: the whole image)."""

    image: np.ndarray
    regions: list[tuple[np.ndarray | None, np.ndarray]] = field(default_factory=list)


@dataclass
class SamSample:
    image: np.ndarray
    points: np.ndarray  # N x 2 (x, y), one prompt each
    boxes: np.ndarray  # M x 4 (x1, y1, x2, y2), one prompt each


class ShapesData:
    """Crops and scenes of the shapes world, from training seeds of its own. Each scene is
    used whole: its objects' crops (half of them cut with proposal-like masks, as the shapes
    CLIP learnt them) and a background patch are CLIP images; the first `scenes` scenes of a
    CLIP batch are also region samples, and the SAM batch prompts the objects of the latest
    CLIP batch's scenes (scene generation is a good part of a step's time on CPU)."""

    def __init__(self, rng: random.Random, seed_offset: int) -> None:
        self.rng = rng
        self.next_seed = seed_offset
        self.recent: list[Any] = []

    def _scene(self) -> Any:
        scene = generate_scene(TRAIN_SEEDS[self.next_seed])
        self.next_seed += 1
        return scene

    def clip_batch(self, crops: int, scenes: int) -> list[ClipSample]:
        out: list[ClipSample] = []
        self.recent = []
        while len(out) < crops or len(self.recent) < scenes:
            scene = self._scene()
            self.recent.append(scene)
            union = np.zeros(scene.image.shape[:2], bool)
            for obj in scene.objects:
                union |= obj.mask
            regions = ClipSample(scene.image)
            for obj in scene.objects:
                if obj.mask.sum() >= MIN_OBJECT_PIXELS:
                    mask = degrade(self.rng, obj.mask) if self.rng.random() < 0.5 else obj.mask
                    crop = mask_crop(scene.image, mask)
                    out.append(ClipSample(crop, [(None, crop)]))
                    regions.regions.append((obj.mask, mask_crop(scene.image, obj.mask)))
            patch = background_patch(self.rng, scene.image, union)
            if patch is not None:
                out.append(ClipSample(patch, [(None, patch)]))
                if (~union).sum() >= MIN_OBJECT_PIXELS:
                    regions.regions.append((~union, patch))
            if len(self.recent) <= scenes and regions.regions:
                out.append(regions)
        return out

    def sam_batch(self, count: int, teacher: ComposedSamOpenClip) -> list[SamSample]:
        scenes = self.recent[:count] + [self._scene() for _ in range(count - len(self.recent))]
        out = []
        for scene in scenes:
            objects = [o for o in scene.objects if o.mask.sum() >= 30]
            if not objects:
                continue
            points, boxes = [], []
            for obj in objects:
                ys, xs = np.nonzero(obj.mask)
                k = self.rng.randrange(len(xs))
                points.append((float(xs[k]) + 0.5, float(ys[k]) + 0.5))
                boxes.append([v + self.rng.uniform(-3, 3) for v in box_of(obj.mask)])
            out.append(SamSample(scene.image, np.array(points), np.array(boxes)))
        return out


class FolderData:
    """Image folders: whole images for CLIP; for SAM, prompts from the SAM teacher's own
    automatic masks (a point inside and the box of each)."""

    def __init__(self, rng: random.Random, clip_images: Path, sam_images: Path, params: AutomaticParams) -> None:
        self.rng = rng
        self.clip_files = self._files(clip_images)
        self.sam_files = self._files(sam_images)
        self.params = params

    @staticmethod
    def _files(folder: Path) -> list[Path]:
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SystemExit(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
        return files

    def _load(self, files: list[Path]) -> np.ndarray:
        from PIL import Image

        with Image.open(self.rng.choice(files)) as img:
            return np.asarray(img.convert("RGB"))

    def clip_batch(self, crops: int, scenes: int) -> list[ClipSample]:
        images = [self._load(self.clip_files) for _ in range(crops + scenes)]
        return [ClipSample(image, [(None, image)]) for image in images]

    def sam_batch(self, count: int, teacher: ComposedSamOpenClip) -> list[SamSample]:
        out = []
        for _ in range(count):
            image = self._load(self.sam_files)
            [embedding] = teacher.embed_images([image], [f"sam-{self.rng.random()}"])
            masks = automatic.generate(teacher.sam, image, embedding, self.params)[:16]
            points, boxes = [], []
            for m in masks:
                binary = m.binary()
                ys, xs = np.nonzero(binary)
                k = self.rng.randrange(len(xs))
                points.append((float(xs[k]) + 0.5, float(ys[k]) + 0.5))
                boxes.append(box_of(binary))
            if points:
                out.append(SamSample(image, np.array(points), np.array(boxes)))
        teacher.clear_caches()
        return out


class Distiller:
    """The student, its teachers, and the two losses."""

    def __init__(
        self,
        teacher: ComposedSamOpenClip,
        student: MergedSamClip,
        device: torch.device,
        *,
        dense_weight: float = 0.0,
        contrastive_weight: float = 0.0,
    ) -> None:
        self.teacher = teacher
        self.dense_weight = dense_weight
        self.contrastive_weight = contrastive_weight
        self.student = student.to(device)
        self.device = device
        self.resize = teacher._resize
        self.patch = int(student.sam.image_encoder.patch_embed.proj.stride[0])
        self.side = student.img_size // self.patch
        for p in self.student.sam.prompt_encoder.parameters():
            p.requires_grad_(False)

    def _prepare(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        batch, sizes = [], []
        for image in images:
            resized = self.resize.apply_image(image)
            x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).float()
            batch.append(self.teacher.sam.preprocess(x[None]))
            sizes.append((int(resized.shape[0]), int(resized.shape[1])))
        return torch.cat(batch), sizes

    @torch.no_grad()
    def teacher_embeddings(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        assert self.teacher.preprocess is not None
        batch = torch.stack([self.teacher.preprocess(i) for i in images]).to(self.device)
        return self.teacher.clip.encode_image(batch, normalize=True)

    def clip_loss(self, samples: Sequence[ClipSample], train_backbone: bool) -> torch.Tensor:
        x, sizes = self._prepare([s.image for s in samples])
        with torch.set_grad_enabled(train_backbone):
            tokens = self.student.backbone(x)
        head = self.student.clip_head.tokens(tokens)
        pooled: list[torch.Tensor] = []
        targets: list[np.ndarray] = []
        dense_terms: list[tuple[int, torch.Tensor]] = []
        for k, (sample, size) in enumerate(zip(samples, sizes, strict=True)):
            whole = np.ones(sample.image.shape[:2], bool)
            masks = [whole if region is None else region for region, _ in sample.regions]
            weights = region_weights(torch.as_tensor(np.stack(masks)), size, self.student.img_size, self.side)
            weights = weights.to(self.device)
            pooled.append(self.student.pooled(head[k : k + 1], weights))
            targets.extend(teacher_image for _, teacher_image in sample.regions)
            if self.dense_weight and sample.regions[0][0] is not None:
                dense_terms.append((k, weights))
        teacher = self.teacher_embeddings(targets)
        student = F.normalize(torch.cat(pooled), dim=-1)
        loss = (1 - (student * teacher).sum(-1)).mean()
        if self.contrastive_weight:  # each student embedding nearer its own teacher's than the batch's others
            logits = student @ teacher.T / CONTRASTIVE_TEMPERATURE
            loss = loss + self.contrastive_weight * F.cross_entropy(logits, torch.arange(len(student)))
        if dense_terms:  # every patch mostly inside a region, matched to that region's teacher embedding
            dense_loss = torch.zeros((), device=self.device)
            offsets = np.cumsum([0] + [len(s.regions) for s in samples])
            for k, weights in dense_terms:
                first = int(offsets[k])
                patches = F.normalize(self.student.dense(head[k]), dim=-1).flatten(0, 1)  # hw x D
                inside = (weights.flatten(1) >= 0.5).float()  # R x hw
                cos = teacher[first : first + len(weights)] @ patches.T  # R x hw
                dense_loss = dense_loss + ((1 - cos) * inside).sum() / inside.sum().clamp(min=1)
            loss = loss + self.dense_weight * dense_loss / len(dense_terms)
        return loss

    def _decode(self, sam: Any, features: torch.Tensor, sample: SamSample, size: tuple[int, int]) -> list[Any]:
        """(low-res logits N x 4 x h x w, IoU N x 4) for the sample's point prompts, then its box prompts."""
        original = sample.image.shape[:2]
        coords = torch.as_tensor(self.resize.apply_coords(sample.points, original), dtype=torch.float32)
        boxes = torch.as_tensor(self.resize.apply_boxes(sample.boxes, original), dtype=torch.float32)
        labels = torch.ones(len(coords), 1, dtype=torch.int, device=self.device)
        out = []
        for prompt in ({"points": (coords[:, None].to(self.device), labels)}, {"boxes": boxes.to(self.device)}):
            sparse, dense = self.student.sam.prompt_encoder(
                points=prompt.get("points"), boxes=prompt.get("boxes"), masks=None
            )
            out.append(
                sam.mask_decoder.predict_masks(
                    image_embeddings=features,
                    image_pe=self.student.sam.prompt_encoder.get_dense_pe(),
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                )
            )
        return out

    def sam_loss(self, samples: Sequence[SamSample]) -> torch.Tensor:
        x, sizes = self._prepare([s.image for s in samples])
        features = self.student.sam_features(self.student.backbone(x))
        with torch.no_grad():
            teacher_features = self.teacher.sam.image_encoder(x)
        total = torch.zeros((), device=self.device)
        for k, (sample, size) in enumerate(zip(samples, sizes, strict=True)):
            with torch.no_grad():
                taught = self._decode(self.teacher.sam, teacher_features[k : k + 1], sample, size)
            learnt = self._decode(self.student.sam, features[k : k + 1], sample, size)
            for (logits, iou), (t_logits, t_iou) in zip(learnt, taught, strict=True):
                target = (t_logits > 0).float()
                focal = sigmoid_focal_loss(logits, target, reduction="none").mean((2, 3))
                p = logits.sigmoid()
                dice = 1 - (2 * (p * target).sum((2, 3)) + 1) / (p.sum((2, 3)) + target.sum((2, 3)) + 1)
                total = total + (FOCAL_TO_DICE * focal + dice).mean() + F.mse_loss(iou, t_iou)
        return total / max(len(samples), 1)


def cosine_lr(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(total - warmup, 1)))


def merged_model(student: MergedSamClip, teacher: ComposedSamOpenClip, settings: SamClipSettings) -> SamClipModel:
    """The SAM-CLIP service's model around the student, with the service's settings."""
    clip = text_tower_only(teacher.clip)
    backend = MergedSamClipBackend(
        merged=student.eval(),
        clip=clip,
        tokenizer=teacher.tokenizer,
        plan=plan_device(settings.device, "fp32"),
        description=teacher.describe(),
        **cache_and_batch_sizes(settings),
    )
    model = SamClipModel(settings, backend_factory=lambda *_: backend)
    model.load()
    return model


def evaluate(student: MergedSamClip, teacher: ComposedSamOpenClip, settings: SamClipSettings, scenes: int) -> dict:
    """Held-out figures of the student as the service runs it (`shapes.accuracy`'s functions)."""
    import copy

    from shapes import accuracy

    teacher = copy.copy(teacher)
    teacher.clip = copy.deepcopy(teacher.clip)
    eval_scenes = accuracy.eval_scenes(scenes)
    figures: dict[str, Any] = {}
    for refine in (False, True):
        model = merged_model(student, teacher, settings.model_copy(update={"semantic_refinement": refine}))
        client = accuracy.InProcessClient(model)
        key = "semantic_miou_refined" if refine else "semantic_miou_clip_head"
        figures[key] = accuracy.semantic_miou(client, eval_scenes)
    figures.update(accuracy.sam_miou(client, eval_scenes))
    figures["crop_top1"] = accuracy.clip_top1(client, eval_scenes)
    figures["open_vocabulary_mask_ap"] = accuracy.samclip_open_vocabulary_ap(client, eval_scenes)["mask_ap"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sam-variant", default="shapes")
    parser.add_argument("--sam-weights", default="shapes")
    parser.add_argument("--clip-model", default="shapes")
    parser.add_argument("--clip-pretrained", default="shapes")
    parser.add_argument("--cache-dir", type=Path, default=Path("models"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clip-images", type=Path, help="a folder of images for the CLIP loss (default: shapes)")
    parser.add_argument("--sam-images", type=Path, help="a folder of images for the SAM loss (default: shapes)")
    parser.add_argument("--probe-steps", type=int, default=None, help="head-probing steps (default 400; 0 with --init)")
    parser.add_argument("--steps", type=int, default=1600, help="multi-task distillation steps")
    parser.add_argument("--clip-batch", type=int, default=24, help="whole images (crops) per CLIP batch")
    parser.add_argument("--clip-scenes", type=int, default=4, help="shapes scenes per CLIP batch (regions)")
    parser.add_argument("--sam-batch", type=int, default=4, help="images per SAM batch")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--backbone-lr-scale", type=float, default=0.1)
    parser.add_argument("--lambda-sam", type=float, default=LAMBDA_SAM)
    parser.add_argument(
        "--dense-weight",
        type=float,
        default=1.0,
        help="per-patch term of the region loss (shapes scenes); 0: the paper's loss only",
    )
    parser.add_argument(
        "--contrastive-weight",
        type=float,
        default=0.0,
        help="batch-contrastive term of the CLIP loss (InfoNCE against the teacher's embeddings)",
    )
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seed-offset", type=int, default=900_000, help="first training scene seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-scenes", type=int, default=100)
    parser.add_argument("--init", type=Path, help="continue from this student (a state dict)")
    parser.add_argument("--save-every", type=int, default=200, help="steps between checkpoints")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args()
    if (args.clip_images is None) != (args.sam_images is None):
        parser.error("give both --clip-images and --sam-images, or neither (the shapes world)")
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    settings = SamClipSettings(
        backend="composed",
        device=args.device,
        engine="torch",  # the teacher trains nothing but is read module by module; no ONNX export
        metrics_port=None,
        cache_dir=args.cache_dir,
        sam_variant=args.sam_variant,
        sam_weights=args.sam_weights,
        clip_model=args.clip_model,
        clip_pretrained=args.clip_pretrained,
    )
    teacher = build_composed(settings, plan_device(args.device, "fp32"))
    teacher.sam.requires_grad_(False)
    teacher.clip.requires_grad_(False)
    student = build_merged(teacher.sam, clip_embed_dim(teacher.clip, teacher.tokenizer))
    init_card = None
    if args.init is not None:
        state, init_card = load_stage(args.init)
        student.load_state_dict(state)
        args.probe_steps = args.probe_steps or 0  # a continued run probes only when told to
    if args.probe_steps is None:
        args.probe_steps = 400
    student.train()
    distiller = Distiller(
        teacher, student, device, dense_weight=args.dense_weight, contrastive_weight=args.contrastive_weight
    )
    data: ShapesData | FolderData = (
        ShapesData(rng, args.seed_offset)
        if args.clip_images is None
        else FolderData(rng, args.clip_images, args.sam_images, SamClipModel(settings).proposal_params())
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "samclip_shapes.pth"
    start = time.time()

    def stages() -> Iterator[tuple[str, int, int]]:
        for step in range(args.probe_steps):
            yield "probe", step, args.probe_steps
        for step in range(args.steps):
            yield "distill", step, args.steps

    head = list(student.clip_head.parameters())
    rest = [
        p
        for n, p in student.named_parameters()
        if not n.startswith("clip_head.") and not n.startswith("sam.prompt_encoder.")
    ]
    optimizer: torch.optim.Optimizer | None = None
    stage_now = ""
    for stage, step, total in stages():
        if stage != stage_now:  # a fresh optimizer per stage, as the paper's two stages
            stage_now = stage
            groups = [{"params": head, "lr": args.lr, "scale": 1.0}]
            if stage == "distill":
                groups.append({"params": rest, "lr": args.lr * args.backbone_lr_scale, "scale": args.backbone_lr_scale})
            optimizer = torch.optim.AdamW(groups, lr=args.lr, weight_decay=0.05)
        assert optimizer is not None
        factor = cosine_lr(step, total, args.warmup)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * group["scale"] * factor
        clip = distiller.clip_loss(data.clip_batch(args.clip_batch, args.clip_scenes), stage == "distill")
        loss = clip
        sam = torch.zeros(())
        if stage == "distill":
            sam = distiller.sam_loss(data.sam_batch(args.sam_batch, teacher))
            loss = clip + args.lambda_sam * sam
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0 or step == total - 1:
            print(
                f"{stage} {step:5d}/{total} clip {clip.item():.4f} sam {sam.item():.4f} {time.time() - start:.0f}s",
                flush=True,
            )
        if args.save_every and step and step % args.save_every == 0:  # a run stopped here goes on with --init
            checkpoint = args.out / "samclip_checkpoint.pth"
            torch.save(student.state_dict(), checkpoint)
            progress = {"stage": stage, "step": step, "of": total, "train_seconds": round(time.time() - start)}
            write_card(checkpoint, **card_fields(args, teacher), continued_from=init_card, progress=progress)
    train_seconds = time.time() - start
    student.eval()
    state = {k: v.half() for k, v in student.state_dict().items()}
    torch.save(state, path)
    student.load_state_dict(state)  # measure what ships: the fp16 weights
    figures = evaluate(student.float(), teacher, settings.model_copy(update={"backend": "merged"}), args.eval_scenes)
    print(json.dumps(figures), flush=True)
    write_card(
        path,
        **card_fields(args, teacher),
        continued_from=init_card,
        metrics={**figures, "eval_scenes": args.eval_scenes, "train_seconds": round(train_seconds)},
    )


def card_fields(args: argparse.Namespace, teacher: ComposedSamOpenClip) -> dict[str, Any]:
    """What a card (or a checkpoint's) says about the run: model, teachers, data, hyper-parameters."""
    sam_part, clip_part = teacher.describe().components
    return {
        "model": (
            f"merged SAM-CLIP: {args.sam_variant} SAM backbone and SAM head, CLIP head of 3 blocks into "
            f"{args.clip_model}'s embedding space; text: {args.clip_model}'s text tower"
        ),
        "teachers": {sam_part.name: sam_part.weights, clip_part.name: clip_part.weights},
        "teacher_sha256": {
            part: sha256_of(p) for part in ("sam", "clip") if (p := _teacher_file(args, part)) is not None
        },
        "data": (
            "shapes world: object crops, scene regions and prompted scenes from generated training scenes"
            if args.clip_images is None
            else f"images under {args.clip_images.name} and {args.sam_images.name}"
        ),
        "note": SHAPES_NOTE if args.clip_images is None else "",
        "hyperparameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }


def _teacher_file(args: argparse.Namespace, part: str) -> Path | None:
    from services.samclip.weights import resolve_clip_weights, resolve_sam_weights

    if part == "sam":
        return resolve_sam_weights(args.sam_weights, args.sam_variant, args.cache_dir).path
    return resolve_clip_weights(args.clip_pretrained, args.clip_model, args.cache_dir).path


if __name__ == "__main__":
    main()
