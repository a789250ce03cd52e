from google.protobuf import any_pb2 as _any_pb2
from visioncompare.v1 import common_pb2 as _common_pb2
from visioncompare.v1 import vision_model_service_pb2 as _vision_model_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IouKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IOU_KIND_UNSPECIFIED: _ClassVar[IouKind]
    IOU_KIND_MASK: _ClassVar[IouKind]
    IOU_KIND_BOX: _ClassVar[IouKind]

class ModelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STATE_UNSPECIFIED: _ClassVar[ModelState]
    MODEL_STATE_SERVING: _ClassVar[ModelState]
    MODEL_STATE_UNAVAILABLE: _ClassVar[ModelState]
IOU_KIND_UNSPECIFIED: IouKind
IOU_KIND_MASK: IouKind
IOU_KIND_BOX: IouKind
MODEL_STATE_UNSPECIFIED: ModelState
MODEL_STATE_SERVING: ModelState
MODEL_STATE_UNAVAILABLE: ModelState

class CompareRequest(_message.Message):
    __slots__ = ("image", "task", "options", "model_names", "open_vocabulary_labels")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    OPEN_VOCABULARY_LABELS_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.Image
    task: _common_pb2.Task
    options: _common_pb2.TaskOptions
    model_names: _containers.RepeatedScalarFieldContainer[str]
    open_vocabulary_labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., task: _Optional[_Union[_common_pb2.Task, str]] = ..., options: _Optional[_Union[_common_pb2.TaskOptions, _Mapping]] = ..., model_names: _Optional[_Iterable[str]] = ..., open_vocabulary_labels: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("code", "message", "details")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    details: _containers.RepeatedCompositeFieldContainer[_any_pb2.Any]
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., details: _Optional[_Iterable[_Union[_any_pb2.Any, _Mapping]]] = ...) -> None: ...

class ModelResult(_message.Message):
    __slots__ = ("model_name", "endpoint", "status", "latency_ms", "detect", "segment", "classify")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    DETECT_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    CLASSIFY_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    endpoint: str
    status: ModelStatus
    latency_ms: float
    detect: _vision_model_service_pb2.DetectResponse
    segment: _vision_model_service_pb2.SegmentResponse
    classify: _vision_model_service_pb2.ClassifyResponse
    def __init__(self, model_name: _Optional[str] = ..., endpoint: _Optional[str] = ..., status: _Optional[_Union[ModelStatus, _Mapping]] = ..., latency_ms: _Optional[float] = ..., detect: _Optional[_Union[_vision_model_service_pb2.DetectResponse, _Mapping]] = ..., segment: _Optional[_Union[_vision_model_service_pb2.SegmentResponse, _Mapping]] = ..., classify: _Optional[_Union[_vision_model_service_pb2.ClassifyResponse, _Mapping]] = ...) -> None: ...

class InstanceMatch(_message.Message):
    __slots__ = ("index_a", "index_b", "iou", "labels_agree")
    INDEX_A_FIELD_NUMBER: _ClassVar[int]
    INDEX_B_FIELD_NUMBER: _ClassVar[int]
    IOU_FIELD_NUMBER: _ClassVar[int]
    LABELS_AGREE_FIELD_NUMBER: _ClassVar[int]
    index_a: int
    index_b: int
    iou: float
    labels_agree: bool
    def __init__(self, index_a: _Optional[int] = ..., index_b: _Optional[int] = ..., iou: _Optional[float] = ..., labels_agree: _Optional[bool] = ...) -> None: ...

class InstanceAgreement(_message.Message):
    __slots__ = ("iou_kind", "iou_threshold", "matches", "mean_iou", "label_agreement_rate", "only_a_count", "only_b_count")
    IOU_KIND_FIELD_NUMBER: _ClassVar[int]
    IOU_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    MEAN_IOU_FIELD_NUMBER: _ClassVar[int]
    LABEL_AGREEMENT_RATE_FIELD_NUMBER: _ClassVar[int]
    ONLY_A_COUNT_FIELD_NUMBER: _ClassVar[int]
    ONLY_B_COUNT_FIELD_NUMBER: _ClassVar[int]
    iou_kind: IouKind
    iou_threshold: float
    matches: _containers.RepeatedCompositeFieldContainer[InstanceMatch]
    mean_iou: float
    label_agreement_rate: float
    only_a_count: int
    only_b_count: int
    def __init__(self, iou_kind: _Optional[_Union[IouKind, str]] = ..., iou_threshold: _Optional[float] = ..., matches: _Optional[_Iterable[_Union[InstanceMatch, _Mapping]]] = ..., mean_iou: _Optional[float] = ..., label_agreement_rate: _Optional[float] = ..., only_a_count: _Optional[int] = ..., only_b_count: _Optional[int] = ...) -> None: ...

