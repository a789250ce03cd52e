"""VisionModelService over the data plane: protobuf in, domain types, protobuf out.

The servicer holds no model logic and no inference path: it reads the task, options
and image of a request (`convert`, `images.image_source`), calls `DataPlane.infer`
(`services.runtime.dataplane`) and writes the prediction and its `InferenceInfo` back.
"""

from __future__ import annotations

from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import vision_model_service_pb2 as vms
from visioncompare.v1 import vision_model_service_pb2_grpc as vms_grpc

from services.runtime import convert
from services.runtime.dataplane import DataPlane, Inference, deadline_in
from services.runtime.images import image_source
from services.runtime.interceptors import task_var
from services.runtime.tasks import CLASSIFY, DETECT, SEGMENT, Rpc, check_rpc_task

Context = grpc.aio.ServicerContext[Any, Any]
_Response = TypeVar("_Response", bound=Message)


class VisionModelServicer(vms_grpc.VisionModelServiceServicer):
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

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
        request, prediction, runtime = inference.request, inference.prediction, inference.runtime
        return pb.InferenceInfo(
            model_name=self.plane.name,
            request_id=request.request_id,
            image_size=pb.ImageSize(width=request.width, height=request.height),
            timing=convert.timing_to_proto(prediction.timing),
            pretrained=runtime.pretrained,
            weights=runtime.weights,
            warnings=inference.warnings,
            batch_size=prediction.batch_size,
            backend=runtime.backend,
        )
