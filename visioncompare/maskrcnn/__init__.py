"""Mask R-CNN (torchvision) behind the VisionModelService contract.

Object detection, instance segmentation and, when enabled, keypoints: Keypoint R-CNN's
17 COCO person keypoints, or the shapes preset's triangle corners.
Run it with `maskrcnn-service` (settings: MASKRCNN_* env vars).
"""
