"""Accuracy of the shapes reference models on the held-out split, end to end.

    python -m bench.accuracy [--scenes 100]

Starts the local stack (the compose file's commands, shapes weights) and prints:
  - Mask R-CNN box and mask AP (pycocotools COCOeval), and its triangle corners (keypoint
    AP with OKS, corner errors in pixels): in-process (the model object, no transport) and
    through the gRPC service; the two must be identical;
  - for both SAM-CLIP services, the merged model (`samclip`) and the composition
    (`sam-clip-composed`), through the service: SAM mIoU with one interior point and with
    the box; zero-shot top-1 on object crops with the service's default templates;
    open-vocabulary instance segmentation mask AP (shape names as labels); zero-shot
    semantic segmentation mIoU (the merged model's with the SAM head's refinement, as
    served, and in-process with its CLIP head alone); and in-process, the merged model's
    mask AP and semantic mIoU with masks named from their crops (SAMCLIP_MERGED_REGIONS=crops);
  - the gateway's agreement figures for every pair of models.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import grpc

from shapes import accuracy
from visioncompare.maskrcnn.model import MaskRCNNModel
from visioncompare.maskrcnn.settings import MaskRCNNSettings
from visioncompare.runtime.client import VisionModelClient
from visioncompare.samclip.model import SamClipModel
from visioncompare.samclip.settings import SamClipSettings
from visioncompare.tools.stack import LocalStack
from visioncompare.v1 import comparison_service_pb2_grpc as cs_grpc


def in_process_maskrcnn(scenes: list, env: dict[str, str]) -> tuple[dict[str, float], dict[str, float | None]]:
    """The same model object the service runs, with the service's settings, called directly:
    instance segmentation AP and the triangle-corner figures."""
    os.environ.update(env)
    model = MaskRCNNModel(MaskRCNNSettings())
    model.load()
    return accuracy.maskrcnn_in_process_ap(model, scenes), accuracy.maskrcnn_in_process_keypoints(model, scenes)


def in_process_samclip_clip_head(scenes: list, env: dict[str, str]) -> float:
    """The merged SAM-CLIP's semantic mIoU from its CLIP head alone (refinement off)."""
    os.environ.update(env)
    model = SamClipModel(SamClipSettings(semantic_refinement=False))
    model.load()
    return accuracy.semantic_miou(accuracy.InProcessClient(model), scenes)


def in_process_samclip_masks_by_crops(scenes: list, env: dict[str, str]) -> dict[str, float]:
    """The merged SAM-CLIP with SAMCLIP_MERGED_REGIONS=crops: open-vocabulary mask AP and
    semantic mIoU when each mask is named from its own crop."""
    os.environ.update(env)
    client = accuracy.InProcessClient(_loaded(SamClipSettings(merged_regions="crops")))
    return {
        "open_vocabulary_mask_ap": accuracy.samclip_open_vocabulary_ap(client, scenes)["mask_ap"],
        "semantic_miou": accuracy.semantic_miou(client, scenes),
    }


def _loaded(settings: SamClipSettings) -> SamClipModel:
    model = SamClipModel(settings)
    model.load()
    return model


def samclip_figures(client: VisionModelClient, scenes: list) -> dict[str, object]:
    return {
        "sam": accuracy.sam_miou(client, scenes),
        "zero_shot_top1_crops": accuracy.clip_top1(client, scenes),
        "open_vocabulary": accuracy.samclip_open_vocabulary_ap(client, scenes),
        "semantic_miou": accuracy.semantic_miou(client, scenes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--port-offset", type=int, default=3000)
    args = parser.parse_args()
    scenes = accuracy.eval_scenes(args.scenes)
    stack = LocalStack(port_offset=args.port_offset)
    print(f"held-out scenes: {len(scenes)} ({sum(len(s.objects) for s in scenes)} objects); starting the stack ...")
    stack.up()
    figures: dict[str, object] = {}
    try:
        with (
            VisionModelClient(f"127.0.0.1:{stack.port('maskrcnn')}", timeout=300) as mrcnn,
            VisionModelClient(f"127.0.0.1:{stack.port('samclip')}", timeout=300) as merged,
            VisionModelClient(f"127.0.0.1:{stack.port('sam-clip-composed')}", timeout=300) as composed,
            grpc.insecure_channel(f"127.0.0.1:{stack.port('gateway')}") as channel,
        ):
            weights = {
                name: client.capabilities().runtime.weights
                for name, client in (("maskrcnn", mrcnn), ("samclip", merged), ("sam-clip-composed", composed))
            }
            print(f"weights: {weights}")
            start = time.time()
            figures["maskrcnn_service"] = accuracy.maskrcnn_service_ap(mrcnn, scenes)
            figures["maskrcnn_keypoints_service"] = accuracy.maskrcnn_service_keypoints(mrcnn, scenes)
            figures["maskrcnn_in_process"], figures["maskrcnn_keypoints_in_process"] = in_process_maskrcnn(
                scenes, stack.service_env("maskrcnn")
            )
            figures["samclip_merged"] = {
                **samclip_figures(merged, scenes),
                "semantic_miou_clip_head_alone": in_process_samclip_clip_head(scenes, stack.service_env("samclip")),
                "masks_by_crops_in_process": in_process_samclip_masks_by_crops(scenes, stack.service_env("samclip")),
            }
            figures["sam_clip_composed"] = samclip_figures(composed, scenes)
            figures["agreement"] = accuracy.gateway_agreement(cs_grpc.ComparisonServiceStub(channel), scenes)
            figures["seconds"] = round(time.time() - start)
    finally:
        stack.stop()
    same = (
        figures["maskrcnn_service"] == figures["maskrcnn_in_process"]
        and figures["maskrcnn_keypoints_service"] == figures["maskrcnn_keypoints_in_process"]
    )
    print(json.dumps(figures, indent=2))
    print(f"Mask R-CNN figures in-process == through the service: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
