"""The shapes training scripts, run for a couple of steps: they train, write weights that
load into the shipped architecture, and a model card whose SHA-256 and metrics are right;
a continued run nests the card of the stage it started from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from visioncompare.runtime.weights import sha256_of

SHORT_RUNS = {
    "sam": (
        "shapes.train_sam",
        ["--steps", "2", "--scenes-per-step", "2", "--eval-scenes", "1"],
        ("miou_point", "miou_box"),
    ),
    "clip": (
        "shapes.train_clip",
        [
            "--steps",
            "2",
            "--scenes-per-step",
            "2",
            "--eval-scenes",
            "2",
            "--proposal-scenes",
            "2",
            "--proposals-per-step",
            "4",
        ],
        ("zero_shot_top1_crops", "zero_shot_top1_degraded_crops", "zero_shot_top1_proposal_crops"),
    ),
    # Merges the shipped shapes SAM and CLIP: probing, then multi-task distillation.
    "samclip": (
        "shapes.train_samclip",
        [
            "--probe-steps",
            "2",
            "--steps",
            "2",
            "--scenes-per-step",
            "1",
            "--sam-batch",
            "1",
            "--warmup",
            "1",
            "--eval-scenes",
            "1",
            "--eval-every",
            "2",
            "--check-scenes",
            "2",
            "--check-served-scenes",
            "2",
            "--proposal-scenes",
            "2",
            "--proposal-crops",
            "3",
            "--label-weight",
            "1",
            "--calibration-scenes",
            "2",
        ],
        (
            "semantic_miou_clip_head",
            "semantic_miou_refined",
            "miou_point",
            "miou_box",
            "crop_top1",
            "open_vocabulary_mask_ap",
        ),
    ),
    "maskrcnn": (
        "shapes.train_maskrcnn",
        ["--iterations", "2", "--batch-size", "1", "--warmup", "1", "--eval-scenes", "1"],
        ("box_ap", "mask_ap"),
    ),
    # From the shipped Mask R-CNN; the first eval scene holds two triangles.
    "keypoints": (
        "shapes.train_keypoints",
        ["--iterations", "2", "--batch-size", "1", "--warmup", "1", "--eval-scenes", "1"],
        ("keypoint_ap", "triangle_box_ap", "triangle_recall"),
    ),
}


def build(name: str) -> torch.nn.Module:
    if name == "sam":
        from visioncompare.shapes_models.sam import build_shapes_sam

        return build_shapes_sam()
    if name == "clip":
        from visioncompare.shapes_models.clip import build_shapes_clip

        return build_shapes_clip()[0]
    if name == "samclip":
        from visioncompare.samclip.merged_arch import build_merged
        from visioncompare.shapes_models.clip import CONFIG
        from visioncompare.shapes_models.sam import build_shapes_sam

        return build_merged(build_shapes_sam(), clip_embed_dim=CONFIG["embed_dim"])
    if name == "keypoints":
        from shapes.train_keypoints import build as build_keypoints

        return build_keypoints()
    from shapes.train_maskrcnn import NUM_CLASSES
    from visioncompare.shapes_models.maskrcnn import build_shapes_maskrcnn

    return build_shapes_maskrcnn(num_classes=NUM_CLASSES)


def train(module: str, args: list[str], out: Path, *extra: str) -> dict:
    run = subprocess.run(
        [sys.executable, "-m", module, *args, "--threads", "1", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    [card_file] = out.glob("*.json")
    return json.loads(card_file.read_text())


@pytest.mark.parametrize("name", sorted(SHORT_RUNS))
def test_short_training_run_writes_loadable_weights_and_a_true_card(name: str, tmp_path: Path) -> None:
    module, args, metric_names = SHORT_RUNS[name]
    card = train(module, args, tmp_path / "stage1")
    weights = tmp_path / "stage1" / card["file"]
    assert card["sha256"] == sha256_of(weights)
    for metric in metric_names:
        assert 0.0 <= card["metrics"][metric] <= 1.0
    if name == "samclip":  # --proposal-scenes: the check names the teacher's proposal crops too
        assert card["check_history"] and all(0 <= row["proposal_top1"] <= 1 for row in card["check_history"])
        # and measures the served semantic mIoU, which the best checkpoint is chosen by too
        assert all(0 <= row["served_semantic_miou"] <= 1 for row in card["check_history"])
        factor = card["calibration"]["logit_scale_factor"]  # fitted on held-apart proposal crops
        assert 0.5 <= factor <= 4.0 and card["calibration"]["pairs"] >= 2
        assert float(torch.load(weights, weights_only=True)["clip_head.logit_scale_factor"]) == pytest.approx(factor)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    build(name).load_state_dict(state)  # strict: every tensor of the architecture, nothing else

    continued = train(module, args, tmp_path / "stage2", "--init", str(weights), "--seed", "1")
    assert continued["continued_from"] == card
    assert continued["sha256"] != card["sha256"]


def test_the_merge_takes_image_folders(tmp_path: Path) -> None:
    """train_samclip's full-scale data path: whole images for the CLIP loss, the SAM teacher's
    automatic masks as the SAM batch's prompts (here on a folder of three shapes scenes)."""
    from PIL import Image

    from shapes.scenes import generate_scene

    folder = tmp_path / "images"
    folder.mkdir()
    for seed in range(3):
        Image.fromarray(generate_scene(seed).image).save(folder / f"{seed}.png")
    card = train(
        "shapes.train_samclip",
        [
            "--clip-images",
            str(folder),
            "--sam-images",
            str(folder),
            "--probe-steps",
            "1",
            "--steps",
            "1",
            "--clip-batch",
            "2",
            "--sam-batch",
            "1",
            "--warmup",
            "1",
            "--eval-scenes",
            "1",
        ],
        tmp_path / "run",
    )
    assert card["calibration"] is None  # fitted on shapes proposals only
    assert card["data"] == "images under images and images" and card["note"] == ""
    assert card["sha256"] == sha256_of(tmp_path / "run" / card["file"])
    build("samclip").load_state_dict(torch.load(tmp_path / "run" / card["file"], map_location="cpu", weights_only=True))


