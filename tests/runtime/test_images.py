"""Image decoding through a real model server: formats, odd files, and what the caller is told."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from visioncompare.runtime.errors import InvalidArgument, TooLarge
from visioncompare.runtime.images import FORMATS, decode_bytes, read_header
from visioncompare.testing.images import encode, png_bomb, scene
from visioncompare.testing.odd_images import EXIF_ROTATED_BOX, assert_clean_message, bad_files, odd_but_valid_files
from visioncompare.testing.serving import ServerThread
from visioncompare.testing.tiny_model import BrightSpotModel
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import vision_model_service_pb2 as vms
from visioncompare.v1 import vision_model_service_pb2_grpc as vms_grpc

BAD = bad_files()
ODD = odd_but_valid_files()


@pytest.fixture(scope="module")
def stub() -> Iterator[vms_grpc.VisionModelServiceStub]:
    with ServerThread(BrightSpotModel(), max_image_pixels=10_000_000) as srv:
        with grpc.insecure_channel(srv.address) as channel:
            yield vms_grpc.VisionModelServiceStub(channel)


def detect(stub: vms_grpc.VisionModelServiceStub, data: bytes) -> vms.DetectResponse:
    return stub.Detect(vms.DetectRequest(image=pb.Image(encoded=data)), timeout=10)


@pytest.mark.parametrize("name", sorted(BAD))
def test_unreadable_files_are_invalid_argument_with_a_clean_message(
    stub: vms_grpc.VisionModelServiceStub, name: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        detect(stub, BAD[name])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert_clean_message(err.value.details())
    assert "image.encoded" in err.value.details()
    status = rpc_status.from_call(err.value)
    assert status is not None
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(bad)
    assert info.reason == ("INPUT_TOO_LARGE" if "bomb" in name else "INVALID_ARGUMENT")
    assert [v.field for v in bad.field_violations] == ["image.encoded"]
    assert_clean_message(bad.field_violations[0].description)
    assert detect(stub, encode(scene())).instances  # the server stays up


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("empty", "is empty"),
        ("random bytes", "not a readable JPEG, PNG, WebP, BMP, GIF or TIFF image"),
        ("svg", "convert it to one of these formats"),
        ("truncated jpeg", "corrupt or truncated: its JPEG header is readable"),
        ("png bomb header", "3600000000 pixels, over the limit of 10000000"),
    ],
)
def test_messages_say_what_is_wrong_and_how_to_fix_it(
    stub: vms_grpc.VisionModelServiceStub, name: str, needle: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        detect(stub, BAD[name])
    assert needle in err.value.details()


@pytest.mark.parametrize("name", sorted(ODD))
def test_unusual_files_pillow_reads_are_decoded(stub: vms_grpc.VisionModelServiceStub, name: str) -> None:
    response = detect(stub, ODD[name])
    expected = EXIF_ROTATED_BOX if name.startswith("exif") else (10, 8, 30, 20)
    size = (32, 64) if name.startswith("exif") else (64, 48)
    assert (response.info.image_size.width, response.info.image_size.height) == size
    [instance] = response.instances
    box = instance.box
    assert (box.x1, box.y1, box.x2, box.y2) == pytest.approx(expected, abs=2), name


def test_gif_and_tiff_are_accepted_formats() -> None:
    assert {"GIF", "TIFF"} <= set(FORMATS)
    assert read_header(ODD["gif"], max_pixels=10_000).format == "GIF"
    assert read_header(ODD["tiff"], max_pixels=10_000).format == "TIFF"


def test_read_header_checks_format_and_size_without_decoding_pixels() -> None:
    truncated = BAD["truncated jpeg"]
    header = read_header(truncated, max_pixels=10_000)  # the header is intact ...
    assert (header.format, header.width, header.height) == ("JPEG", 96, 64)
    with pytest.raises(InvalidArgument, match="corrupt or truncated"):
        decode_bytes(truncated, max_pixels=10_000)  # ... the pixels are not
    with pytest.raises(TooLarge, match="5000x5000"):
        read_header(png_bomb(5_000, 5_000), max_pixels=10_000_000)
    with pytest.raises(TooLarge, match="over the limit of 6143"):
        read_header(truncated, max_pixels=96 * 64 - 1)
    with pytest.raises(InvalidArgument, match="not a readable"):
        read_header(BAD["text file"], max_pixels=10_000)
