"""The runtime's engine setting and ONNX Runtime helpers: providers without silent fallback,
threads that do not spin, and the export cache keyed by the weights' SHA-256 and verified."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from pydantic import ValidationError

from visioncompare.runtime import engines
from visioncompare.runtime.engines import (
    CPU,
    CUDA,
    TENSORRT,
    OrtRunner,
    ProviderPlan,
    cached_export,
    check_providers,
    plan_providers,
    session_options,
    state_dict_sha256,
    weights_sha256,
)
from visioncompare.runtime.errors import ConfigurationError
from visioncompare.runtime.settings import ModelServerSettings


class TorchOnly(ModelServerSettings):
    pass


class Both(ModelServerSettings):
    supported_engines = ("torch", "onnxruntime")
    measured_engines = {"cpu": "onnxruntime"}


def test_engine_defaults_to_auto_and_a_service_refuses_an_engine_it_does_not_implement() -> None:
    assert TorchOnly().engine == "auto" and TorchOnly().resolved_engine("cpu") == "torch"
    with pytest.raises(ValidationError, match="engine=onnxruntime is not implemented by this service"):
        TorchOnly(engine="onnxruntime")
    assert Both(engine="onnxruntime").engine == "onnxruntime"
    with pytest.raises(ValidationError):
        Both(engine="tensorflow")  # type: ignore[arg-type]


def test_auto_runs_the_engine_measured_faster_on_the_device() -> None:
    assert Both().resolved_engine("cpu") == "onnxruntime" and Both().resolved_engine("cuda") == "torch"
    assert Both(engine="torch").resolved_engine("cpu") == "torch"
    assert Both(engine="onnxruntime").resolved_engine("cuda") == "onnxruntime"


def test_the_services_say_what_auto_runs() -> None:
    from visioncompare.maskrcnn.settings import MaskRCNNSettings
    from visioncompare.samclip.settings import SamClipSettings

    assert MaskRCNNSettings().resolved_engine("cpu") == "onnxruntime"
    assert MaskRCNNSettings(weights="random").resolved_engine("cpu") == "onnxruntime"
    assert MaskRCNNSettings().resolved_engine("cuda") == "torch"
    assert SamClipSettings().resolved_engine("cpu") == "onnxruntime"  # the shapes models
    full_size = SamClipSettings(backend="composed", sam_variant="vit_b", clip_model="ViT-B-32")
    assert full_size.resolved_engine("cpu") == "torch"
    assert SamClipSettings().resolved_engine("cuda") == "torch"


def test_cpu_asks_for_the_cpu_provider_only() -> None:
    plan, warnings = plan_providers("cpu")
    assert plan.providers == (CPU,) and plan.device == "cpu" and warnings == ()


def test_cuda_without_onnxruntime_gpu_fails_at_start_unless_fallback_is_allowed() -> None:
    with pytest.raises(ConfigurationError, match="install onnxruntime-gpu"):
        plan_providers("cuda:0", available=[CPU])
    plan, warnings = plan_providers("cuda:0", available=[CPU], allow_fallback=True)
    assert plan.providers == (CPU,) and len(warnings) == 1 and "running ONNX Runtime on CPU" in warnings[0]


def test_cuda_with_onnxruntime_gpu_asks_for_cuda_then_cpu_and_tensorrt_on_request() -> None:
    plan, _ = plan_providers("cuda:1", available=[TENSORRT, CUDA, CPU])
    assert plan.providers == (CUDA, CPU) and plan.provider_options[0] == {"device_id": "1"} and plan.device_id == 1
    plan, _ = plan_providers("cuda", available=[TENSORRT, CUDA, CPU], tensorrt=True)
    assert plan.providers == (TENSORRT, CUDA, CPU) and plan.device == "cuda:0"
    with pytest.raises(ConfigurationError, match="no TensorRT"):
        plan_providers("cuda", available=[CUDA, CPU], tensorrt=True)


def test_check_providers_names_what_onnxruntime_dropped() -> None:
    assert check_providers((CUDA, CPU), [CUDA, CPU], "x") is None
    problem = check_providers((CUDA, CPU), [CPU], "x")
    assert problem is not None
    assert "could not load CUDAExecutionProvider for x and runs on CPUExecutionProvider" in problem


def _tiny_onnx(path: Path) -> None:
    torch.manual_seed(0)
    torch.onnx.export(
        torch.nn.Linear(3, 2), (torch.zeros(1, 3),), str(path), input_names=["x"], output_names=["y"],
        dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False,
    )  # fmt: skip


def test_a_session_that_silently_falls_back_to_cpu_fails_or_warns(tmp_path: Path) -> None:
    """onnxruntime (the CPU build) quietly runs on CPU when asked for CUDA: the runner reads
    session.get_providers() and refuses, or (fallback allowed) keeps a warning for every answer."""
    _tiny_onnx(tmp_path / "m.onnx")
    asked = ProviderPlan("cuda:0", (CUDA, CPU), ({"device_id": "0"}, {}), allow_fallback=False)
    if CUDA in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    with pytest.raises(ConfigurationError, match="could not load CUDAExecutionProvider.*onnx_allow_provider_fallback"):
        OrtRunner(asked, 1).session(tmp_path / "m.onnx", "tiny")
    runner = OrtRunner(ProviderPlan("cuda:0", (CUDA, CPU), ({"device_id": "0"}, {}), allow_fallback=True), 1)
    session = runner.session(tmp_path / "m.onnx", "tiny")
    assert session.get_providers() == [CPU]
    assert len(runner.warnings) == 1 and "runs on CPUExecutionProvider" in runner.warnings[0]
    assert session.run(None, {"x": np.ones((2, 3), np.float32)})[0].shape == (2, 2)


def test_session_options_set_threads_and_turn_spinning_off() -> None:
    so = session_options(3)
    assert so.intra_op_num_threads == 3 and so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.get_session_config_entry("session.inter_op.allow_spinning") == "0"


def test_cached_export_exports_once_verifies_after_and_redoes_an_altered_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights")
    digest = weights_sha256(weights)
    calls: list[Path] = []

    def export(path: Path) -> None:
        calls.append(path)
        _tiny_onnx(path)

    caplog.set_level(logging.INFO, logger="visioncompare.runtime.engines")
    first = cached_export(tmp_path / "cache", digest, "tiny.part", {"opset": 17}, export, service="svc")
    assert first.exported and len(calls) == 1
    assert first.path.parent == tmp_path / "cache" / "onnx" / digest
    assert "svc: no ONNX file for tiny.part" in caplog.text and "exported tiny.part" in caplog.text
    manifest = json.loads(first.path.with_suffix(".json").read_text())
    assert manifest["sha256"] == first.sha256 and manifest["weights_sha256"] == digest
    assert sorted(p.name for p in first.path.parent.iterdir()) == sorted([first.path.name, first.path.stem + ".json"])

    again = cached_export(tmp_path / "cache", digest, "tiny.part", {"opset": 17}, export)
    assert not again.exported and again.path == first.path and len(calls) == 1

    other = cached_export(tmp_path / "cache", digest, "tiny.part", {"opset": 18}, export)
    assert other.path != first.path and len(calls) == 2  # another export config, another file

    with open(first.path, "ab") as f:
        f.write(b"\0")
    caplog.clear()
    redone = cached_export(tmp_path / "cache", digest, "tiny.part", {"opset": 17}, export)
    assert redone.exported and redone.sha256 == first.sha256 and len(calls) == 3
    assert "does not match its manifest" in caplog.text


def test_weights_without_a_file_are_keyed_by_their_state_dict() -> None:
    a = torch.nn.Linear(2, 2).state_dict()
    b = {k: v.clone() for k, v in a.items()}
    assert state_dict_sha256(a) == state_dict_sha256(b) == weights_sha256(None, b)
    b["bias"][0] += 1
    assert state_dict_sha256(a) != state_dict_sha256(b)


@pytest.mark.usefixtures("system_temp_cache_dir")
def test_a_read_only_cache_exports_under_the_temporary_directory_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root (CI) every directory is writable: the check itself is stubbed for the cache."""
    read_only = tmp_path / "models"
    writable = engines._writable
    monkeypatch.setattr(engines, "_writable", lambda d: not d.is_relative_to(read_only) and writable(d))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    caplog.set_level(logging.INFO, logger="visioncompare.runtime.engines")
    first = cached_export(read_only, "ab" * 32, "tiny.part", {}, _tiny_onnx, service="svc")
    assert first.exported and first.path.is_relative_to(tmp_path / "tmp" / "visioncompare" / "onnx")
    assert "cannot be written" in caplog.text and "export-onnx" in caplog.text
    assert not read_only.exists()
    again = cached_export(read_only, "ab" * 32, "tiny.part", {}, _tiny_onnx)
    assert not again.exported and again.path == first.path