def test_the_merge_trains_every_part_but_the_prompt_encoder(tmp_path: Path) -> None:
    """The student starts as a copy of the frozen SAM teacher: after a few distillation steps
    the backbone, neck, mask decoder and CLIP head have all moved away from it, the prompt
    encoder has not, and the card records each part's trainable count and drift."""
    from shapes.stages import load_stage
    from shapes.train_samclip import PARTS, part_of
    from visioncompare.samclip.merged_arch import build_merged
    from visioncompare.shapes_models.clip import CONFIG
    from visioncompare.shapes_models.sam import build_shapes_sam

    card = train(
        "shapes.train_samclip",
        ["--probe-steps", "1", "--steps", "3", "--scenes-per-step", "1", "--sam-batch", "1", "--warmup", "1"]
        + ["--eval-every", "0", "--eval-scenes", "1", "--calibration-scenes", "0"],
        tmp_path / "run",
    )
    trained, _ = load_stage(tmp_path / "run" / card["file"])
    teacher_sam = build_shapes_sam()
    teacher_sam.load_state_dict(load_stage(Path("visioncompare/shapes_models/weights/sam_shapes.pth"))[0])
    teacher = build_merged(teacher_sam, clip_embed_dim=CONFIG["embed_dim"]).state_dict()
    changed: dict[str, list[bool]] = {part: [] for part in PARTS}
    for name, value in trained.items():  # the student ships in fp16: compare with the teacher's fp16 values
        if name.startswith("sam."):  # (the CLIP head's blocks start as copies too, but its MLP is new)
            changed[part_of(name)].append(not torch.equal(value, teacher[name].half()))
    for part in ("backbone", "neck", "mask_decoder"):
        assert any(changed[part]), f"{part} did not move from the SAM teacher"
    assert not any(changed["prompt_encoder"]), "the frozen prompt encoder moved"
    parts = card["parts"]
    for part, row in parts.items():
        if part == "prompt_encoder":
            assert row["trainable"] == 0 and row["drift_from_teacher"] == 0.0
        else:
            assert row["trainable"] == row["parameters"] > 0 and row["drift_from_teacher"] > 0, part
    assert sum(row["parameters"] for row in parts.values()) == sum(p.numel() for p in build("samclip").parameters())


