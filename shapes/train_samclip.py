"""Merge a SAM and a CLIP into one SAM-CLIP by multi-task distillation (arXiv 2310.15308).

Shapes teachers on the shapes world (the shipped weights; resumable, see below):

    python -m shapes.train_samclip --steps 3000 --threads 2 --out runs/samclip

Official teachers on image folders, on a GPU (the same code; each teacher is loaded by the
SAM-CLIP service's own loaders from `--cache-dir`, filled by `fetch-weights samclip`):

    python -m shapes.train_samclip --device cuda --sam-variant vit_b --sam-weights official \\
        --clip-model ViT-B-32 --clip-pretrained laion2b_e16 --cache-dir models \\
        --sam-images /data/sa1b/images --clip-images /data/datacomp/images \\
        --probe-steps 20000 --steps 100000 --clip-batch 64 --sam-batch 8 --out runs/samclip_vit_b

The recipe (`visioncompare/samclip/merged_arch.py` has the network):
- The student is a copy of the SAM teacher plus a CLIP head (three copies of the backbone's
  last block, LayerNorm, MLP). The copy is made trainable explicitly (`make_trainable`): every
  part but the prompt encoder, which stays the teacher's, frozen, as in the paper. PARTS names
  the parts; the run checks that each part meant to train moved, and refuses to write weights
  otherwise; the model card records each part's trainable count and drift from the teacher.
- CLIP loss, per student embedding against its teacher embedding: 1 - cosine, plus
  `--distribution-weight` x the KL divergence between the teacher's and the student's label
  distributions over a caption bank (the served classifier: class names under the service's
  prompt templates and its background prompts; and one caption per size, colour and shape),
  both at `--distribution-scale`. The cosine alone lets the student sit at the teachers' mean
  embedding (its cosine to every target is high); the distributions carry what tells them apart.
  In the shapes world, where every region's (and patch's) content is known, `--label-weight` x
  the cross-entropy of the served label distribution (classes, background prompts together, at
  the teacher's logit scale) against it, for regions and (x `--dense-weight`) for patches: the
  teacher names proposal crops at 0.55 top-1, and a student that only imitates it cannot name
  them better.
- SAM loss: 20 x focal + dice between the student's and the teacher's mask logits for the same
  point and box prompts (the teacher's masks as targets), plus the IoU head's squared error
  against the teacher's predicted IoUs. Total = CLIP + lambda x SAM.
- Stage 1, head probing (`--probe-steps`): backbone frozen, only the CLIP head trains.
- Stage 2, multi-task distillation (`--steps`): everything but the prompt encoder trains, the
  backbone and the SAM head at `--backbone-lr-scale` x the learning rate; each step takes a
  CLIP batch and a SAM batch and makes one optimizer step, so SAM data is replayed throughout.
- Calibration, after training (`--calibration-scenes`, shapes world): the CLIP head's logit scale
  factor is fitted, without labels, so that the student's label distributions of proposal crops
  match the teacher's of the clean crops they match (`calibrate`); `--calibrate FILE` fits it
  for finished weights and rewrites them and their card.

Data. Image folders: the CLIP batch is whole images (student and teacher see the same image,
as in the paper); the SAM batch prompts each image with a point and the box of masks the SAM
teacher's automatic mask generator finds. Shapes world: the CLIP teacher knows single objects
(it was trained on mask crops), so per scene the CLIP batch holds (1) some of its objects' crops
(`--crop-fraction`) and a background patch as whole images, (2) regions of the scene, each object's mask and a
proposal-like (degraded) copy of it, and the background, where the student's CLIP-head tokens
are max-pooled (as the service labels masks) and matched to the teacher's embedding of the
object's clean crop (or the background patch), and (3) every patch token inside an object or
the background matched the same way (`--dense-weight`; what semantic segmentation reads); and
(4) with `--proposal-scenes`, `--proposal-crops` crops of the SAM teacher's own proposals on
other scenes, made as the service crops the masks it names by crops, each matched to the
teacher's embedding of the clean crop of the object it matches (of itself, for background), or
with `--proposal-targets self` to the teacher's embedding of the same crop. The SAM batch
prompts the same scenes' objects with a point and a jittered box each.

Progress. A held-out check (`--eval-every` steps, `--check-scenes` scenes: zero-shot top-1 on
object crops, on proposal crops (with `--proposal-scenes`) and on pooled object regions, patch
mIoU, the SAM loss on held-out prompts, and on `--check-served-scenes` of them the semantic mIoU
through the service's own model) is logged beside a progress bar; the best checkpoint by that
check (crop + proposal + region top-1 + patch mIoU + 2 x served semantic mIoU, `check_score`),
not the last, is what ships.
`<out>/checkpoints/last.pt` (model, optimizer, stage, step, best so far) is written every
`--save-every` steps: `--resume <out>/checkpoints/last.pt` with the same arguments continues an
interrupted run where it stopped, so a run of hours goes in stages across sessions. `--init`
starts a new run from a student's weights.

Writes samclip_shapes.pth (the best student, fp16 state dict) and samclip_shapes.json (teachers
with their SHA-256, data, hyper-parameters, the parts' training record, the check's history,
the calibration, metrics on held-out scenes through the service's own model, time).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss
from tqdm import tqdm

from shapes import accuracy
from shapes.scenes import COLOURS, EVAL_SEEDS, SIZES, TRAIN_SEEDS, Scene, box_of, generate_scene
from shapes.stages import load_stage, write_card
from shapes.train_clip import background_patch, degrade, matched_proposals
from visioncompare.runtime.device import plan_device
from visioncompare.runtime.weights import sha256_of
from visioncompare.samclip import automatic
from visioncompare.samclip.algorithms import proposal_params
from visioncompare.samclip.backend import AutomaticParams
from visioncompare.samclip.composed import ComposedSamOpenClip, build_composed
from visioncompare.samclip.merged import MergedSamClipBackend, clip_embed_dim, text_tower_only
from visioncompare.samclip.merged_arch import LOGIT_SCALE_FACTOR, MergedSamClip, build_merged, region_weights
from visioncompare.samclip.model import SamClipModel
from visioncompare.samclip.openvocab import mask_crop, softmax
from visioncompare.samclip.parts import sam_part, text_part
from visioncompare.samclip.settings import SamClipSettings
from visioncompare.samclip.weights import SHAPES_NOTE
from visioncompare.shapes_models.cards import WEIGHTS_DIR
from visioncompare.shapes_models.vocabulary import CLASSES

LAMBDA_SAM = 10.0  # the paper's: 1 made SAM forget, 100 stalled CLIP
FOCAL_TO_DICE = 20.0
MIN_OBJECT_PIXELS = 60
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
CHECK_SEED_OFFSET = 50_000  # held-out scenes of the progress check: apart from the final evaluation's

# The student's parts, by parameter-name prefix, and the stages that train each. The prompt
# encoder is the teacher's, frozen (the paper's only frozen part).
PARTS: dict[str, tuple[str, ...]] = {
    "backbone": ("sam.image_encoder.patch_embed.", "sam.image_encoder.pos_embed", "sam.image_encoder.blocks."),
    "neck": ("sam.image_encoder.neck.",),
    "mask_decoder": ("sam.mask_decoder.",),
    "prompt_encoder": ("sam.prompt_encoder.",),
    "clip_head": ("clip_head.",),
}
FROZEN = frozenset({"prompt_encoder"})
STAGE_TRAINS: dict[str, frozenset[str]] = {
    "probe": frozenset({"clip_head"}),
    "distill": frozenset(PARTS) - FROZEN,
}


def part_of(name: str) -> str:
    for part, prefixes in PARTS.items():
        if name.startswith(prefixes):
            return part
    raise ValueError(f"parameter {name} belongs to no part of the merged SAM-CLIP")


def make_trainable(student: MergedSamClip) -> None:
    """The student is a deep copy of a frozen teacher: set every part's `requires_grad`
    explicitly (all but the frozen prompt encoder)."""
    for name, p in student.named_parameters():
        p.requires_grad_(part_of(name) not in FROZEN)


def stage_parameters(student: MergedSamClip, stage: str) -> list[torch.nn.Parameter]:
    return [p for n, p in student.named_parameters() if part_of(n) in STAGE_TRAINS[stage]]


def snapshot(student: MergedSamClip) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().clone() for n, p in student.named_parameters()}


def parts_record(
    student: MergedSamClip, initial: dict[str, torch.Tensor], run_start: dict[str, torch.Tensor]
) -> dict[str, dict[str, Any]]:
    """Per part: parameters, trainable parameters, relative drift from the teacher
    (||now - init|| / ||init|| over the parameters copied from it: all of SAM's, the CLIP head's
    blocks; its new LayerNorm and MLP have no teacher) and the largest change in this run."""
    out: dict[str, dict[str, Any]] = {}
    sums: dict[str, list[float]] = {part: [0.0, 0.0, 0.0] for part in PARTS}
    for part in PARTS:
        out[part] = {"parameters": 0, "trainable": 0}
    for name, p in student.named_parameters():
        part = part_of(name)
        now = p.detach().float()
        out[part]["parameters"] += p.numel()
        out[part]["trainable"] += p.numel() if p.requires_grad else 0
        if name.startswith(("sam.", "clip_head.blocks.")):
            sums[part][0] += float((now - initial[name]).pow(2).sum())
            sums[part][1] += float(initial[name].pow(2).sum())
        sums[part][2] = max(sums[part][2], float((now - run_start[name]).abs().max()))
    for part, (diff, norm, moved) in sums.items():
        out[part]["drift_from_teacher"] = round((diff / max(norm, 1e-12)) ** 0.5, 6)
        out[part]["max_change_this_run"] = moved
    return out


def audit(weights: Path, args: argparse.Namespace) -> None:
    """Record in the card of finished weights how far each part is from the teachers (for
    weights written before the card kept a training record): `--audit FILE`."""
    _, _, student = teachers_and_student(args)
    initial = snapshot(student)
    state, card = load_stage(weights)
    student.load_state_dict({k: v.float() for k, v in state.items()})
    record = parts_record(student, initial, initial)
    for row in record.values():
        del row["trainable"], row["max_change_this_run"]  # not knowable after the run
    card = card or {}
    card["parts_audit"] = {
        "how": "drift from the teachers measured after the run (python -m shapes.train_samclip --audit); "
        "which parameters were trainable in the run is not recorded",
        "parts": record,
    }
    weights.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card["parts_audit"], indent=2))


def untrained_parts(record: dict[str, dict[str, Any]], meant: frozenset[str]) -> list[str]:
    """What is wrong with a run's training record: a part meant to train that has no trainable
    parameter or did not move, a frozen part that is trainable or moved."""
    problems = []
    for part, row in record.items():
        if part in meant and (row["trainable"] != row["parameters"] or row["max_change_this_run"] == 0.0):
            problems.append(
                f"{part} was meant to train but {row['trainable']} of {row['parameters']} parameters "
                f"were trainable and the largest change was {row['max_change_this_run']:.3g}"
            )
        if part in FROZEN and (row["trainable"] or row["max_change_this_run"]):
            problems.append(f"{part} is meant to stay frozen but changed by {row['max_change_this_run']:.3g}")
    return problems


#: The label of a region that shows no object (the served background prompts together).
BACKGROUND = len(CLASSES)


class Region(NamedTuple):
    """A region of a student image (None: the whole image), the teacher image it is matched to,
    and, where the shapes world knows it, what it shows (a CLASSES index or BACKGROUND)."""

    mask: np.ndarray | None
    target: np.ndarray
    label: int | None = None


@dataclass
class ClipSample:
    """One student image and its regions. The first `dense` regions are disjoint, and each
    patch token they cover (by at least half) is matched to its region's teacher image too."""

    image: np.ndarray
    regions: list[Region] = field(default_factory=list)
    dense: int = 0


