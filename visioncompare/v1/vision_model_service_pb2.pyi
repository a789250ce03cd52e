from visioncompare.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Vocabulary(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VOCABULARY_UNSPECIFIED: _ClassVar[Vocabulary]
    VOCABULARY_NONE: _ClassVar[Vocabulary]
    VOCABULARY_FIXED: _ClassVar[Vocabulary]
    VOCABULARY_OPEN: _ClassVar[Vocabulary]

class Engine(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENGINE_UNSPECIFIED: _ClassVar[Engine]
    ENGINE_TORCH: _ClassVar[Engine]
    ENGINE_ONNXRUNTIME: _ClassVar[Engine]
VOCABULARY_UNSPECIFIED: Vocabulary
VOCABULARY_NONE: Vocabulary
VOCABULARY_FIXED: Vocabulary
VOCABULARY_OPEN: Vocabulary
ENGINE_UNSPECIFIED: Engine
ENGINE_TORCH: Engine
ENGINE_ONNXRUNTIME: Engine

class CapabilitiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelCard(_message.Message):
    __slots__ = ("name", "organization", "category", "modality", "release_date", "parameter_count", "license", "paper_url", "description", "features")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    RELEASE_DATE_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_COUNT_FIELD_NUMBER: _ClassVar[int]
    LICENSE_FIELD_NUMBER: _ClassVar[int]
    PAPER_URL_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    name: str
    organization: str
    category: str
    modality: str
    release_date: str
    parameter_count: int
    license: str
    paper_url: str
    description: str
    features: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., organization: _Optional[str] = ..., category: _Optional[str] = ..., modality: _Optional[str] = ..., release_date: _Optional[str] = ..., parameter_count: _Optional[int] = ..., license: _Optional[str] = ..., paper_url: _Optional[str] = ..., description: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ...) -> None: ...

class TaskCapability(_message.Message):
    __slots__ = ("task", "vocabulary", "label_names", "prompt_kinds", "accepted_options")
    TASK_FIELD_NUMBER: _ClassVar[int]
    VOCABULARY_FIELD_NUMBER: _ClassVar[int]
    LABEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_KINDS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    task: _common_pb2.Task
    vocabulary: Vocabulary
    label_names: _containers.RepeatedScalarFieldContainer[str]
    prompt_kinds: _containers.RepeatedScalarFieldContainer[_common_pb2.PromptKind]
    accepted_options: _containers.RepeatedScalarFieldContainer[_common_pb2.TaskOption]
    def __init__(self, task: _Optional[_Union[_common_pb2.Task, str]] = ..., vocabulary: _Optional[_Union[Vocabulary, str]] = ..., label_names: _Optional[_Iterable[str]] = ..., prompt_kinds: _Optional[_Iterable[_Union[_common_pb2.PromptKind, str]]] = ..., accepted_options: _Optional[_Iterable[_Union[_common_pb2.TaskOption, str]]] = ...) -> None: ...

class ModelComponent(_message.Message):
    __slots__ = ("name", "weights", "pretrained", "parameter_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    PRETRAINED_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    weights: str
    pretrained: bool
    parameter_count: int
    def __init__(self, name: _Optional[str] = ..., weights: _Optional[str] = ..., pretrained: _Optional[bool] = ..., parameter_count: _Optional[int] = ...) -> None: ...

class RuntimeInfo(_message.Message):
    __slots__ = ("device", "engine", "precision", "weights", "pretrained", "max_batch_size", "software_version", "components", "warnings", "preset")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    PRETRAINED_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    device: str
    engine: Engine
    precision: str
    weights: str
    pretrained: bool
    max_batch_size: int
    software_version: str
    components: _containers.RepeatedCompositeFieldContainer[ModelComponent]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    preset: str
    def __init__(self, device: _Optional[str] = ..., engine: _Optional[_Union[Engine, str]] = ..., precision: _Optional[str] = ..., weights: _Optional[str] = ..., pretrained: _Optional[bool] = ..., max_batch_size: _Optional[int] = ..., software_version: _Optional[str] = ..., components: _Optional[_Iterable[_Union[ModelComponent, _Mapping]]] = ..., warnings: _Optional[_Iterable[str]] = ..., preset: _Optional[str] = ...) -> None: ...

class CapabilitiesResponse(_message.Message):
    __slots__ = ("card", "tasks", "runtime")
    CARD_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    card: ModelCard
    tasks: _containers.RepeatedCompositeFieldContainer[TaskCapability]
    runtime: RuntimeInfo
    def __init__(self, card: _Optional[_Union[ModelCard, _Mapping]] = ..., tasks: _Optional[_Iterable[_Union[TaskCapability, _Mapping]]] = ..., runtime: _Optional[_Union[RuntimeInfo, _Mapping]] = ...) -> None: ...

class DetectRequest(_message.Message):
    __slots__ = ("image", "task", "options")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.Image
    task: _common_pb2.Task
    options: _common_pb2.TaskOptions
    def __init__(self, image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., task: _Optional[_Union[_common_pb2.Task, str]] = ..., options: _Optional[_Union[_common_pb2.TaskOptions, _Mapping]] = ...) -> None: ...

class DetectResponse(_message.Message):
    __slots__ = ("instances", "info")
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[_common_pb2.Instance]
    info: _common_pb2.InferenceInfo
    def __init__(self, instances: _Optional[_Iterable[_Union[_common_pb2.Instance, _Mapping]]] = ..., info: _Optional[_Union[_common_pb2.InferenceInfo, _Mapping]] = ...) -> None: ...

class SegmentRequest(_message.Message):
    __slots__ = ("image", "task", "options")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.Image
    task: _common_pb2.Task
    options: _common_pb2.TaskOptions
    def __init__(self, image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., task: _Optional[_Union[_common_pb2.Task, str]] = ..., options: _Optional[_Union[_common_pb2.TaskOptions, _Mapping]] = ...) -> None: ...

class SegmentResponse(_message.Message):
    __slots__ = ("instances", "label_map", "info")
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    LABEL_MAP_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[_common_pb2.Instance]
    label_map: _common_pb2.LabelMap
    info: _common_pb2.InferenceInfo
    def __init__(self, instances: _Optional[_Iterable[_Union[_common_pb2.Instance, _Mapping]]] = ..., label_map: _Optional[_Union[_common_pb2.LabelMap, _Mapping]] = ..., info: _Optional[_Union[_common_pb2.InferenceInfo, _Mapping]] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("image", "options")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.Image
    options: _common_pb2.TaskOptions
    def __init__(self, image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., options: _Optional[_Union[_common_pb2.TaskOptions, _Mapping]] = ...) -> None: ...

class ClassScore(_message.Message):
    __slots__ = ("label", "similarity")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    label: _common_pb2.Label
    similarity: float
    def __init__(self, label: _Optional[_Union[_common_pb2.Label, _Mapping]] = ..., similarity: _Optional[float] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("scores", "info")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[ClassScore]
    info: _common_pb2.InferenceInfo
    def __init__(self, scores: _Optional[_Iterable[_Union[ClassScore, _Mapping]]] = ..., info: _Optional[_Union[_common_pb2.InferenceInfo, _Mapping]] = ...) -> None: ...
