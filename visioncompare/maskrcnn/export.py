"""`export-onnx maskrcnn`: the ONNX files of the networks the MASKRCNN_* settings configure.

It sits above the model (which installs the exports when its engine is onnxruntime), so that
the export code below the model imports nothing above it. Registered under the
`visioncompare.onnx` entry-point group (pyproject.toml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visioncompare.maskrcnn.model import MaskRCNNModel
from visioncompare.maskrcnn.settings import MaskRCNNSettings
from visioncompare.runtime.engines import ExportedFile, skip_unless_onnxruntime


def export_for_settings(cache_dir: Path | None = None, *, skip_torch: bool = False) -> list[ExportedFile]:
    """`export-onnx maskrcnn`: export (or verify) the files of the networks the MASKRCNN_*
    settings configure, as a start with MASKRCNN_ENGINE=onnxruntime would (with skip_torch,
    ExportSkipped where the settings run torch); load each in
    ONNX Runtime. Registered under the `visioncompare.onnx` entry-point group."""
    overrides: dict[str, Any] = {"metrics_port": None}
    if cache_dir is not None:
        overrides["cache_dir"] = cache_dir
    if skip_torch:
        skip_unless_onnxruntime(MaskRCNNSettings(**overrides))
    overrides["engine"] = "onnxruntime"
    model = MaskRCNNModel(MaskRCNNSettings(**overrides))
    model.load()
    return list(model.onnx_files)
