"""`vcompare` end to end against a gateway and two tiny model services."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visioncompare.testing.gateway_support import GatewayThread, gateway_over
from visioncompare.testing.images import encode, scene
from visioncompare.testing.processes import ROOT, ServiceProcess, free_port, tiny_service

VCOMPARE = [sys.executable, "-c", "from visioncompare.tools.cli import main; main()"]


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayThread]:
    procs = [tiny_service("left"), tiny_service("right")]
    with gateway_over(procs) as gw:
        yield gw


def vcompare(*args: str, gateway: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VCOMPARE, *args, "--gateway", gateway], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


def test_models_prints_the_capability_table(gateway: GatewayThread) -> None:
    result = vcompare("models", gateway=gateway.address)
    assert result.returncode == 0, result.stderr
    lines = {line.split("|")[0].strip(): line for line in result.stdout.splitlines()}
    assert "Bright spot (left)" in lines["Name"] and "Bright spot (right)" in lines["Name"]
    assert "object-detection (fixed labels)" in lines["Tasks"]
    assert lines["Pretrained"].count("false") == 2


def test_compare_prints_results_and_writes_one_panel_per_model(gateway: GatewayThread, tmp_path: Path) -> None:
    image = tmp_path / "scene.png"
    image.write_bytes(encode(scene(64, 48, (10, 8, 30, 20))))
    out = tmp_path / "sbs.png"
    result = vcompare(
        "compare", str(image), "--task", "instance-segmentation", "--out", str(out), gateway=gateway.address
    )
    assert result.returncode == 0, result.stderr
    assert "- left: OK" in result.stdout and "- right: OK" in result.stdout
    assert "agreement left vs right: 1 matched (mask IoU" in result.stdout and "mean IoU 1.000" in result.stdout
    assert "random weights" in result.stdout
    picture = np.asarray(Image.open(out).convert("RGB"))
    assert picture.shape[1] == 480 * 2 + 8  # two 64 x 48 panels, upscaled 7.5x to be legible, and a gap
    header = picture.shape[0] - 360
    assert header > 30  # a wrapped header above the panels
    gap = picture[header:, 480:488]
    assert (gap == 24).all()  # the separator between the two panels
    for x0 in (0, 488):
        panel = picture[header:, x0 : x0 + 480].astype(int)
        assert (panel[8 * 8 : 20 * 7, 10 * 8 : 30 * 7] != 230).all(axis=2).all()  # the mask tint covers the bright box


def test_compare_json_is_the_full_response(gateway: GatewayThread, tmp_path: Path) -> None:
    image = tmp_path / "scene.png"
    image.write_bytes(encode(scene()))
    result = vcompare("compare", str(image), "--task", "object-detection", "--json", gateway=gateway.address)
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    assert {r["modelName"] for r in response["results"]} == {"left", "right"}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["compare", "/nonexistent.png"], "cannot read /nonexistent.png"),
        (["compare", "IMAGE", "--task", "dance"], "unknown task 'dance'"),
        (["compare", "IMAGE", "--point", "1,x"], "--point '1,x'"),
    ],
)
def test_user_errors_print_one_line_without_a_traceback(
    gateway: GatewayThread, tmp_path: Path, args: list[str], needle: str
) -> None:
    image = tmp_path / "scene.png"
    image.write_bytes(encode(scene()))
    result = vcompare(*[str(image) if a == "IMAGE" else a for a in args], gateway=gateway.address)
    assert result.returncode != 0
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_unreachable_gateway_is_one_clear_line(tmp_path: Path) -> None:
    image = tmp_path / "scene.png"
    image.write_bytes(encode(scene()))
    result = vcompare("compare", str(image), "--timeout", "3", gateway="127.0.0.1:9")
    assert result.returncode == 1
    assert "cannot reach the gateway at 127.0.0.1:9" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def open_models() -> Iterator[GatewayThread]:
    """Two open-vocabulary playground models (visioncompare.testing.playground_model): label maps and class scores."""
    procs = []
    for name in ("merged", "composed"):
        port = free_port()
        args = [
            "-m",
            "visioncompare.testing.playground_service",
            "--port",
            str(port),
            "--name",
            name,
            "--vocabulary",
            "open",
        ]
        procs.append(ServiceProcess(name, args, port))
    with gateway_over(procs) as gw:
        yield gw


def test_compare_says_how_far_label_maps_and_classifications_agree(open_models: GatewayThread, tmp_path: Path) -> None:
    image = tmp_path / "scene.png"
    image.write_bytes(encode(scene(64, 48, (40, 30, 60, 44))))  # bright box outside the dark quadrant
    out = tmp_path / "sbs.png"
    semantic = vcompare(
        "compare", str(image), "-t", "semantic-segmentation", "--labels", "bright,dark", "-o", str(out),
        gateway=open_models.address,
    )  # fmt: skip
    assert semantic.returncode == 0, semantic.stderr
    assert (
        "- merged: OK" in semantic.stdout and "label map 64x48, 2 classes found (dark 25.0%, bright" in semantic.stdout
    )
    assert (
        "agreement merged vs composed: pixel agreement 100.0%, mean IoU 1.000 over 2 classes either found "
        "(bright 1.00, dark 1.00)" in semantic.stdout
    )
    assert Image.open(out).height > 360 + 60  # header, panels and the agreement under them
    classify = vcompare(
        "compare", str(image), "-t", "zero-shot-classification", "--labels", "bright,dark,moon",
        gateway=open_models.address,
    )  # fmt: skip
    assert classify.returncode == 0, classify.stderr
    assert (
        "agreement merged vs composed: top-1 agrees, top-3 overlap 1.00, rank correlation 1.00 over 3 shared labels"
        in classify.stdout
    )
