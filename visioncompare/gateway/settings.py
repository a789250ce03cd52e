"""Gateway settings: the shared server settings plus targets and comparison knobs."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from visioncompare.runtime.settings import ServerSettings


class GatewaySettings(ServerSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_")

    port: int = Field(50050, ge=0, le=65535)
    metrics_port: int | None = Field(9092, ge=0, le=65535)
    http_port: int | None = Field(8080, ge=0, le=65535, description="web page and JSON API; unset disables")
    targets: dict[str, str] = Field(
        default_factory=lambda: {
            "maskrcnn": "dns:///localhost:50051",
            "samclip": "dns:///localhost:50052",
            "sam-clip-composed": "dns:///localhost:50053",
        },
        description='model name -> address, as JSON: {"maskrcnn": "dns:///maskrcnn:50051"}',
    )
    default_timeout_s: float = Field(60.0, gt=0, description="deadline when the caller sets none")
    deadline_margin_ms: float = Field(50.0, ge=0, description="kept back from each model call's deadline")
    health_retry_s: float = Field(2.0, gt=0, description="pause before re-watching a target that is down")
    iou_threshold: float = Field(0.5, gt=0, le=1)
    max_image_pixels: int = Field(
        40_000_000,
        ge=1,
        description="largest image (width*height, read from its header) the gateway forwards; a larger one "
        "fails whole with INVALID_ARGUMENT (HTTP 413) before any model is called",
    )
    target_tls_ca_file: Path | None = Field(None, description="CA to verify model services (enables TLS)")
    target_tls_cert_file: Path | None = Field(None, description="client cert for mTLS to model services")
    target_tls_key_file: Path | None = None
    target_auth_token: SecretStr | None = Field(None, description="bearer token sent to model services")

    @field_validator("targets")
    @classmethod
    def _check_targets(cls, targets: dict[str, str]) -> dict[str, str]:
        if not targets:
            raise ValueError("targets is empty: configure at least one model service")
        for name, address in targets.items():
            if not name or not address:
                raise ValueError(f"target {name!r}: name and address are required")
        return targets

    @model_validator(mode="after")
    def _check_target_tls(self) -> Self:
        if (self.target_tls_cert_file is None) != (self.target_tls_key_file is None):
            raise ValueError("target_tls_cert_file and target_tls_key_file must be set together")
        if self.target_tls_cert_file is not None and self.target_tls_ca_file is None:
            raise ValueError("target mTLS needs target_tls_ca_file")
        return self
