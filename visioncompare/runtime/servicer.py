"""VisionModelService over the data plane: protobuf in, domain types, protobuf out.

The servicer holds no model logic and no inference path: it reads the task, options
and image of a request (`convert`, `images.image_source`), calls `DataPlane.infer`
(`visioncompare.runtime.dataplane`) and writes the prediction and its `InferenceInfo` back.
"""

from __future__ import annotations

from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from visioncompare.runtime import convert
from visioncompare.runtime.dataplane import DataPlane, Inference, deadline_in
from visioncompare.runtime.images import image_source
from visioncompare.runtime.interceptors import task_var
from visioncompare.runtime.tasks import CLASSIFY, DETECT, SEGMENT, Rpc, check_rpc_task
from visioncompare.runtime.types import RuntimeInfo
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import vision_model_service_pb2 as vms
from visioncompare.v1 import vision_model_service_pb2_grpc as vms_grpc

Context = grpc.aio.ServicerContext[Any, Any]
_Response = TypeVar("_Response", bound=Message)


class VisionModelServicer(vms_grpc.VisionModelServiceServicer):
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self._runtime_info: tuple[RuntimeInfo, pb.InferenceInfo] | None = None

    async def Capabilities(self, request: vms.CapabilitiesRequest, context: Context) -> vms.CapabilitiesResponse:
        return convert.capabilities_to_proto(self.plane.capabilities)

    async def Detect(self, request: vms.DetectRequest, context: Context) -> vms.DetectResponse:
        return await self._serve(DETECT, request, context)

    async def Segment(self, request: vms.SegmentRequest, context: Context) -> vms.SegmentResponse:
        return await self._serve(SEGMENT, request, context)

    async def Classify(self, request: vms.ClassifyRequest, context: Context) -> vms.ClassifyResponse:
        return await self._serve(CLASSIFY, request, context)

    async def _serve(self, rpc: Rpc[_Response], request: Any, context: Context) -> _Response:
        """Any task RPC: the task table says which tasks it carries and what it answers."""
        task = convert.task_from_proto(request.task if rpc.takes_task else 0, default=rpc.default_task)
        task_var.set(task.name)
        check_rpc_task(rpc, task)
        self.plane.check_ready()
        options = convert.options_from_proto(request.options)
        image = image_source(request.image, self.plane.max_image_pixels)  # raw pixels now, a file later
        inference = await self.plane.infer(task, image, options, deadline_in(context.time_remaining()))
        return rpc.response(convert.prediction_fields(inference.prediction), self._info(inference))

    def _info(self, inference: Inference) -> pb.InferenceInfo:
        request, prediction, t = inference.request, inference.prediction, inference.prediction.timing
        info = pb.InferenceInfo()
        info.CopyFrom(self._info_of(inference.runtime))  # what every answer of this model says
        info.request_id = request.request_id
        size = info.image_size
        size.width, size.height = request.width, request.height
        timing = info.timing
        timing.queue_ms, timing.preprocess_ms = t.queue_ms, t.preprocess_ms
        timing.inference_ms, timing.postprocess_ms = t.inference_ms, t.postprocess_ms
        info.warnings.extend(inference.warnings)
        info.batch_size = prediction.batch_size
        return info

    def _info_of(self, runtime: RuntimeInfo) -> pb.InferenceInfo:
        """The InferenceInfo fields of a model's runtime (fixed after load), made once: copying
        them is half the time of building the message field by field."""
        if self._runtime_info is None or self._runtime_info[0] is not runtime:
            info = pb.InferenceInfo(
                model_name=self.plane.name,
                pretrained=runtime.pretrained,
                weights=runtime.weights,
                engine=runtime.engine,
            )
            self._runtime_info = (runtime, info)
        return self._runtime_info[1]
