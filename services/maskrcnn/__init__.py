"""Mask R-CNN (torchvision) behind the VisionModelService contract.

Object detection, instance segmentation and, when enabled, Keypoint R-CNN's
17 COCO keypoints. Run it with `maskrcnn-service` (settings: MASKRCNN_* env vars).
"""