@dataclass
class SamSample:
    image: np.ndarray
    points: np.ndarray  # N x 2 (x, y), one prompt each
    boxes: np.ndarray  # M x 4 (x1, y1, x2, y2), one prompt each


def scene_sam_sample(rng: random.Random, scene: Scene) -> SamSample | None:
    objects = [o for o in scene.objects if o.mask.sum() >= 30]
    if not objects:
        return None
    points, boxes = [], []
    for obj in objects:
        ys, xs = np.nonzero(obj.mask)
        k = rng.randrange(len(xs))
        points.append((float(xs[k]) + 0.5, float(ys[k]) + 0.5))
        boxes.append([v + rng.uniform(-3, 3) for v in box_of(obj.mask)])
    return SamSample(scene.image, np.array(points), np.array(boxes))


class ProposalPair(NamedTuple):
    """A crop of a SAM proposal, as the service crops it, the teacher image it is matched to,
    and the label of the object it matches (BACKGROUND: none)."""

    crop: np.ndarray
    target: np.ndarray
    label: int


def proposal_pairs(seeds: Iterable[int], teacher: ComposedSamOpenClip, params: AutomaticParams) -> list[ProposalPair]:
    """Crops of the SAM teacher's open-vocabulary proposals (the served proposal settings, the
    served crop), each matched to the clean crop of the object it matches, or, for background,
    to itself. The student names masks from such crops when it serves (masks named by crops);
    without them it saw only clean crops and degraded ground-truth masks, and named real
    proposals worse than clean crops (0.45 against 0.84 top-1, where the CLIP teacher, trained
    on proposal crops, gets 0.54 against 0.88)."""
    return [
        ProposalPair(
            mask_crop(scene.image, mask),
            mask_crop(scene.image, obj.mask if obj is not None else mask),
            CLASSES.index(obj.category) if obj is not None else BACKGROUND,
        )
        for scene, mask, obj in matched_proposals(seeds, teacher, params)
    ]


