"""Torch device and precision selection, with no silent fallbacks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from visioncompare.runtime.errors import ConfigurationError


@dataclass(frozen=True)
class DevicePlan:
    device: Any  # torch.device
    precision: str  # what really runs: "fp32", "fp16-autocast", "bf16-autocast"
    warnings: tuple[str, ...]

    def autocast(self) -> Callable[[], contextlib.AbstractContextManager[Any]]:
        """A factory of the autocast context for this plan (a no-op for fp32)."""
        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext
        dtype = torch.float16 if self.precision.startswith("fp16") else torch.bfloat16
        return lambda: torch.autocast(device_type=self.device.type, dtype=dtype)


def plan_device(device: str, precision: str = "fp32") -> DevicePlan:
    """Resolve `auto`/`cpu`/`cuda[:N]` and the precision, saying what was degraded."""
    import torch

    warnings: list[str] = []
    if device == "auto":
        resolved = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
        if resolved.type == "cpu":
            warnings.append("no CUDA device: running on CPU")
    else:
        try:
            resolved = torch.device(device)
        except RuntimeError as exc:
            raise ConfigurationError(f"device={device!r} is not a torch device: {exc}") from exc
        if resolved.type == "cuda" and not torch.cuda.is_available():
            raise ConfigurationError(f"device={device!r} but CUDA is not available; use device=auto or device=cpu")
    effective = "fp32"
    if precision != "fp32":
        if resolved.type == "cuda":
            effective = f"{precision}-autocast"
        else:
            warnings.append(f"precision={precision} needs CUDA: running fp32 on CPU")
    return DevicePlan(device=resolved, precision=effective, warnings=tuple(warnings))
