"""Typed settings shared by every server, read from environment variables.

Each service subclasses `ServerSettings` with its own prefix (MASKRCNN_, SAMCLIP_,
GATEWAY_) and adds its model's fields. Settings are validated once, at start-up.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class ServerSettings(BaseSettings):
    """Transport, limits, scheduling and security of one gRPC server."""

    # Subclasses set their own env_prefix; the rest is inherited. "none" unsets an optional field.
    model_config = SettingsConfigDict(env_prefix="VC_", extra="forbid", frozen=True, env_parse_none_str="none")

    host: str = "0.0.0.0"
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    metrics_port: int | None = Field(9090, ge=0, le=65535, description="Prometheus port; unset disables the exporter")
    max_message_bytes: int = Field(64 * MiB, ge=1024, description="gRPC send/receive limit")
    max_image_pixels: int = Field(40_000_000, ge=1, description="decoded width*height limit")
    max_batch_size: int = Field(4, ge=1, le=256)
    max_queue_delay_ms: float = Field(
        0.0, ge=0, description="how long a batch waits to fill; 0 batches what is already queued"
    )
    max_queue_size: int = Field(64, ge=1, description="queued requests before RESOURCE_EXHAUSTED")
    inference_watchdog_s: float | None = Field(
        300.0,
        gt=0,
        description="an inference (one batch) running longer reports NOT_SERVING, so that the orchestrator "
        "restarts a hung service; SERVING again if it finishes; raise it for slow CPU inference; none disables",
    )
    drain_grace_s: float = Field(10.0, ge=0, description="SIGTERM drain period")
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = Field(None, description="set to require client certs (mTLS)")
    auth_token: SecretStr | None = Field(None, description="bearer token required on every RPC")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True

    @model_validator(mode="after")
    def _check_tls(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mTLS) needs tls_cert_file and tls_key_file")
        for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: no such file: {path}")
        return self


#: The inference engines a model service may run its networks on (RuntimeInfo.engine).
Engine = Literal["torch", "onnxruntime"]


class ModelServerSettings(ServerSettings):
    """Adds what every model service has: a preset, a device, a precision and an inference engine.

    A preset is a named set of defaults (`presets`) for one set of weights: it fills in the
    settings that are not given, and explicit settings win, but for the weights themselves
    (`preset_identity`), which a named preset refuses to see contradicted. `preset` names one;
    unset, the weights given imply it (`implied_preset`: the shapes weights the shapes preset,
    which is also what naming no weights gives). Capabilities say which preset is active.

    A service names the engines it implements in `supported_engines`; any other engine is
    refused here, at start-up, rather than ignored. `engine=auto` (the default) runs the
    engine measured faster for the service on the device it runs on (`measured_engines`,
    from bench/engines.py), torch where nothing was measured.
    """

    #: The engines this service implements; a subclass widens it.
    supported_engines: ClassVar[tuple[str, ...]] = ("torch",)
    #: What `engine=auto` runs, by torch device type ("cpu", "cuda"), as measured for this
    #: service; a device type not listed runs torch.
    measured_engines: ClassVar[dict[str, str]] = {}
    #: The service's presets: name -> the settings it fills in when they are not given.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: The settings that say which weights run: a preset's are its identity (given otherwise,
    #: the named preset is refused), and the weights given imply the preset when none is named.
    preset_identity: ClassVar[tuple[str, ...]] = ()

    preset: str | None = Field(
        None,
        description="a named set of defaults (the service's `presets`); explicit settings win; "
        "unset: the preset the given settings imply, if any",
    )

    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    precision: Literal["fp32", "fp16", "bf16"] = Field("fp32", description="fp16/bf16 use autocast on CUDA only")
    engine: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto",
        description="torch: PyTorch eager; onnxruntime: the networks exported to ONNX (cached in cache_dir/onnx "
        "under the SHA-256 of the weights, exported on first start) and run by ONNX Runtime; auto: the one "
        "measured faster for this service on its device (torch where not measured)",
    )
    onnx_threads: int | None = Field(
        None, ge=1, le=1024, description="ONNX Runtime's intra-op threads; none: as many as torch uses"
    )
    onnx_allow_provider_fallback: bool = Field(
        False,
        description="when ONNX Runtime cannot run on the execution provider asked for (e.g. CUDA libraries that do "
        "not match onnxruntime-gpu), run on what it could load and warn in every answer; false: refuse to start",
    )
    onnx_tensorrt: bool = Field(
        False, description="on CUDA, put ONNX Runtime's TensorRT execution provider before CUDA's (needs TensorRT)"
    )

    @classmethod
    def implied_preset(cls, given: dict[str, Any]) -> str | None:
        """The preset the weights in `given` (completed) belong to, when none is named; None: none."""
        return None

    @classmethod
    def complete_settings(cls, given: dict[str, Any]) -> None:
        """Fill in, in place, settings that others given imply (before the preset's defaults)."""

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """A named preset's weights (its `preset_identity` settings), then the settings the given
        ones imply, then the preset's other defaults: the named one, or the one the weights imply.
        Explicit settings win, except that a named preset's weights may not be contradicted."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        name = data.get("preset")
        if name:
            if name not in cls.presets:
                choices = ", ".join(sorted(cls.presets)) or "none (this service has no presets)"
                raise ValueError(f"preset={name!r} is not a preset of this service; choose from {choices}")
            preset = cls.presets[name]
            for key in cls.preset_identity:
                if key in data and key in preset and str(data[key]).strip() != str(preset[key]):
                    raise ValueError(
                        f"preset={name} runs {key}={preset[key]}, but {key}={data[key]} is given: name the "
                        f"preset or the weights, not both (without a preset, the weights imply theirs)"
                    )
                if key in preset:
                    data.setdefault(key, preset[key])
        cls.complete_settings(data)
        name = name or cls.implied_preset(data)
        if name is None:
            return data
        data["preset"] = name
        for key, value in cls.presets[name].items():
            data.setdefault(key, value)
        return data

    @model_validator(mode="after")
    def _check_engine(self) -> Self:
        if self.engine != "auto" and self.engine not in self.supported_engines:
            raise ValueError(
                f"engine={self.engine} is not implemented by this service; it runs on: "
                + ", ".join(self.supported_engines)
            )
        return self

    def resolved_engine(self, device_type: str) -> Engine:
        """The engine to run on a device of `device_type` ("cpu", "cuda")."""
        return self.auto_engine(device_type) if self.engine == "auto" else self.engine

    def auto_engine(self, device_type: str) -> Engine:
        """What engine=auto runs on `device_type`: `measured_engines`; a service whose choice
        depends on more (its architecture) overrides this."""
        return "onnxruntime" if self.measured_engines.get(device_type) == "onnxruntime" else "torch"


def settings_error(exc: ValidationError, prefix: str) -> str:
    """One line naming each bad variable and what is wrong with it."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{prefix}{where.upper()}: {message}" if where else message)
    return "; ".join(parts).replace("\n", " ")


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], prog: str) -> S:
    """Read settings from the environment, or exit 2 with one line on stderr."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        print(f"{prog}: invalid settings: {settings_error(exc, prefix)}", file=sys.stderr)
        sys.exit(2)
