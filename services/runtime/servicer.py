"""VisionModelService over any VisionModel: protobuf in, domain types, protobuf out.

The servicer holds no model logic: it decodes the image, converts options,
lets the model validate, queues the request and converts the prediction back.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import vision_model_service_pb2 as vms
from visioncompare.v1 import vision_model_service_pb2_grpc as vms_grpc

from services.runtime import convert
from services.runtime.errors import ModelNotReady
from services.runtime.images import decode_image
from services.runtime.interceptors import task_var
from services.runtime.logs import request_id_var
from services.runtime.model import VisionModel
from services.runtime.scheduler import BatchScheduler
from services.runtime.tasks import CLASSIFY, DETECT, SEGMENT, Rpc, check_rpc_task
from services.runtime.types import Capabilities, InferenceRequest

Context = grpc.aio.ServicerContext[Any, Any]
_Response = TypeVar("_Response", bound=Message)


class VisionModelServicer(vms_grpc.VisionModelServiceServicer):
    def __init__(self, model: VisionModel, scheduler: BatchScheduler, *, max_image_pixels: int) -> None:
        self.model = model
        self.scheduler = scheduler
        self.max_image_pixels = max_image_pixels
        self.ready = False
        self.capabilities: Capabilities  # set by mark_ready(), fixed after load
        # Decoding is CPU work: keep it off the event loop.
        self._decoder = ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode")

    def mark_ready(self) -> None:
        self.capabilities = self.model.capabilities()
        self.ready = True

    def _check_ready(self) -> None:
        if not self.ready:
            raise ModelNotReady(f"{self.model.name} is not serving yet (loading or warming up); retry shortly")

    async def Capabilities(self, request: vms.CapabilitiesRequest, context: Context) -> vms.CapabilitiesResponse:
        self._check_ready()
        return convert.capabilities_to_proto(self.capabilities)

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
        self._check_ready()
        options = convert.options_from_proto(request.options)
        if request.image.WhichOneof("source") == "raw":  # a reshape: no thread hop needed
            image = decode_image(request.image, max_pixels=self.max_image_pixels)
        else:
            image = await asyncio.get_running_loop().run_in_executor(
                self._decoder, decode_image, request.image, self.max_image_pixels
            )
        inference = InferenceRequest(task=task, image=image, options=options, request_id=request_id_var.get())
        self.model.validate(inference)
        prediction = await self.scheduler.submit(inference, context.time_remaining())
        caps = self.capabilities
        info = pb.InferenceInfo(
            model_name=self.model.name,
            request_id=inference.request_id,
            image_size=pb.ImageSize(width=inference.width, height=inference.height),
            timing=convert.timing_to_proto(prediction.timing),
            pretrained=caps.runtime.pretrained,
            weights=caps.runtime.weights,
            warnings=list(dict.fromkeys([*caps.runtime.warnings, *prediction.warnings])),
            batch_size=prediction.batch_size,
            backend=caps.runtime.backend,
        )
        return rpc.response(convert.prediction_fields(prediction), info)

    def close(self) -> None:
        self._decoder.shutdown(wait=False)
