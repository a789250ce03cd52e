"""Run the gateway in a background thread for synchronous tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import grpc

from visioncompare.gateway.server import GatewayServer
from visioncompare.gateway.settings import GatewaySettings
from visioncompare.testing.processes import ServiceProcess
from visioncompare.v1 import comparison_service_pb2_grpc as cs_grpc


class GatewayThread:
    def __init__(self, targets: dict[str, str], **overrides: Any) -> None:
        self.settings = GatewaySettings(
            **{
                "host": "127.0.0.1",
                "port": 0,
                "metrics_port": None,
                "http_port": None,
                "log_json": False,
                "health_retry_s": 0.3,
                "targets": targets,
                **overrides,
            }
        )
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="gateway")
        self.server: GatewayServer | None = None

    def run(self, coro: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def address(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.port}"

    def wait_serving(self, names: list[str] | None = None, timeout: float = 60) -> None:
        assert self.server is not None
        self.run(self.server.registry.wait_serving(names, timeout), timeout + 5)

    def wait_down(self, name: str, timeout: float = 30) -> None:
        assert self.server is not None
        target = self.server.registry.targets[name]

        async def down() -> None:
            while target.serving:
                target.changed.clear()
                await target.changed.wait()

        self.run(asyncio.wait_for(down(), timeout), timeout + 5)

    def __enter__(self) -> GatewayThread:
        self._thread.start()

        async def start() -> None:
            self.server = GatewayServer(self.settings)
            await self.server.start()

        self.run(start())
        self.channel = grpc.insecure_channel(self.address)
        self.stub = cs_grpc.ComparisonServiceStub(self.channel)
        return self

    def __exit__(self, *exc: object) -> None:
        self.channel.close()
        if self.server is not None:
            self.run(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@contextmanager
def gateway_over(services: Sequence[ServiceProcess]) -> Iterator[GatewayThread]:
    """Start the service processes and a gateway over them (each by its name), wait until it
    serves them all; stop the services after."""
    for service in services:
        service.start()
    try:
        with GatewayThread({s.name: f"dns:///{s.address}" for s in services}) as gw:
            gw.wait_serving()
            yield gw
    finally:
        for service in services:
            service.stop()
