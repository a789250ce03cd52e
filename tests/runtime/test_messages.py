"""No message a caller sees holds a Python repr, a memory address or a server path."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from visioncompare.runtime.errors import InvalidArgument, client_text
from visioncompare.runtime.types import InferenceRequest
from visioncompare.testing.images import encode, scene
from visioncompare.testing.odd_images import assert_clean_message
from visioncompare.testing.serving import ServerThread
from visioncompare.testing.tiny_model import BrightSpotModel
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import vision_model_service_pb2 as vms
from visioncompare.v1 import vision_model_service_pb2_grpc as vms_grpc

LEAKY = (
    "cannot identify image file <_io.BytesIO object at 0x7f65de3fa110> "
    "in /srv/app/.venv/lib/python3.11/site-packages/PIL/Image.py (buffer at 0x7f65de3fa110)"
)


class LeakyModel(BrightSpotModel):
    """Builds an error from a library's exception text, as domain code might."""

    def validate(self, request: InferenceRequest) -> None:
        raise InvalidArgument(f"cannot read the image: {LEAKY}", field="image.encoded")


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        (LEAKY, "cannot identify image file a BytesIO in Image.py (buffer at an address)"),
        ("<function decode at 0x1f00> failed", "a function failed"),
        ("upstream dns:///maskrcnn:50051 and http://host/a/b are addresses, not paths",) * 2,
        ("image/png, width/height and 'Bearer <token>' stay",) * 2,
    ],
)
def test_client_text_takes_out_reprs_addresses_and_paths(text: str, clean: str) -> None:
    assert client_text(text) == clean


def test_the_interceptor_cleans_every_message_it_sends() -> None:
    with ServerThread(LeakyModel()) as srv, grpc.insecure_channel(srv.address) as channel:
        stub = vms_grpc.VisionModelServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Detect(vms.DetectRequest(image=pb.Image(encoded=encode(scene()))), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("cannot read the image: cannot identify image file")
    assert_clean_message(err.value.details())
    status = rpc_status.from_call(err.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad)
    assert_clean_message(bad.field_violations[0].description)