def test_export_onnx_skip_torch_skips_a_service_whose_settings_run_torch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The deployments' export step (`export-onnx --skip-torch`, the service's environment) exports
    nothing for a service that will run torch: engine=torch, or auto resolving to torch (full-size
    SAM-CLIP on CPU); it loads no model and writes nothing."""
    from visioncompare.samclip.settings import SamClipSettings

    for key in [k for k in os.environ if k.startswith(("MASKRCNN_", "SAMCLIP_"))]:
        monkeypatch.delenv(key)
    engines.skip_unless_onnxruntime(SamClipSettings(device="cpu"))  # the shapes models on CPU: exported
    with pytest.raises(engines.ExportSkipped):
        engines.skip_unless_onnxruntime(SamClipSettings(device="cpu", engine="torch"))
    monkeypatch.setenv("MASKRCNN_ENGINE", "torch")
    for key, value in {"SAMCLIP_BACKEND": "composed", "SAMCLIP_SAM_VARIANT": "vit_b", "SAMCLIP_SAM_WEIGHTS": "official",
                       "SAMCLIP_CLIP_MODEL": "ViT-B-32", "SAMCLIP_CLIP_PRETRAINED": "laion2b_e16",
                       "SAMCLIP_DEVICE": "cpu"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    assert engines.export_main(["--skip-torch", "--cache-dir", str(tmp_path), "maskrcnn", "samclip"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "maskrcnn\tskipped: engine=torch runs torch on cpu: nothing to export",
        "samclip\tskipped: engine=auto runs torch on cpu: nothing to export",
    ]
    assert not any(tmp_path.iterdir())