class ShapesData:
    """Crops, regions and prompted scenes of the shapes world. The scenes of step k are fixed
    by k (training seeds from `seed_offset`), so a resumed run sees what it would have seen.
    `proposal_crops` crops of real proposals (`pool`, proposal_pairs) join each CLIP batch."""

    def __init__(
        self,
        seed: int,
        seed_offset: int,
        scenes_per_step: int,
        crop_fraction: float,
        pool: Sequence[ProposalPair] = (),
        proposal_crops: int = 0,
        proposal_targets: str = "object",
    ) -> None:
        self.seed = seed
        self.seed_offset = seed_offset
        self.scenes_per_step = scenes_per_step
        self.crop_fraction = crop_fraction
        self.pool = list(pool)
        self.proposal_crops = min(proposal_crops, len(self.pool))
        self.proposal_targets = proposal_targets
        self.recent: list[Scene] = []
        self.rng = random.Random(seed)

    def start_step(self, step: int) -> None:
        first = self.seed_offset + step * self.scenes_per_step
        self.rng = random.Random(self.seed * 1_000_003 + step)
        self.recent = [generate_scene(TRAIN_SEEDS[first + i]) for i in range(self.scenes_per_step)]

    def clip_batch(self) -> list[ClipSample]:
        out: list[ClipSample] = []
        for scene in self.recent:
            union = np.zeros(scene.image.shape[:2], bool)
            for obj in scene.objects:
                union |= obj.mask
            regions: list[Region] = []
            proposals: list[Region] = []
            for obj in scene.objects:
                if obj.mask.sum() < MIN_OBJECT_PIXELS:
                    continue
                label = CLASSES.index(obj.category)
                clean = mask_crop(scene.image, obj.mask)
                cut = degrade(self.rng, obj.mask)
                if self.rng.random() < self.crop_fraction:
                    crop = mask_crop(scene.image, cut) if self.rng.random() < 0.5 else clean
                    out.append(ClipSample(crop, [Region(None, crop, label)]))
                regions.append(Region(obj.mask, clean, label))
                # a proposal-like mask names the object as its clean crop does
                proposals.append(Region(cut, clean, label))
            patch = background_patch(self.rng, scene.image, union)
            if patch is not None:
                if self.rng.random() < self.crop_fraction:
                    out.append(ClipSample(patch, [Region(None, patch, BACKGROUND)]))
                if (~union).sum() >= MIN_OBJECT_PIXELS:
                    regions.append(Region(~union, patch, BACKGROUND))
            if regions:
                out.append(ClipSample(scene.image, regions + proposals, dense=len(regions)))
        for pair in self.rng.sample(self.pool, self.proposal_crops):
            target = pair.target if self.proposal_targets == "object" else pair.crop
            out.append(ClipSample(pair.crop, [Region(None, target, pair.label)]))
        return out

    def sam_batch(self, count: int, teacher: ComposedSamOpenClip) -> list[SamSample]:
        samples = [scene_sam_sample(self.rng, scene) for scene in self.recent[:count]]
        return [s for s in samples if s is not None]