class ClassificationAgreement(_message.Message):
    __slots__ = ("top1_agree", "topk_overlap", "k", "rank_correlation", "shared_labels")
    TOP1_AGREE_FIELD_NUMBER: _ClassVar[int]
    TOPK_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    RANK_CORRELATION_FIELD_NUMBER: _ClassVar[int]
    SHARED_LABELS_FIELD_NUMBER: _ClassVar[int]
    top1_agree: bool
    topk_overlap: float
    k: int
    rank_correlation: float
    shared_labels: int
    def __init__(self, top1_agree: _Optional[bool] = ..., topk_overlap: _Optional[float] = ..., k: _Optional[int] = ..., rank_correlation: _Optional[float] = ..., shared_labels: _Optional[int] = ...) -> None: ...

class ClassIou(_message.Message):
    __slots__ = ("name", "iou", "pixels_a", "pixels_b")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IOU_FIELD_NUMBER: _ClassVar[int]
    PIXELS_A_FIELD_NUMBER: _ClassVar[int]
    PIXELS_B_FIELD_NUMBER: _ClassVar[int]
    name: str
    iou: float
    pixels_a: int
    pixels_b: int
    def __init__(self, name: _Optional[str] = ..., iou: _Optional[float] = ..., pixels_a: _Optional[int] = ..., pixels_b: _Optional[int] = ...) -> None: ...

class LabelMapAgreement(_message.Message):
    __slots__ = ("pixel_agreement", "classes", "mean_iou", "pixels")
    PIXEL_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    MEAN_IOU_FIELD_NUMBER: _ClassVar[int]
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    pixel_agreement: float
    classes: _containers.RepeatedCompositeFieldContainer[ClassIou]
    mean_iou: float
    pixels: int
    def __init__(self, pixel_agreement: _Optional[float] = ..., classes: _Optional[_Iterable[_Union[ClassIou, _Mapping]]] = ..., mean_iou: _Optional[float] = ..., pixels: _Optional[int] = ...) -> None: ...

class PairAgreement(_message.Message):
    __slots__ = ("model_a", "model_b", "instances", "classification", "label_map")
    MODEL_A_FIELD_NUMBER: _ClassVar[int]
    MODEL_B_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    LABEL_MAP_FIELD_NUMBER: _ClassVar[int]
    model_a: str
    model_b: str
    instances: InstanceAgreement
    classification: ClassificationAgreement
    label_map: LabelMapAgreement
    def __init__(self, model_a: _Optional[str] = ..., model_b: _Optional[str] = ..., instances: _Optional[_Union[InstanceAgreement, _Mapping]] = ..., classification: _Optional[_Union[ClassificationAgreement, _Mapping]] = ..., label_map: _Optional[_Union[LabelMapAgreement, _Mapping]] = ...) -> None: ...

class CompareResponse(_message.Message):
    __slots__ = ("task", "results", "labels_used", "agreements")
    TASK_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_USED_FIELD_NUMBER: _ClassVar[int]
    AGREEMENTS_FIELD_NUMBER: _ClassVar[int]
    task: _common_pb2.Task
    results: _containers.RepeatedCompositeFieldContainer[ModelResult]
    labels_used: _containers.RepeatedScalarFieldContainer[str]
    agreements: _containers.RepeatedCompositeFieldContainer[PairAgreement]
    def __init__(self, task: _Optional[_Union[_common_pb2.Task, str]] = ..., results: _Optional[_Iterable[_Union[ModelResult, _Mapping]]] = ..., labels_used: _Optional[_Iterable[str]] = ..., agreements: _Optional[_Iterable[_Union[PairAgreement, _Mapping]]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelRow(_message.Message):
    __slots__ = ("model_name", "endpoint", "state", "capabilities", "error")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    endpoint: str
    state: ModelState
    capabilities: _vision_model_service_pb2.CapabilitiesResponse
    error: str
    def __init__(self, model_name: _Optional[str] = ..., endpoint: _Optional[str] = ..., state: _Optional[_Union[ModelState, str]] = ..., capabilities: _Optional[_Union[_vision_model_service_pb2.CapabilitiesResponse, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelRow]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelRow, _Mapping]]] = ...) -> None: ...
