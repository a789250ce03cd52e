from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Task(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UNSPECIFIED: _ClassVar[Task]
    TASK_OBJECT_DETECTION: _ClassVar[Task]
    TASK_INSTANCE_SEGMENTATION: _ClassVar[Task]
    TASK_KEYPOINT_DETECTION: _ClassVar[Task]
    TASK_ZERO_SHOT_CLASSIFICATION: _ClassVar[Task]
    TASK_PROMPTED_SEGMENTATION: _ClassVar[Task]
    TASK_AUTOMATIC_SEGMENTATION: _ClassVar[Task]
    TASK_SEMANTIC_SEGMENTATION: _ClassVar[Task]

class PromptKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROMPT_KIND_UNSPECIFIED: _ClassVar[PromptKind]
    PROMPT_KIND_POINT: _ClassVar[PromptKind]
    PROMPT_KIND_BOX: _ClassVar[PromptKind]
    PROMPT_KIND_TEXT: _ClassVar[PromptKind]

class TaskOption(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_OPTION_UNSPECIFIED: _ClassVar[TaskOption]
    TASK_OPTION_SCORE_THRESHOLD: _ClassVar[TaskOption]
    TASK_OPTION_MAX_RESULTS: _ClassVar[TaskOption]
    TASK_OPTION_LABELS: _ClassVar[TaskOption]
    TASK_OPTION_PROMPT_TEMPLATES: _ClassVar[TaskOption]
    TASK_OPTION_MASK_THRESHOLD: _ClassVar[TaskOption]
    TASK_OPTION_RESIZE: _ClassVar[TaskOption]
    TASK_OPTION_PROMPTS: _ClassVar[TaskOption]
    TASK_OPTION_AUTOMATIC: _ClassVar[TaskOption]
    TASK_OPTION_NMS_IOU_THRESHOLD: _ClassVar[TaskOption]
TASK_UNSPECIFIED: Task
TASK_OBJECT_DETECTION: Task
TASK_INSTANCE_SEGMENTATION: Task
TASK_KEYPOINT_DETECTION: Task
TASK_ZERO_SHOT_CLASSIFICATION: Task
TASK_PROMPTED_SEGMENTATION: Task
TASK_AUTOMATIC_SEGMENTATION: Task
TASK_SEMANTIC_SEGMENTATION: Task
PROMPT_KIND_UNSPECIFIED: PromptKind
PROMPT_KIND_POINT: PromptKind
PROMPT_KIND_BOX: PromptKind
PROMPT_KIND_TEXT: PromptKind
TASK_OPTION_UNSPECIFIED: TaskOption
TASK_OPTION_SCORE_THRESHOLD: TaskOption
TASK_OPTION_MAX_RESULTS: TaskOption
TASK_OPTION_LABELS: TaskOption
TASK_OPTION_PROMPT_TEMPLATES: TaskOption
TASK_OPTION_MASK_THRESHOLD: TaskOption
TASK_OPTION_RESIZE: TaskOption
TASK_OPTION_PROMPTS: TaskOption
TASK_OPTION_AUTOMATIC: TaskOption
TASK_OPTION_NMS_IOU_THRESHOLD: TaskOption

class Image(_message.Message):
    __slots__ = ("encoded", "raw")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    raw: RawImage
    def __init__(self, encoded: _Optional[bytes] = ..., raw: _Optional[_Union[RawImage, _Mapping]] = ...) -> None: ...

class RawImage(_message.Message):
    __slots__ = ("width", "height", "rgb")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    RGB_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    rgb: bytes
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., rgb: _Optional[bytes] = ...) -> None: ...

class ImageSize(_message.Message):
    __slots__ = ("width", "height")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class BoundingBox(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("id", "name", "score")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    score: float
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class RleMask(_message.Message):
    __slots__ = ("height", "width", "counts")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    counts: bytes
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., counts: _Optional[bytes] = ...) -> None: ...

class Mask(_message.Message):
    __slots__ = ("rle", "bbox", "area_pixels")
    RLE_FIELD_NUMBER: _ClassVar[int]
    BBOX_FIELD_NUMBER: _ClassVar[int]
    AREA_PIXELS_FIELD_NUMBER: _ClassVar[int]
    rle: RleMask
    bbox: BoundingBox
    area_pixels: int
    def __init__(self, rle: _Optional[_Union[RleMask, _Mapping]] = ..., bbox: _Optional[_Union[BoundingBox, _Mapping]] = ..., area_pixels: _Optional[int] = ...) -> None: ...

class Keypoint(_message.Message):
    __slots__ = ("name", "x", "y", "score")
    NAME_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    name: str
    x: float
    y: float
    score: float
    def __init__(self, name: _Optional[str] = ..., x: _Optional[float] = ..., y: _Optional[float] = ..., score: _Optional[float] = ...) -> None: ...

class Instance(_message.Message):
    __slots__ = ("box", "label", "mask", "keypoints", "score", "predicted_iou", "stability_score")
    BOX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    KEYPOINTS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_IOU_FIELD_NUMBER: _ClassVar[int]
    STABILITY_SCORE_FIELD_NUMBER: _ClassVar[int]
    box: BoundingBox
    label: Label
    mask: Mask
    keypoints: _containers.RepeatedCompositeFieldContainer[Keypoint]
    score: float
    predicted_iou: float
    stability_score: float
    def __init__(self, box: _Optional[_Union[BoundingBox, _Mapping]] = ..., label: _Optional[_Union[Label, _Mapping]] = ..., mask: _Optional[_Union[Mask, _Mapping]] = ..., keypoints: _Optional[_Iterable[_Union[Keypoint, _Mapping]]] = ..., score: _Optional[float] = ..., predicted_iou: _Optional[float] = ..., stability_score: _Optional[float] = ...) -> None: ...

class LabelMap(_message.Message):
    __slots__ = ("width", "height", "class_names", "class_indices_u16le")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDICES_U16LE_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    class_names: _containers.RepeatedScalarFieldContainer[str]
    class_indices_u16le: bytes
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., class_names: _Optional[_Iterable[str]] = ..., class_indices_u16le: _Optional[bytes] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("queue_ms", "preprocess_ms", "inference_ms", "postprocess_ms")
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    PREPROCESS_MS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_MS_FIELD_NUMBER: _ClassVar[int]
    POSTPROCESS_MS_FIELD_NUMBER: _ClassVar[int]
    queue_ms: float
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float
    def __init__(self, queue_ms: _Optional[float] = ..., preprocess_ms: _Optional[float] = ..., inference_ms: _Optional[float] = ..., postprocess_ms: _Optional[float] = ...) -> None: ...

class PointPrompt(_message.Message):
    __slots__ = ("x", "y", "positive")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    positive: bool
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ..., positive: _Optional[bool] = ...) -> None: ...

