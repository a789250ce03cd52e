"""The model services the gateway fans out to, and their live state.

Each target gets one channel with gRPC's own `dns:///` resolver and
`round_robin` policy, so a headless Service with several replicas is spread
over, and a retry-once-on-UNAVAILABLE policy in the service config. A watcher
follows `grpc.health.v1` Watch per target; when the target turns SERVING its
Capabilities are (re)fetched, when it goes down it is marked unavailable and
skipped until it serves again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from visioncompare.gateway.settings import GatewaySettings
from visioncompare.runtime.channels import channel_options
from visioncompare.v1 import vision_model_service_pb2 as vms
from visioncompare.v1 import vision_model_service_pb2_grpc as vms_grpc

log = logging.getLogger(__name__)

SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": "visioncompare.v1.VisionModelService"}],
            "retryPolicy": {
                "maxAttempts": 2,
                "initialBackoff": "0.05s",
                "maxBackoff": "0.5s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}


def target_channel(address: str, settings: GatewaySettings) -> grpc.aio.Channel:
    options = [
        *channel_options(settings.max_message_bytes),
        ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
        ("grpc.enable_retries", 1),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", int(settings.health_retry_s * 1000)),
    ]
    if settings.target_tls_ca_file is None:
        return grpc.aio.insecure_channel(address, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=settings.target_tls_ca_file.read_bytes(),
        private_key=settings.target_tls_key_file.read_bytes() if settings.target_tls_key_file else None,
        certificate_chain=settings.target_tls_cert_file.read_bytes() if settings.target_tls_cert_file else None,
    )
    return grpc.aio.secure_channel(address, credentials, options=options)


@dataclass
class Target:
    name: str
    address: str
    channel: grpc.aio.Channel
    metadata: tuple[tuple[str, str], ...] = ()
    capabilities: vms.CapabilitiesResponse | None = None
    serving: bool = False
    error: str = "not reached yet"
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def stub(self) -> vms_grpc.VisionModelServiceAsyncStub:  # the stubs' type for an aio channel (.pyi only)
        return vms_grpc.VisionModelServiceStub(self.channel)

    def serves(self, task: int) -> bool:
        return self.capabilities is not None and any(t.task == task for t in self.capabilities.tasks)

    def task_capability(self, task: int) -> vms.TaskCapability | None:
        if self.capabilities is None:
            return None
        return next((t for t in self.capabilities.tasks if t.task == task), None)

    def _set(self, serving: bool, error: str = "") -> None:
        if serving != self.serving:
            log.info("target %s (%s) is now %s %s", self.name, self.address, "SERVING" if serving else "DOWN", error)
        self.serving, self.error = serving, error
        self.changed.set()


class TargetRegistry:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        token = settings.target_auth_token.get_secret_value() if settings.target_auth_token else None
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.targets = {
            name: Target(name, address, target_channel(address, settings), metadata)
            for name, address in settings.targets.items()
        }
        self._watchers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for target in self.targets.values():
            self._watchers.append(asyncio.create_task(self._watch(target), name=f"watch-{target.name}"))

    async def stop(self) -> None:
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        for target in self.targets.values():
            await target.channel.close()

    async def wait_serving(self, names: list[str] | None = None, timeout: float = 60) -> None:
        """Wait until the named targets (default: all) serve; for tests and start-up."""

        async def one(target: Target) -> None:
            while not target.serving:
                target.changed.clear()
                await target.changed.wait()

        chosen = [self.targets[n] for n in names] if names else list(self.targets.values())
        await asyncio.wait_for(asyncio.gather(*(one(t) for t in chosen)), timeout)

    async def _refresh_capabilities(self, target: Target) -> None:
        target.capabilities = await target.stub.Capabilities(
            vms.CapabilitiesRequest(), timeout=10, metadata=target.metadata
        )

    async def _watch(self, target: Target) -> None:
        health = health_pb2_grpc.HealthStub(target.channel)
        while True:
            try:
                # types-grpcio-health-checking declares HealthStub without its methods
                call = health.Watch(  # type: ignore[attr-defined]
                    health_pb2.HealthCheckRequest(service=""), metadata=target.metadata
                )
                async for response in call:
                    if response.status == health_pb2.HealthCheckResponse.SERVING:
                        if not target.serving:
                            await self._refresh_capabilities(target)
                            target._set(True)
                    else:
                        status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
                        target._set(False, f"health status {status}")
                target._set(False, "health stream ended")
            except grpc.aio.AioRpcError as exc:
                target._set(False, f"{exc.code().name}: {exc.details()}")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep watching whatever happens
                log.exception("watching %s failed", target.name)
                target._set(False, f"watch failed: {exc}")
            await asyncio.sleep(self.settings.health_retry_s)