def test_the_merge_trains_on_crops_of_real_proposals() -> None:
    """With --proposal-scenes, each CLIP batch holds --proposal-crops crops of the SAM teacher's
    own proposals, each matched to the clean crop of its object (the service names masks from
    such crops). The short run above has the held-out check report the student's top-1 on them."""
    from shapes.scenes import TRAIN_SEEDS
    from shapes.train_samclip import BACKGROUND, ShapesData, build_parser, proposal_pairs, teacher_settings
    from visioncompare.runtime.device import plan_device
    from visioncompare.samclip.algorithms import proposal_params
    from visioncompare.samclip.composed import build_composed

    settings = teacher_settings(build_parser().parse_args([]))
    teacher = build_composed(settings, plan_device("cpu", "fp32"))
    pool = proposal_pairs(TRAIN_SEEDS[990_000:990_002], teacher, proposal_params(settings))
    assert len(pool) >= 3
    for crop, target, label in pool:  # an RGB crop, matched to an RGB image, labelled as its object
        assert crop.ndim == target.ndim == 3 and crop.shape[2] == target.shape[2] == 3
        assert 0 <= label <= BACKGROUND
    plain = ShapesData(0, 940_000, 1, 0.0)
    mixed = ShapesData(0, 940_000, 1, 0.0, pool, proposal_crops=3)
    plain.start_step(5)
    mixed.start_step(5)
    before, after = plain.clip_batch(), mixed.clip_batch()
    assert len(after) == len(before) + 3
    added = {id(s.image) for s in after[len(before) :]}
    assert added <= {id(p.crop) for p in pool}
    label_of = {id(p.crop): p.label for p in pool}  # what a proposal crop shows travels with it (--label-weight)
    assert all(s.regions[0].label == label_of[id(s.image)] for s in after[len(before) :])


def test_the_logit_scale_factor_is_fitted_to_the_teachers_distributions() -> None:
    """Calibration's fit: a student whose similarities are the teacher's halved needs twice the
    teacher's scale to give the teacher's label distributions."""
    from shapes.train_samclip import fit_logit_scale_factor

    taught = np.random.default_rng(0).uniform(-0.3, 0.9, (50, 6))
    best, kl = fit_logit_scale_factor(taught / 2, taught, scale=12.0)
    assert best == 2.0 and kl[2.0] == pytest.approx(0.0, abs=1e-9)
    assert kl[1.0] > kl[1.5] > kl[2.0] < kl[2.5]
    assert fit_logit_scale_factor(taught, taught, scale=12.0)[0] == 1.0


def test_a_run_whose_parts_did_not_move_is_refused() -> None:
    """The check the script runs before it writes weights: a student whose backbone stayed
    frozen (the copy-of-a-frozen-teacher bug) is named, and so is a prompt encoder that moved."""
    from shapes.train_samclip import STAGE_TRAINS, make_trainable, parts_record, snapshot, untrained_parts
    from visioncompare.samclip.merged_arch import build_merged
    from visioncompare.shapes_models.clip import CONFIG
    from visioncompare.shapes_models.sam import build_shapes_sam

    teacher = build_shapes_sam().requires_grad_(False)
    student = build_merged(teacher, clip_embed_dim=CONFIG["embed_dim"])
    start = snapshot(student)
    with torch.no_grad():
        for p in student.clip_head.parameters():
            p.add_(0.01)
    problems = untrained_parts(parts_record(student, start, start), STAGE_TRAINS["distill"])
    assert any(p.startswith("backbone was meant to train but 0 of") for p in problems), problems
    make_trainable(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.01)
    problems = untrained_parts(parts_record(student, start, start), STAGE_TRAINS["distill"])
    assert problems == ["prompt_encoder is meant to stay frozen but changed by 0.01"], problems