class FolderData:
    """Image folders: whole images for CLIP; for SAM, prompts from the SAM teacher's own
    automatic masks (a point inside and the box of each)."""

    def __init__(self, seed: int, clip_images: Path, sam_images: Path, params: AutomaticParams, batch: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.clip_files = self._files(clip_images)
        self.sam_files = self._files(sam_images)
        self.params = params
        self.batch = batch

    @staticmethod
    def _files(folder: Path) -> list[Path]:
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SystemExit(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
        return files

    def start_step(self, step: int) -> None:
        self.rng = random.Random(self.seed * 1_000_003 + step)

    def _load(self, files: list[Path]) -> np.ndarray:
        from PIL import Image

        with Image.open(self.rng.choice(files)) as img:
            return np.asarray(img.convert("RGB"))

    def clip_batch(self) -> list[ClipSample]:
        images = [self._load(self.clip_files) for _ in range(self.batch)]
        return [ClipSample(image, [Region(None, image)]) for image in images]

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


def caption_bank(teacher: ComposedSamOpenClip, settings: SamClipSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit text embeddings the label distributions are taken over: the served classifier (the
    class names under the service's templates, then its background prompts) and one caption
    per size, colour and shape."""
    served = teacher.embed_texts([*CLASSES, *settings.background_prompts], settings.prompt_templates)
    captions = [f"a {size} {colour} {shape}" for size in SIZES for colour in COLOURS for shape in CLASSES]
    described = teacher.embed_texts(captions, ("{}",))
    return torch.as_tensor(served), torch.as_tensor(described)


class Distiller:
    """The student, its teachers, and the two losses."""

    def __init__(
        self,
        teacher: ComposedSamOpenClip,
        student: MergedSamClip,
        device: torch.device,
        banks: Sequence[torch.Tensor],
        *,
        distribution_weight: float,
        distribution_scale: float,
        caption_weight: float,
        dense_weight: float,
        label_weight: float = 0.0,
    ) -> None:
        self.teacher = teacher
        self.student = student.to(device)
        self.device = device
        self.banks = [b.to(device) for b in banks]
        self.distribution_weight = distribution_weight
        self.distribution_scale = distribution_scale
        self.bank_weights = (1.0, caption_weight)
        self.dense_weight = dense_weight
        self.label_weight = label_weight
        self.resize = teacher.sam_part.resize
        self.patch = int(student.sam.image_encoder.patch_embed.proj.stride[0])
        self.side = student.img_size // self.patch

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

    def match(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Per row: 1 - cosine, plus the weighted KL divergence of the student's label
        distributions from the teacher's over each bank (N unit vectors each side)."""
        loss = 1 - (student * teacher).sum(-1)
        if self.distribution_weight:
            for bank, weight in zip(self.banks, self.bank_weights, strict=True):
                if not weight:
                    continue
                t = F.log_softmax(self.distribution_scale * teacher @ bank.T, dim=-1)
                s = F.log_softmax(self.distribution_scale * student @ bank.T, dim=-1)
                loss = loss + self.distribution_weight * weight * (t.exp() * (t - s)).sum(-1)
        return loss

    def regions(self, sample: ClipSample, size: tuple[int, int]) -> torch.Tensor:
        """R x side x side patch coverage of the sample's regions (None: the image, not padding)."""
        whole = np.ones(sample.image.shape[:2], bool)
        masks = [whole if r.mask is None else r.mask for r in sample.regions]
        return region_weights(torch.as_tensor(np.stack(masks)), size, self.student.img_size, self.side).to(self.device)

    def clip_loss(self, samples: Sequence[ClipSample], train_backbone: bool) -> torch.Tensor:
        x, sizes = self._prepare([s.image for s in samples])
        with torch.set_grad_enabled(train_backbone):
            tokens = self.student.backbone(x)
        head = self.student.clip_head.tokens(tokens)
        teacher = self.teacher_embeddings([r.target for s in samples for r in s.regions])
        pooled, dense_losses, patch_labels = [], [], []
        first = 0
        for k, (sample, size) in enumerate(zip(samples, sizes, strict=True)):
            weights = self.regions(sample, size)
            pooled.append(self.student.pooled(head[k : k + 1], weights))
            if self.dense_weight and sample.dense:
                cover = weights[: sample.dense].flatten(1)  # R x hw
                owner = cover.argmax(0)
                inside = cover.amax(0) >= 0.5
                patches = F.normalize(self.student.dense(head[k]), dim=-1).flatten(0, 1)[inside]
                targets = teacher[first : first + sample.dense][owner[inside]]
                if len(patches):
                    dense_losses.append(self.match(patches, targets).mean())
                    dense_labels = [r.label for r in sample.regions[: sample.dense]]
                    if self.label_weight and None not in dense_labels:
                        owned = torch.tensor(dense_labels, device=self.device)[owner[inside]]
                        patch_labels.append(self.label_loss(patches, owned))
            first += len(sample.regions)
        student = F.normalize(torch.cat(pooled), dim=-1)
        loss = self.match(student, teacher).mean()
        if dense_losses:
            loss = loss + self.dense_weight * torch.stack(dense_losses).mean()
        if patch_labels:
            loss = loss + self.dense_weight * self.label_weight * torch.stack(patch_labels).mean()
        if self.label_weight:
            regions = (r for s in samples for r in s.regions)
            labelled = [(k, r.label) for k, r in enumerate(regions) if r.label is not None]
            if labelled:
                rows, shown = zip(*labelled, strict=True)
                shown_t = torch.tensor(shown, device=self.device)
                loss = loss + self.label_weight * self.label_loss(student[list(rows)], shown_t)
        return loss

    def label_loss(self, student: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the served label distribution (the classes and, together, the
        background prompts, at the teacher's logit scale) against what the regions show."""
        n = len(CLASSES)
        log_p = F.log_softmax(self.teacher.logit_scale * student @ self.banks[0].T, dim=-1)
        log_p = torch.cat([log_p[:, :n], torch.logsumexp(log_p[:, n:], dim=-1, keepdim=True)], dim=-1)
        return F.nll_loss(log_p, labels)

    def _decode(self, sam: Any, features: torch.Tensor, sample: SamSample) -> list[Any]:
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
        x, _ = self._prepare([s.image for s in samples])
        features = self.student.sam_features(self.student.backbone(x))
        with torch.no_grad():
            teacher_features = self.teacher.sam.image_encoder(x)
        total = torch.zeros((), device=self.device)
        for k, sample in enumerate(samples):
            with torch.no_grad():
                taught = self._decode(self.teacher.sam, teacher_features[k : k + 1], sample)
            learnt = self._decode(self.student.sam, features[k : k + 1], sample)
            for (logits, iou), (t_logits, t_iou) in zip(learnt, taught, strict=True):
                target = (t_logits > 0).float()
                focal = sigmoid_focal_loss(logits, target, reduction="none").mean((2, 3))
                p = logits.sigmoid()
                dice = 1 - (2 * (p * target).sum((2, 3)) + 1) / (p.sum((2, 3)) + target.sum((2, 3)) + 1)
                total = total + (FOCAL_TO_DICE * focal + dice).mean() + F.mse_loss(iou, t_iou)
        return total / max(len(samples), 1)


class HeldOutCheck:
    """A quick held-out check of the student as it trains, on scenes apart from the final
    evaluation's: zero-shot top-1 on object crops (the classify path), on crops of the SAM
    teacher's proposals that match an object (the labelling path of masks named by crops; with
    `params`) and on the objects' masks pooled in their scene (the labelling path of the tokens),
    the patches' mean IoU over the classes and background against the scene's class map (the
    semantic path), and the SAM loss on held-out prompts; with `served` settings, the semantic
    mIoU of the first `served_scenes` scenes as the service's model makes it (masks named by their
    crops, at the student's logit scale factor), the figure the merge is judged by."""

    def __init__(
        self,
        distiller: Distiller,
        scenes: int,
        params: AutomaticParams | None = None,
        served: SamClipSettings | None = None,
        served_scenes: int = 0,
    ) -> None:
        self.d = distiller
        self.served_settings = served
        self.served_scenes = served_scenes if served is not None else 0
        seeds = [EVAL_SEEDS[CHECK_SEED_OFFSET + i] for i in range(scenes)]
        self.scenes = [generate_scene(seed) for seed in seeds]
        rng = random.Random(0)
        self.sam_samples = [s for s in (scene_sam_sample(rng, scene) for scene in self.scenes) if s is not None]
        self.served = distiller.banks[0]  # classes, then background prompts
        self.proposals = [
            (mask_crop(scene.image, mask), CLASSES.index(obj.category))
            for scene, mask, obj in (matched_proposals(seeds, distiller.teacher, params) if params else ())
            if obj is not None
        ]

    def proposal_top1(self) -> float:
        d, hits = self.d, 0
        for start in range(0, len(self.proposals), 32):
            chunk = self.proposals[start : start + 32]
            samples = [ClipSample(crop, [Region(None, crop)]) for crop, _ in chunk]
            x, sizes = d._prepare([s.image for s in samples])
            head = d.student.clip_head.tokens(d.student.backbone(x))
            for k, (sample, (_, truth)) in enumerate(zip(samples, chunk, strict=True)):
                v = F.normalize(d.student.pooled(head[k : k + 1], d.regions(sample, sizes[k])), dim=-1)
                hits += int((v @ self.served[: len(CLASSES)].T).argmax()) == truth
        return hits / max(len(self.proposals), 1)

    @torch.no_grad()
    def __call__(self) -> dict[str, float]:
        d, n = self.d, len(CLASSES)
        student = d.student
        was_training = student.training
        student.eval()
        crop_hits = region_hits = objects = 0
        inter, union = np.zeros(n + 1), np.zeros(n + 1)
        sam_loss = 0.0
        for scene in self.scenes:
            objs = [o for o in scene.objects if o.mask.sum() >= MIN_OBJECT_PIXELS]
            if not objs:
                continue
            truth = [CLASSES.index(o.category) for o in objs]
            crops = [ClipSample(mask_crop(scene.image, o.mask), [Region(None, scene.image)]) for o in objs]
            whole = ClipSample(scene.image, [Region(o.mask, scene.image) for o in objs])
            x, sizes = d._prepare([c.image for c in crops] + [scene.image])
            head = student.clip_head.tokens(student.backbone(x))
            for k, crop in enumerate(crops):
                v = F.normalize(student.pooled(head[k : k + 1], d.regions(crop, sizes[k])), dim=-1)
                crop_hits += int((v @ self.served[:n].T).argmax()) == truth[k]
            v = F.normalize(student.pooled(head[-1:], d.regions(whole, sizes[-1])), dim=-1)
            region_hits += sum(int(i) == t for i, t in zip((v @ self.served[:n].T).argmax(1), truth, strict=True))
            objects += len(objs)
            cls = np.zeros(scene.image.shape[:2], bool)
            label_masks = [~np.any([o.mask for o in scene.objects], axis=0)] + [
                np.any([o.mask for o in scene.objects if o.category == c] or [cls], axis=0) for c in CLASSES
            ]
            cover = d.regions(ClipSample(scene.image, [Region(m, scene.image) for m in label_masks]), sizes[-1])
            rows, cols = -(-sizes[-1][0] // d.patch), -(-sizes[-1][1] // d.patch)
            truth_grid = cover[:, :rows, :cols].argmax(0)
            probs = F.softmax(
                d.teacher.logit_scale * F.normalize(student.dense(head[-1, :rows, :cols]), dim=-1) @ self.served.T, -1
            )
            pred = torch.cat([probs[..., n:].sum(-1, keepdim=True), probs[..., :n]], -1).argmax(-1)
            for c in range(n + 1):
                inter[c] += int(((pred == c) & (truth_grid == c)).sum())
                union[c] += int(((pred == c) | (truth_grid == c)).sum())
        for sample in self.sam_samples:
            sam_loss += float(d.sam_loss([sample]))
        proposals = {"proposal_top1": self.proposal_top1()} if self.proposals else {}
        served = {}
        if self.served_scenes:
            assert self.served_settings is not None
            model = merged_model(student, d.teacher, self.served_settings)
            client = accuracy.InProcessClient(model)
            served["served_semantic_miou"] = accuracy.semantic_miou(client, self.scenes[: self.served_scenes])
        student.train(was_training)
        figures = {
            "crop_top1": crop_hits / max(objects, 1),
            **proposals,
            "region_top1": region_hits / max(objects, 1),
            "patch_miou": float((inter[union > 0] / union[union > 0]).mean()),
            "sam_loss": sam_loss / max(len(self.sam_samples), 1),
            **served,
        }
        return {k: round(v, 4) for k, v in figures.items()}


def check_score(figures: dict[str, float]) -> float:
    """What the best checkpoint is chosen by: the top-1 figures and patch mIoU, and the served
    semantic mIoU (when measured) counted twice: continuing R9 with labels or with the teacher's
    naming of proposal crops as targets left the other figures at R9's level while the served
    semantic mIoU fell by 0.04 to 0.07 (docs/samclip_merge.md)."""
    top1 = figures["crop_top1"] + figures.get("proposal_top1", 0.0) + figures["region_top1"]
    return top1 + figures["patch_miou"] + 2 * figures.get("served_semantic_miou", 0.0)


def cosine_lr(step: int, total: int, warmup: int) -> float:
    """A plain float: it lands in the optimizer's state, which last.pt must load weights_only."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def merged_model(student: MergedSamClip, teacher: ComposedSamOpenClip, settings: SamClipSettings) -> SamClipModel:
    """The SAM-CLIP service's model around the student, with the service's settings."""
    plan = plan_device(settings.device, "fp32")
    backend = MergedSamClipBackend(
        merged=student.eval(),
        sam=sam_part(student.sam, settings, plan),
        text=text_part(text_tower_only(copy.deepcopy(teacher.clip)), teacher.tokenizer, settings, plan),
        description=teacher.describe(),
        crop_batch_size=settings.crop_batch_size,
        regions=settings.merged_regions,
    )
    model = SamClipModel(settings, backend_factory=lambda *_: backend)
    model.load()
    return model


def evaluate(student: MergedSamClip, teacher: ComposedSamOpenClip, settings: SamClipSettings, scenes: int) -> dict:
    """Held-out figures of the student as the service runs it (`shapes.accuracy`'s functions): masks
    named by their crops (as the shapes preset serves it) and by the tokens (the paper's path)."""
    eval_scenes = accuracy.eval_scenes(scenes)
    figures: dict[str, Any] = {}
    by_crops = accuracy.InProcessClient(
        merged_model(student, teacher, settings.model_copy(update={"merged_regions": "crops"}))
    )
    figures["semantic_miou_crops"] = accuracy.semantic_miou(by_crops, eval_scenes)
    figures["open_vocabulary_mask_ap_crops"] = accuracy.samclip_open_vocabulary_ap(by_crops, eval_scenes)["mask_ap"]
    tokens = settings.model_copy(update={"merged_regions": "tokens"})
    for refine in (False, True):
        model = merged_model(student, teacher, tokens.model_copy(update={"semantic_refinement": refine}))
        client = accuracy.InProcessClient(model)
        key = "semantic_miou_refined" if refine else "semantic_miou_clip_head"
        figures[key] = accuracy.semantic_miou(client, eval_scenes)
    figures.update(accuracy.sam_miou(client, eval_scenes))
    figures["crop_top1"] = accuracy.clip_top1(client, eval_scenes)
    figures["open_vocabulary_mask_ap"] = accuracy.samclip_open_vocabulary_ap(client, eval_scenes)["mask_ap"]
    return figures


#: The logit scale factors a calibration tries: the merge's own scale, as a factor of the teacher's.
CALIBRATION_FACTORS = tuple(round(0.5 + 0.05 * k, 2) for k in range(71))  # 0.5 ... 4.0


def fit_logit_scale_factor(learnt: np.ndarray, taught: np.ndarray, scale: float) -> tuple[float, dict[float, float]]:
    """The factor of CALIBRATION_FACTORS under which softmax(factor x scale x `learnt`) is closest
    to softmax(scale x `taught`) in mean KL divergence (N x L cosine similarities each), and
    the divergence at every factor."""
    target = softmax(scale * taught, axis=1)
    log_target = np.log(np.clip(target, 1e-12, None))
    kl: dict[float, float] = {}
    for factor in CALIBRATION_FACTORS:
        logits = factor * scale * learnt
        log_q = logits - logits.max(axis=1, keepdims=True)
        log_q -= np.log(np.exp(log_q).sum(axis=1, keepdims=True))
        kl[factor] = float((target * (log_target - log_q)).sum(axis=1).mean())
    return min(kl, key=lambda f: kl[f]), kl


def calibrate(
    student: MergedSamClip, teacher: ComposedSamOpenClip, settings: SamClipSettings, pairs: Sequence[ProposalPair]
) -> dict[str, Any]:
    """Fit the merge's logit scale factor without labels, and set it on `student`: the factor
    under which the student's label distributions of proposal crops (named as served, against
    the served classes and background prompts) are closest, in mean KL divergence, to the
    teacher's of the clean crops they match. Distilled into the teacher's space, the student's
    embedding of an ambiguous crop sits between the classes' and its probabilities come out
    flatter than the teacher's at the teacher's scale; the scale is fitted on `pairs` from
    scenes the run did not train on."""
    student.clip_head.logit_scale_factor.fill_(1.0)
    backend = merged_model(student, teacher, settings).backend
    text = backend.embed_texts([*CLASSES, *settings.background_prompts], settings.prompt_templates)
    learnt = backend.embed_crops([p.crop for p in pairs]) @ text.T
    taught = teacher.embed_crops([p.target for p in pairs]) @ text.T
    best, kl = fit_logit_scale_factor(learnt, taught, teacher.logit_scale)
    student.clip_head.logit_scale_factor.fill_(best)
    return {
        "logit_scale_factor": best,
        "how": "the factor (0.5 to 4) of the teacher's logit scale under which the student's label "
        "distributions of proposal crops are closest (mean KL) to the teacher's of the clean crops they match",
        "pairs": len(pairs),
        "mean_kl": {str(f): round(kl[f], 4) for f in sorted({0.5, 1.0, 2.0, 3.0, 4.0, best})},
    }


def calibration_pairs(
    args: argparse.Namespace, teacher: ComposedSamOpenClip, settings: SamClipSettings
) -> list[ProposalPair]:
    first = args.calibration_seed_offset
    seeds = tqdm(TRAIN_SEEDS[first : first + args.calibration_scenes], desc="calibration crops", unit="scene")
    return proposal_pairs(seeds, teacher, proposal_params(settings))


def calibrate_only(weights: Path, args: argparse.Namespace) -> None:
    """`--calibrate FILE`: fit the logit scale factor of finished weights, rewrite them with it
    and their card with the fit and the new held-out figures."""
    settings, teacher, student = teachers_and_student(args)
    state, card = load_stage(weights)
    student.load_state_dict({k: v.float() for k, v in state.items()})
    student.eval()
    record = calibrate(student, teacher, settings, calibration_pairs(args, teacher, settings))
    print(json.dumps(record), flush=True)
    save_student(student, weights)
    figures = evaluate(student.float(), teacher, settings.model_copy(update={"backend": "merged"}), args.eval_scenes)
    print(json.dumps(figures), flush=True)
    card = {k: v for k, v in (card or {}).items() if k not in ("file", "sha256")}  # write_card sets them
    card["calibration"] = {
        **record,
        "command": f"--calibrate {weights.name} --calibration-scenes "
        f"{args.calibration_scenes} --calibration-seed-offset {args.calibration_seed_offset}",
    }
    card["metrics"] = {**card.get("metrics", {}), **figures, "eval_scenes": args.eval_scenes}
    write_card(weights, **card)


def save_student(student: MergedSamClip, path: Path) -> None:
    """The student as it ships (fp16), and the student measured as it ships."""
    # fp16, but the logit scale factor: the card's value exactly
    state = {k: v if k == LOGIT_SCALE_FACTOR else v.half() for k, v in student.state_dict().items()}
    torch.save(state, path)
    student.load_state_dict(state)


def stages(probe_steps: int, steps: int) -> Iterator[tuple[str, int, int]]:
    for step in range(probe_steps):
        yield "probe", step, probe_steps
    for step in range(steps):
        yield "distill", step, steps


def optimizer_for(student: MergedSamClip, stage: str, args: argparse.Namespace) -> torch.optim.Optimizer:
    """A fresh AdamW per stage, as the paper's two stages: the CLIP head at the learning rate,
    the rest (distillation only) at backbone_lr_scale times it."""
    head = [p for n, p in student.named_parameters() if part_of(n) == "clip_head"]
    groups: list[dict[str, Any]] = [{"params": head, "lr": args.lr, "scale": 1.0}]
    if stage == "distill":
        rest = [p for n, p in student.named_parameters() if part_of(n) in STAGE_TRAINS["distill"] - {"clip_head"}]
        groups.append({"params": rest, "lr": args.lr * args.backbone_lr_scale, "scale": args.backbone_lr_scale})
    return torch.optim.AdamW(groups, lr=args.lr, weight_decay=0.05)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sam-variant", default="shapes")
    parser.add_argument("--sam-weights", default="shapes")
    parser.add_argument("--clip-model", default="shapes")
    parser.add_argument("--clip-pretrained", default="shapes")
    parser.add_argument("--cache-dir", type=Path, default=Path("models"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clip-images", type=Path, help="a folder of images for the CLIP loss (default: shapes)")
    parser.add_argument("--sam-images", type=Path, help="a folder of images for the SAM loss (default: shapes)")
    parser.add_argument("--probe-steps", type=int, default=200, help="head-probing steps")
    parser.add_argument("--steps", type=int, default=3000, help="multi-task distillation steps")
    parser.add_argument("--scenes-per-step", type=int, default=6, help="shapes scenes per step (crops, regions)")
    parser.add_argument(
        "--crop-fraction", type=float, default=0.3, help="share of objects also given as whole-image crops"
    )
    parser.add_argument("--clip-batch", type=int, default=24, help="whole images per CLIP batch (image folders)")
    parser.add_argument("--sam-batch", type=int, default=3, help="images per SAM batch")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--backbone-lr-scale", type=float, default=0.3)
    parser.add_argument("--lambda-sam", type=float, default=LAMBDA_SAM)
    parser.add_argument("--dense-weight", type=float, default=1.0, help="per-patch term (shapes scenes); 0: none")
    parser.add_argument(
        "--distribution-weight", type=float, default=1.0, help="label-distribution KL term; 0: the cosine alone"
    )
    parser.add_argument("--distribution-scale", type=float, default=50.0, help="logit scale of those distributions")
    parser.add_argument(
        "--caption-weight", type=float, default=0.0, help="weight of the size-colour-shape caption bank's KL term"
    )
    parser.add_argument(
        "--label-weight",
        type=float,
        default=0.0,
        help="cross-entropy of the served labels against what each region shows (shapes world); 0: none",
    )
    parser.add_argument(
        "--proposal-scenes",
        type=int,
        default=0,
        help="scenes whose SAM proposals' crops are trained on (shapes); 0: none",
    )
    parser.add_argument("--proposal-crops", type=int, default=12, help="proposal crops per step, from that pool")
    parser.add_argument(
        "--proposal-targets",
        choices=("object", "self"),
        default="object",
        help="what a proposal crop is matched to: the teacher's embedding of the clean crop of its object "
        "(of itself, for background), or of the same crop (the composition's naming, as in the paper)",
    )
    parser.add_argument("--proposal-seed-offset", type=int, default=990_000, help="first seed of those scenes")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seed-offset", type=int, default=900_000, help="first training scene seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-scenes", type=int, default=100, help="held-out scenes of the final evaluation")
    parser.add_argument("--check-scenes", type=int, default=40, help="held-out scenes of the progress check")
    parser.add_argument(
        "--check-served-scenes",
        type=int,
        default=20,
        help="of those, scenes whose semantic mIoU the check measures through the service's model; 0: none",
    )
    parser.add_argument("--eval-every", type=int, default=200, help="steps between progress checks; 0: none")
    parser.add_argument("--init", type=Path, help="start from this student (a state dict)")
    parser.add_argument("--resume", type=Path, help="continue the run that wrote this checkpoint (last.pt)")
    parser.add_argument("--save-every", type=int, default=100, help="steps between resumable checkpoints")
    parser.add_argument("--stop-after", type=int, help="steps this process runs before it saves last.pt and stops")
    parser.add_argument("--budget-minutes", type=float, help="minutes this process trains before it does the same")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--audit", type=Path, help="only record these weights' drift from the teachers in their card")
    parser.add_argument(
        "--calibration-scenes",
        type=int,
        default=300,
        help="scenes whose proposal crops fit the logit scale factor after training (shapes); 0: none",
    )
    parser.add_argument("--calibration-seed-offset", type=int, default=996_000, help="first seed of those scenes")
    parser.add_argument("--calibrate", type=Path, help="only fit the logit scale factor of these weights")
    return parser


def teacher_settings(args: argparse.Namespace) -> SamClipSettings:
    """The composition of the two teachers, as the SAM-CLIP service builds it."""
    return SamClipSettings(
        backend="composed",
        device=args.device,
        engine="torch",  # the teacher trains nothing but is read module by module; no ONNX export
        sam_attention="eager",  # segment_anything's own blocks: the student copies them and trains them
        metrics_port=None,
        cache_dir=args.cache_dir,
        sam_variant=args.sam_variant,
        sam_weights=args.sam_weights,
        clip_model=args.clip_model,
        clip_pretrained=args.clip_pretrained,
    )


def teachers_and_student(args: argparse.Namespace) -> tuple[SamClipSettings, ComposedSamOpenClip, MergedSamClip]:
    """The teachers' settings and composition, frozen, and a student initialised from them (a
    copy of the frozen SAM teacher: frozen too until `make_trainable`)."""
    settings = teacher_settings(args)
    teacher = build_composed(settings, plan_device(args.device, "fp32"))
    teacher.sam.requires_grad_(False)
    teacher.clip.requires_grad_(False)
    return settings, teacher, build_merged(teacher.sam, clip_embed_dim(teacher.clip, teacher.tokenizer))


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if (args.clip_images is None) != (args.sam_images is None):
        parser.error("give both --clip-images and --sam-images, or neither (the shapes world)")
    if args.init is not None and args.resume is not None:
        parser.error("--resume continues a run (its own weights); --init starts a new one: give one")
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    if args.audit is not None:
        audit(args.audit, args)
        return
    if args.calibrate is not None:
        calibrate_only(args.calibrate, args)
        return
    settings, teacher, student = teachers_and_student(args)
    make_trainable(student)  # the copy of the frozen teacher is frozen too until told otherwise
    initial = snapshot(student)  # the teacher-initialised student: what drift is measured from
    init_card = None
    if args.init is not None:
        state, init_card = load_stage(args.init)
        student.load_state_dict({k: v.float() for k, v in state.items()})
    checkpoints = args.out / "checkpoints"
    resumed: dict[str, Any] | None = None
    if args.resume is not None:
        resumed = torch.load(args.resume, map_location="cpu", weights_only=True)
        student.load_state_dict(resumed["model"])
        init_card = resumed.get("init_card")
        args.out = Path(resumed.get("out", args.out))
        checkpoints = args.resume.parent
    run_start = snapshot(student) if resumed is None else {k: v.float() for k, v in resumed["run_start"].items()}
    student.to(device).train()
    distiller = Distiller(
        teacher,
        student,
        device,
        caption_bank(teacher, settings),
        distribution_weight=args.distribution_weight,
        distribution_scale=args.distribution_scale,
        caption_weight=args.caption_weight,
        dense_weight=args.dense_weight,
        label_weight=args.label_weight,
    )
    params = proposal_params(settings)
    pool: list[ProposalPair] = []
    if args.clip_images is None and args.proposal_scenes:
        first = args.proposal_seed_offset
        seeds = tqdm(TRAIN_SEEDS[first : first + args.proposal_scenes], desc="proposal crops", unit="scene")
        pool = proposal_pairs(seeds, teacher, params)
    data: ShapesData | FolderData = (
        ShapesData(
            args.seed,
            args.seed_offset,
            args.scenes_per_step,
            args.crop_fraction,
            pool,
            args.proposal_crops,
            args.proposal_targets,
        )
        if args.clip_images is None
        else FolderData(args.seed, args.clip_images, args.sam_images, params, args.clip_batch)
    )
    check = None
    if args.clip_images is None and args.eval_every:
        served = settings.model_copy(update={"backend": "merged", "merged_regions": "crops"})
        check = HeldOutCheck(
            distiller, args.check_scenes, params if args.proposal_scenes else None, served, args.check_served_scenes
        )
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoints.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, Any]] = list(resumed["history"]) if resumed else []
    best_score = float(resumed["best_score"]) if resumed else -1.0
    elapsed = float(resumed["train_seconds"]) if resumed else 0.0
    done = int(resumed["done"]) if resumed else 0  # steps of both stages done before this process
    start = time.time() - elapsed

    def record(stage: str, step: int, total: int, global_step: int) -> None:
        nonlocal best_score
        if check is None:
            return
        measured = check()
        figures = {"stage": stage, "step": step + 1, "of": total, **measured, "seconds": round(time.time() - start)}
        history.append(figures)
        bar.write(json.dumps(figures))
        score = check_score(measured)
        if score > best_score:
            best_score = score
            torch.save(student.state_dict(), checkpoints / "best.pth")
            (checkpoints / "best.json").write_text(json.dumps(figures, indent=2) + "\n")

    last = checkpoints / "last.pt"

    def save_last(stage: str, done: int, optimizer: torch.optim.Optimizer) -> None:
        """What --resume continues from: the student, the optimizer, where the run is."""
        progress = {"stage": stage, "done": done, "history": history, "best_score": best_score}
        run = {"train_seconds": time.time() - start, "run_start": run_start, "init_card": init_card}
        torch.save(
            {
                "model": student.state_dict(),
                "optimizer": optimizer.state_dict(),
                **progress,
                **run,
                "out": str(args.out),
            },
            last,
        )

    total_steps = args.probe_steps + args.steps
    began, ran = time.time(), 0  # this process's start and steps
    bar = tqdm(total=total_steps, initial=done, desc="merge", unit="step", dynamic_ncols=True, mininterval=5)
    optimizer: torch.optim.Optimizer | None = None
    stage_now = ""
    global_step = -1
    for stage, step, total in stages(args.probe_steps, args.steps):
        global_step += 1
        if stage != stage_now:
            stage_now = stage
            optimizer = optimizer_for(student, stage, args)
        if global_step < done:
            continue
        assert optimizer is not None
        if resumed is not None and global_step == done:  # the optimizer of the stage the run stopped in
            if resumed["stage"] == stage:
                optimizer.load_state_dict(resumed["optimizer"])
            resumed = None
        factor = cosine_lr(step, total, args.warmup)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * group["scale"] * factor
        data.start_step(global_step)
        clip = distiller.clip_loss(data.clip_batch(), stage == "distill")
        loss = clip
        sam = torch.zeros(())
        if stage == "distill":
            sam = distiller.sam_loss(data.sam_batch(args.sam_batch, teacher))
            loss = clip + args.lambda_sam * sam
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        bar.update(1)
        bar.set_postfix_str(f"{stage} clip {clip.item():.4f} sam {sam.item():.4f}", refresh=False)
        if args.eval_every and ((global_step + 1) % args.eval_every == 0 or global_step + 1 == total_steps):
            record(stage, step, total, global_step)
        ran += 1
        out_of_time = args.budget_minutes is not None and time.time() - began > 60 * args.budget_minutes
        stop = global_step + 1 < total_steps and (ran == args.stop_after or out_of_time)
        if stop or (args.save_every and (global_step + 1) % args.save_every == 0):
            save_last(stage, global_step + 1, optimizer)
        if stop:
            bar.close()
            print(f"stopped after {global_step + 1} of {total_steps} steps; continue with --resume {last}", flush=True)
            return
    bar.close()
    train_seconds = time.time() - start
    meant = frozenset().union(
        *(STAGE_TRAINS[s] for s, n in (("probe", args.probe_steps), ("distill", args.steps)) if n)
    )
    parts = parts_record(student, initial, run_start)
    problems = untrained_parts(parts, meant)
    if problems:
        raise SystemExit("refusing to write weights: " + "; ".join(problems))
    if (checkpoints / "best.pth").exists() and check is not None:
        student.load_state_dict(torch.load(checkpoints / "best.pth", map_location="cpu", weights_only=True))
        parts = parts_record(student, initial, run_start)  # what ships: the best checkpoint
    student.eval()
    calibration = None
    if args.clip_images is None and args.calibration_scenes:
        calibration = calibrate(student, teacher, settings, calibration_pairs(args, teacher, settings))
    path = args.out / "samclip_shapes.pth"
    save_student(student, path)
    figures = evaluate(student.float(), teacher, settings.model_copy(update={"backend": "merged"}), args.eval_scenes)
    print(json.dumps(figures), flush=True)
    write_card(
        path,
        **card_fields(args, teacher),
        continued_from=init_card,
        parts=parts,
        check_history=history,
        calibration=calibration,
        metrics={**figures, "eval_scenes": args.eval_scenes, "train_seconds": round(train_seconds)},
    )


def card_fields(args: argparse.Namespace, teacher: ComposedSamOpenClip) -> dict[str, Any]:
    """What a card says about the run: model, teachers, data, hyper-parameters."""
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
            "shapes world: object crops, scene regions (masks and proposal-like copies), patches and "
            "prompted scenes from generated training scenes"
            if args.clip_images is None
            else f"images under {args.clip_images.name} and {args.sam_images.name}"
        ),
        "note": SHAPES_NOTE if args.clip_images is None else "",
        "hyperparameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }


def _teacher_file(args: argparse.Namespace, part: str) -> Path | None:
    from visioncompare.samclip.weights import resolve_clip_weights, resolve_sam_weights

    if part == "sam":
        return resolve_sam_weights(args.sam_weights, args.sam_variant, args.cache_dir).path
    return resolve_clip_weights(args.clip_pretrained, args.clip_model, args.cache_dir).path


if __name__ == "__main__":
    main()