class Prompts(_message.Message):
    __slots__ = ("points", "boxes", "multimask_output")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    BOXES_FIELD_NUMBER: _ClassVar[int]
    MULTIMASK_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[PointPrompt]
    boxes: _containers.RepeatedCompositeFieldContainer[BoundingBox]
    multimask_output: bool
    def __init__(self, points: _Optional[_Iterable[_Union[PointPrompt, _Mapping]]] = ..., boxes: _Optional[_Iterable[_Union[BoundingBox, _Mapping]]] = ..., multimask_output: _Optional[bool] = ...) -> None: ...

class ResizeBounds(_message.Message):
    __slots__ = ("min_size", "max_size")
    MIN_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_SIZE_FIELD_NUMBER: _ClassVar[int]
    min_size: int
    max_size: int
    def __init__(self, min_size: _Optional[int] = ..., max_size: _Optional[int] = ...) -> None: ...

class AutomaticSegmentationOptions(_message.Message):
    __slots__ = ("points_per_side", "pred_iou_thresh", "stability_score_thresh", "min_mask_region_area")
    POINTS_PER_SIDE_FIELD_NUMBER: _ClassVar[int]
    PRED_IOU_THRESH_FIELD_NUMBER: _ClassVar[int]
    STABILITY_SCORE_THRESH_FIELD_NUMBER: _ClassVar[int]
    MIN_MASK_REGION_AREA_FIELD_NUMBER: _ClassVar[int]
    points_per_side: int
    pred_iou_thresh: float
    stability_score_thresh: float
    min_mask_region_area: int
    def __init__(self, points_per_side: _Optional[int] = ..., pred_iou_thresh: _Optional[float] = ..., stability_score_thresh: _Optional[float] = ..., min_mask_region_area: _Optional[int] = ...) -> None: ...

class TaskOptions(_message.Message):
    __slots__ = ("score_threshold", "max_results", "labels", "prompt_templates", "mask_threshold", "resize", "prompts", "automatic", "nms_iou_threshold")
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MAX_RESULTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    MASK_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    AUTOMATIC_FIELD_NUMBER: _ClassVar[int]
    NMS_IOU_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    score_threshold: float
    max_results: int
    labels: _containers.RepeatedScalarFieldContainer[str]
    prompt_templates: _containers.RepeatedScalarFieldContainer[str]
    mask_threshold: float
    resize: ResizeBounds
    prompts: Prompts
    automatic: AutomaticSegmentationOptions
    nms_iou_threshold: float
    def __init__(self, score_threshold: _Optional[float] = ..., max_results: _Optional[int] = ..., labels: _Optional[_Iterable[str]] = ..., prompt_templates: _Optional[_Iterable[str]] = ..., mask_threshold: _Optional[float] = ..., resize: _Optional[_Union[ResizeBounds, _Mapping]] = ..., prompts: _Optional[_Union[Prompts, _Mapping]] = ..., automatic: _Optional[_Union[AutomaticSegmentationOptions, _Mapping]] = ..., nms_iou_threshold: _Optional[float] = ...) -> None: ...

class InferenceInfo(_message.Message):
    __slots__ = ("model_name", "request_id", "image_size", "timing", "pretrained", "weights", "warnings", "batch_size", "engine")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    PRETRAINED_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    request_id: str
    image_size: ImageSize
    timing: Timing
    pretrained: bool
    weights: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    batch_size: int
    engine: str
    def __init__(self, model_name: _Optional[str] = ..., request_id: _Optional[str] = ..., image_size: _Optional[_Union[ImageSize, _Mapping]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ..., pretrained: _Optional[bool] = ..., weights: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ..., batch_size: _Optional[int] = ..., engine: _Optional[str] = ...) -> None: ...