def test_an_interrupted_merge_resumes_where_it_stopped(tmp_path: Path) -> None:
    """A merge stopped after 3 of its 4 steps (past the warm-up: its last.pt holds the cosine
    schedule's learning rate and the held-out check's history so far) and resumed with --resume
    ends with the same weights, bit for bit, as the same merge run in one go."""
    args = ["--probe-steps", "1", "--steps", "3", "--scenes-per-step", "1", "--sam-batch", "1", "--warmup", "1"]
    args += ["--eval-every", "2", "--check-scenes", "1", "--proposal-scenes", "1", "--proposal-crops", "1"]
    args += ["--eval-scenes", "1", "--save-every", "0", "--calibration-scenes", "0"]
    whole = train("shapes.train_samclip", args, tmp_path / "whole")
    stopped = subprocess.run(
        [sys.executable, "-m", "shapes.train_samclip", *args, "--threads", "1", "--out", str(tmp_path / "parts")]
        + ["--stop-after", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    last = tmp_path / "parts" / "checkpoints" / "last.pt"
    assert f"stopped after 3 of 4 steps; continue with --resume {last}" in stopped.stdout
    assert not list((tmp_path / "parts").glob("*.pth"))  # no weights until the run is done
    resumed = subprocess.run(
        [sys.executable, "-m", "shapes.train_samclip", *args, "--threads", "1", "--resume", str(last)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    card = json.loads((tmp_path / "parts" / "samclip_shapes.json").read_text())
    assert card["sha256"] == whole["sha256"]


def test_the_best_checkpoint_is_chosen_by_the_served_semantic_miou_too() -> None:
    """A checkpoint that names crops a little better but serves a worse semantic map (as
    continuing the shipped merge with labels did: top-1 figures level, served mIoU -0.04) loses."""
    from shapes.train_samclip import check_score

    before = {"crop_top1": 0.80, "proposal_top1": 0.55, "region_top1": 0.40, "patch_miou": 0.31}
    after = {"crop_top1": 0.82, "proposal_top1": 0.57, "region_top1": 0.41, "patch_miou": 0.32}
    assert check_score(after) > check_score(before)
    assert check_score({**before, "served_semantic_miou": 0.61}) > check_score({**after, "served_semantic_miou": 0.57})


def test_the_label_term_rewards_the_served_label_of_what_a_region_shows() -> None:
    """--label-weight: an embedding at a class's text embedding costs least for that class; one
    at the last background prompt's costs least for BACKGROUND (the background prompts together)."""
    from shapes.train_samclip import BACKGROUND, Distiller, build_parser, caption_bank, teachers_and_student
    from visioncompare.shapes_models.vocabulary import CLASSES

    settings, teacher, student = teachers_and_student(build_parser().parse_args([]))
    banks = caption_bank(teacher, settings)
    d = Distiller(
        teacher, student, torch.device("cpu"), banks,
        distribution_weight=1.0, distribution_scale=50.0, caption_weight=0.0, dense_weight=1.0, label_weight=1.0,
    )  # fmt: skip
    served = banks[0]  # the classes, then the background prompts
    for shown in [*range(len(CLASSES)), BACKGROUND]:
        at = served[shown : shown + 1] if shown < BACKGROUND else served[-1:]  # the last background prompt's
        costs = [float(d.label_loss(at, torch.tensor([label]))) for label in [*range(len(CLASSES)), BACKGROUND]]
        assert min(range(len(costs)), key=costs.__getitem__) == shown
