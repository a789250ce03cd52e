"""`export-onnx samclip`: the ONNX files of the networks the SAMCLIP_* settings configure.

It sits above the model (which installs the exports when its engine is onnxruntime), so that
the export code below the model imports nothing above it. Registered under the
`visioncompare.onnx` entry-point group (pyproject.toml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visioncompare.runtime.engines import ExportedFile, skip_unless_onnxruntime
from visioncompare.samclip.model import SamClipModel
from visioncompare.samclip.settings import SamClipSettings


def export_for_settings(cache_dir: Path | None = None, *, skip_torch: bool = False) -> list[ExportedFile]:
    """`export-onnx samclip`: export (or verify) the files of the networks the SAMCLIP_*
    settings configure, as a start with SAMCLIP_ENGINE=onnxruntime would (with skip_torch,
    ExportSkipped where the settings run torch). Registered under
    the `visioncompare.onnx` entry-point group."""
    overrides: dict[str, Any] = {"metrics_port": None}
    if cache_dir is not None:
        overrides["cache_dir"] = cache_dir
    if skip_torch:
        skip_unless_onnxruntime(SamClipSettings(**overrides))
    overrides["engine"] = "onnxruntime"
    model = SamClipModel(SamClipSettings(**overrides))
    model.load()
    return list(getattr(model.backend, "onnx_files", []))
