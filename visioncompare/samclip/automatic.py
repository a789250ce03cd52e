"""Per-request automatic mask generation on a precomputed (cached) image embedding.

segment-anything's SamAutomaticMaskGenerator and SamPredictor keep the image on
`self`, so each request gets its own generator and predictor: cheap objects
that share only the read-only networks. The predictor takes the embedding it
is given instead of running the image encoder.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.utils.amg import (
    MaskData,
    batched_mask_to_box,
    calculate_stability_score,
    is_box_near_crop_edge,
    mask_to_rle_pytorch,
    rle_to_mask,
    uncrop_masks,
)
from segment_anything.utils.transforms import ResizeLongestSide
from torchvision.ops.boxes import batched_nms

from visioncompare.runtime.masks import coco_rle
from visioncompare.runtime.types import Box, Mask, RleMask
from visioncompare.samclip.backend import AutomaticParams, ImageEmbedding, ProposedMask
from visioncompare.samclip.regions import remove_small_regions


class SamResize(ResizeLongestSide):
    """segment-anything's resize to the encoder's input, with no side under 1 px.

    Its own rounds the shorter side of an image more elongated than 2 x img_size : 1
    to 0 px (4000 x 1 at 1024 px, 289 x 1 at the shapes SAM's 128), which cannot be
    resized to; every other size is the same. Images, points and boxes all go
    through `get_preprocess_shape`, so they stay consistent.
    """

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
        newh, neww = ResizeLongestSide.get_preprocess_shape(oldh, oldw, long_side_length)
        return max(1, newh), max(1, neww)


class EmbeddedPredictor(SamPredictor):
    """A SamPredictor whose `set_image` installs a given embedding of the same image."""

    def __init__(self, sam: Any, embedding: ImageEmbedding) -> None:
        super().__init__(sam)
        self.transform = SamResize(sam.image_encoder.img_size)  # as the embedding was made
        self._embedding = embedding

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        if tuple(image.shape[:2]) != self._embedding.original_size:
            raise RuntimeError("EmbeddedPredictor serves the whole image only (crop_n_layers=0)")
        self.reset_image()
        self.features = self._embedding.features
        self.original_size = self._embedding.original_size
        self.input_size = self._embedding.input_size
        self.is_image_set = True


class RequestMaskGenerator(SamAutomaticMaskGenerator):
    """SamAutomaticMaskGenerator for one request, on one cached embedding."""

    def __init__(self, sam: Any, embedding: ImageEmbedding, params: AutomaticParams) -> None:
        super().__init__(
            sam,
            points_per_side=params.points_per_side,
            points_per_batch=params.points_per_batch,
            pred_iou_thresh=params.pred_iou_thresh,
            stability_score_thresh=params.stability_score_thresh,
            box_nms_thresh=params.box_nms_thresh,
            crop_n_layers=0,
            min_mask_region_area=0,  # the parent would demand OpenCV; set below
            output_mode="coco_rle",
        )
        self.min_mask_region_area = params.min_mask_region_area
        self.predictor = EmbeddedPredictor(sam, embedding)

    def _process_batch(
        self,
        points: np.ndarray,
        im_size: tuple[int, ...],
        crop_box: list[int],
        orig_size: tuple[int, ...],
    ) -> MaskData:
        """The parent's method, but masks failing the predicted-IoU filter are dropped at low
        resolution instead of after upsampling to full size: the same result for a fraction
        of the time and memory (upsampling is most of the cost on CPU)."""
        model, predictor = self.predictor.model, self.predictor
        orig_h, orig_w = orig_size
        coords = torch.as_tensor(predictor.transform.apply_coords(points, im_size), device=predictor.device)
        labels = torch.ones(coords.shape[0], dtype=torch.int, device=coords.device)
        sparse, dense = model.prompt_encoder(points=(coords[:, None, :], labels[:, None]), boxes=None, masks=None)
        low_res, iou_preds = model.mask_decoder(
            image_embeddings=predictor.features,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
        per_point = low_res.shape[1]
        low_res, iou_preds = low_res.flatten(0, 1), iou_preds.flatten(0, 1)
        point_of_mask = torch.as_tensor(points.repeat(per_point, axis=0))
        if self.pred_iou_thresh > 0.0:
            keep = iou_preds > self.pred_iou_thresh
            low_res, iou_preds, point_of_mask = low_res[keep], iou_preds[keep], point_of_mask[keep.cpu()]
        masks = model.postprocess_masks(low_res[:, None].float(), predictor.input_size, predictor.original_size)
        data = MaskData(masks=masks[:, 0], iou_preds=iou_preds.float(), points=point_of_mask)
        del masks, low_res

        # From here on as in SamAutomaticMaskGenerator._process_batch.
        data["stability_score"] = calculate_stability_score(
            data["masks"], model.mask_threshold, self.stability_score_offset
        )
        if self.stability_score_thresh > 0.0:
            data.filter(data["stability_score"] >= self.stability_score_thresh)
        data["masks"] = data["masks"] > model.mask_threshold
        data["boxes"] = batched_mask_to_box(data["masks"])
        keep_mask = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
        if not torch.all(keep_mask):
            data.filter(keep_mask)
        data["masks"] = uncrop_masks(data["masks"], crop_box, orig_h, orig_w)
        data["rles"] = mask_to_rle_pytorch(data["masks"])
        del data["masks"]
        return data

    @staticmethod
    def postprocess_small_regions(mask_data: MaskData, min_area: int, nms_thresh: float) -> MaskData:
        """The parent's method, with `remove_small_regions` that needs no OpenCV."""
        if len(mask_data["rles"]) == 0:
            return mask_data
        new_masks, scores = [], []
        for rle in mask_data["rles"]:
            mask = rle_to_mask(rle)
            mask, changed_holes = remove_small_regions(mask, min_area, mode="holes")
            mask, changed_islands = remove_small_regions(mask, min_area, mode="islands")
            new_masks.append(torch.as_tensor(mask).unsqueeze(0))
            scores.append(float(not (changed_holes or changed_islands)))
        masks = torch.cat(new_masks, dim=0)
        boxes = batched_mask_to_box(masks)
        keep = batched_nms(boxes.float(), torch.as_tensor(scores), torch.zeros(len(boxes)), iou_threshold=nms_thresh)
        for i in keep:
            if scores[i] == 0.0:
                mask_data["rles"][i] = mask_to_rle_pytorch(masks[i].unsqueeze(0))[0]
                mask_data["boxes"][i] = boxes[i]
        mask_data.filter(keep)
        return mask_data


def _mask(rle: dict[str, Any]) -> Mask:
    """A COCO RLE as SAM writes it, with the tight box and area pycocotools gives."""
    counts = rle["counts"]
    height, width = rle["size"]
    encoded = counts.encode() if isinstance(counts, str) else counts
    mask_rle = RleMask(height=int(height), width=int(width), counts=encoded)
    coco = coco_rle(mask_rle)
    x, y, w, h = (float(v) for v in mask_utils.toBbox(coco))
    return Mask(rle=mask_rle, bbox=Box(x, y, x + w, y + h), area=int(mask_utils.area(coco)))


def generate(sam: Any, image: np.ndarray, embedding: ImageEmbedding, params: AutomaticParams) -> list[ProposedMask]:
    """Masks for the whole image, best predicted IoU first; empty masks are dropped."""
    records = RequestMaskGenerator(sam, embedding, params).generate(image)
    masks = [
        ProposedMask(
            mask=_mask(r["segmentation"]),
            predicted_iou=float(r["predicted_iou"]),
            stability_score=float(r["stability_score"]),
        )
        for r in records
        if r["area"] > 0
    ]
    masks.sort(key=lambda m: m.predicted_iou, reverse=True)
    return masks
