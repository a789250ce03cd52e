"""A typed Python client for any VisionModelService.

with VisionModelClient("localhost:50051") as client:
    result = client.segment("cat.jpg", Task.INSTANCE_SEGMENTATION)
    masks = result.masks()  # N x H x W bool
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from visioncompare.runtime import convert
from visioncompare.runtime.channels import channel_credentials as channel_credentials  # the client's TLS
from visioncompare.runtime.channels import channel_options
from visioncompare.runtime.masks import decode_rle
from visioncompare.runtime.tasks import CLASSIFY, DETECT, SEGMENT, Rpc, spec
from visioncompare.runtime.types import (
    Capabilities,
    ClassScore,
    Instance,
    Label,
    LabelMap,
    Task,
    TaskOptions,
    Timing,
)
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import vision_model_service_pb2 as vms
from visioncompare.v1 import vision_model_service_pb2_grpc as vms_grpc

ImageInput = str | Path | bytes | np.ndarray


def image_to_proto(image: ImageInput) -> pb.Image:
    """A path or encoded bytes are sent as-is; an H x W x 3 uint8 array as raw RGB."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError("array images must be H x W x 3 uint8 RGB")
        h, w, _ = image.shape
        return pb.Image(raw=pb.RawImage(width=w, height=h, rgb=np.ascontiguousarray(image).tobytes()))
    if isinstance(image, bytes):
        return pb.Image(encoded=image)
    return pb.Image(encoded=Path(image).read_bytes())


@dataclass
class Result:
    """One model response as Python objects."""

    model_name: str
    request_id: str
    image_width: int
    image_height: int
    pretrained: bool
    weights: str
    warnings: list[str]
    timing: Timing
    batch_size: int
    engine: str = ""  # the engine that ran it: "torch" or "onnxruntime"
    instances: list[Instance] = field(default_factory=list)
    label_map: LabelMap | None = None
    scores: list[ClassScore] = field(default_factory=list)

    def masks(self) -> np.ndarray:
        """Instance masks decoded to an N x H x W boolean array."""
        if not self.instances:
            return np.zeros((0, self.image_height, self.image_width), dtype=bool)
        return np.stack(
            [
                decode_rle(i.mask.rle) if i.mask else np.zeros((self.image_height, self.image_width), bool)
                for i in self.instances
            ]
        )


def result_from_proto(response: Any) -> Result:
    info: pb.InferenceInfo = response.info
    t = info.timing
    result = Result(
        model_name=info.model_name,
        request_id=info.request_id,
        image_width=info.image_size.width,
        image_height=info.image_size.height,
        pretrained=info.pretrained,
        weights=info.weights,
        warnings=list(info.warnings),
        timing=Timing(t.queue_ms, t.preprocess_ms, t.inference_ms, t.postprocess_ms),
        batch_size=info.batch_size,
        engine=info.engine,
    )
    if hasattr(response, "instances"):
        result.instances = [convert.instance_from_proto(i) for i in response.instances]
    if isinstance(response, vms.SegmentResponse) and response.HasField("label_map"):
        result.label_map = convert.label_map_from_proto(response.label_map)
    if isinstance(response, vms.ClassifyResponse):
        result.scores = [
            ClassScore(Label(s.label.id, s.label.name, s.label.score), s.similarity) for s in response.scores
        ]
    return result


class VisionModelClient:
    """Blocking client; `timeout` is the per-call deadline in seconds."""

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        timeout: float | None = 60.0,
        max_message_bytes: int = 64 * 1024 * 1024,
        server_name_override: str | None = None,
    ) -> None:
        options: list[tuple[str, Any]] = list(channel_options(max_message_bytes))
        if server_name_override:
            options.append(("grpc.ssl_target_name_override", server_name_override))
        self._channel = (
            grpc.secure_channel(target, credentials, options)
            if credentials is not None
            else grpc.insecure_channel(target, options)
        )
        self._stub = vms_grpc.VisionModelServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout

    def __enter__(self) -> VisionModelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, request: Any) -> Any:
        return method(request, timeout=self.timeout, metadata=self._metadata)

    def capabilities(self) -> Capabilities:
        return convert.capabilities_from_proto(self._call(self._stub.Capabilities, vms.CapabilitiesRequest()))

    def run(self, image: ImageInput, task: Task, options: TaskOptions | None = None) -> Result:
        """Any task, through the RPC the task table names for it."""
        return self._run(spec(task).rpc, task, image, options)

    def detect(
        self, image: ImageInput, task: Task = Task.OBJECT_DETECTION, options: TaskOptions | None = None
    ) -> Result:
        return self._run(DETECT, task, image, options)

    def segment(self, image: ImageInput, task: Task, options: TaskOptions | None = None) -> Result:
        return self._run(SEGMENT, task, image, options)

    def classify(self, image: ImageInput, labels: list[str], options: TaskOptions | None = None) -> Result:
        opts = replace(options or TaskOptions(), labels=tuple(labels))
        return self._run(CLASSIFY, Task.ZERO_SHOT_CLASSIFICATION, image, opts)

    def _run(self, rpc: Rpc, task: Task, image: ImageInput, options: TaskOptions | None) -> Result:
        request = rpc.request(task, image_to_proto(image), convert.options_to_proto(options or TaskOptions()))
        return result_from_proto(self._call(rpc.method(self._stub), request))
