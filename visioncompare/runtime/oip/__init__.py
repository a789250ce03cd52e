"""The Open Inference Protocol (KServe v2, `inference.GRPCInferenceService`) over the same runtime.

A second protocol front-end beside `VisionModelServicer`, over the same data plane
(`visioncompare.runtime.dataplane`): `servicer` maps model names to tasks and `codec` turns
tensors and parameters into the runtime's domain values (an image file, TaskOptions);
`DataPlane.infer` decodes, validates and batches as for VisionModelService; `codec`
turns the Prediction back into tensors. It is registered on the same grpc.aio server
(`visioncompare.runtime.server`), so the interceptor's bearer token, error codes and request
metrics, the message limits, TLS, health and the dynamic batcher are the project's own.

Models: one OIP model per served task, named `<service>.<task>`, e.g.
`maskrcnn.instance-segmentation` or `samclip.prompted-segmentation` (the task's
short name, as the gateway spells it); version "1". Its ModelMetadata lists the
inputs the model reads for that task and the outputs the task produces:

    inputs   IMAGE            BYTES [1]      the encoded file (JPEG, PNG, WebP, BMP, GIF, TIFF)
             LABELS           BYTES [-1]     text labels (tasks that take labels)
             PROMPT_TEMPLATES BYTES [-1]     CLIP prompt templates (SAM-CLIP's text tasks)
             POINTS           FP32 [-1, 2]   point prompts, pixels (prompted segmentation)
             POINT_LABELS     INT32 [-1]     1 foreground, 0 background (default: all 1)
             BOXES            FP32 [-1, 4]   box prompts, x1 y1 x2 y2 pixels
    outputs  BOXES FP32 [-1, 4], SCORES FP32 [-1], LABELS BYTES [-1] (detections), MASKS
             (COCO RLE counts, BYTES [-1]; UINT8 [-1, H, W] with mask_format=uint8),
             KEYPOINTS FP32 [-1, K, 3] (x, y, score) with KEYPOINT_NAMES BYTES [K],
             PREDICTED_IOU / STABILITY_SCORE FP32 [-1] (SAM), class LABELS, SCORES and
             SIMILARITIES (classification), LABEL_MAP UINT16 [H, W] with CLASS_NAMES
             BYTES [C] (semantic segmentation).

Task options are request parameters (`score_threshold`, `max_results`, ... and
`mask_format`); `codec.OUTPUTS` and `codec.PARAMETERS` are the tables. Every output is
sent in `raw_output_contents`, BYTES elements each preceded by its length as a
4-byte little-endian unsigned integer, as the protocol says. A bad tensor (unknown
name, wrong datatype or shape, raw contents that do not match the shape, a missing
IMAGE) or parameter is INVALID_ARGUMENT naming it; an unknown model NOT_FOUND.

Two of Triton's extensions are served too, because perf_analyzer calls them:
ModelConfig (max_batch_size 0: requests carry no batch dimension, the server
batches requests itself; every input but IMAGE optional) and ModelStatistics (the
counts and durations of each model's ModelInfer calls).
"""

from visioncompare.runtime.oip.codec import MODEL_VERSION, join_bytes, model_name, split_bytes, task_slug
from visioncompare.runtime.oip.servicer import EXTENSIONS, SERVICE_NAME, OipServicer, add_to_server

__all__ = [
    "EXTENSIONS",
    "MODEL_VERSION",
    "SERVICE_NAME",
    "OipServicer",
    "add_to_server",
    "join_bytes",
    "model_name",
    "split_bytes",
    "task_slug",
]
