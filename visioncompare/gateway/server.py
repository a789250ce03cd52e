"""The gateway process: ComparisonService over gRPC on the shared runtime."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc

from visioncompare.gateway.comparison import Comparator, GatewayMetrics
from visioncompare.gateway.settings import GatewaySettings
from visioncompare.gateway.targets import TargetRegistry
from visioncompare.runtime.logs import configure_logging
from visioncompare.runtime.metrics import ServerMetrics
from visioncompare.runtime.server import GrpcServer, run_until_signalled
from visioncompare.runtime.settings import load_settings
from visioncompare.v1 import comparison_service_pb2 as cs
from visioncompare.v1 import comparison_service_pb2_grpc as cs_grpc

log = logging.getLogger(__name__)

COMPARISON_SERVICE = cs.DESCRIPTOR.services_by_name["ComparisonService"].full_name


class ComparisonServicer(cs_grpc.ComparisonServiceServicer):
    def __init__(self, comparator: Comparator) -> None:
        self.comparator = comparator

    async def Compare(
        self, request: cs.CompareRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> cs.CompareResponse:
        return await self.comparator.compare(request, context.time_remaining())

    async def ListModels(
        self, request: cs.ListModelsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> cs.ListModelsResponse:
        return self.comparator.list_models()


class GatewayServer(GrpcServer):
    def __init__(self, settings: GatewaySettings) -> None:
        metrics = ServerMetrics()
        self.settings: GatewaySettings = settings
        self.http: Any = None
        self.http_port: int | None = None
        self.registry = TargetRegistry(settings)
        self.comparator = Comparator(settings, self.registry, GatewayMetrics(metrics.registry))
        servicer = ComparisonServicer(self.comparator)
        super().__init__(
            settings,
            [COMPARISON_SERVICE],
            lambda server: cs_grpc.add_ComparisonServiceServicer_to_server(servicer, server),
            metrics,
        )

    async def start(self) -> None:
        await super().start()
        self.registry.start()
        if self.settings.http_port is not None:
            await self._start_http(self.settings.http_port)
        await self.set_serving(True)

    async def _start_http(self, port: int) -> None:
        import uvicorn

        from visioncompare.gateway.http import create_app

        config = uvicorn.Config(
            create_app(self.comparator, self.settings),
            host=self.settings.host,
            port=port,
            log_config=None,
            lifespan="off",
            access_log=False,
        )
        self.http = uvicorn.Server(config)
        self._http_task = asyncio.create_task(self.http.serve(), name="http")
        while not self.http.started:
            if self._http_task.done():
                self._http_task.result()  # raises the bind error
                raise RuntimeError(f"HTTP server stopped during start-up on port {self.settings.http_port}")
            await asyncio.sleep(0.02)
        self.http_port = self.http.servers[0].sockets[0].getsockname()[1]
        log.info("HTTP on %s:%d", self.settings.host, self.http_port)

    async def stop(self, grace: float | None) -> None:
        await super().stop(grace)
        if self.http is not None:
            self.http.should_exit = True
            await self._http_task
        await self.registry.stop()


def main() -> None:
    settings = load_settings(GatewaySettings, "vision-gateway")
    configure_logging("gateway", settings.log_level, settings.log_json)

    async def run() -> None:
        server = GatewayServer(settings)
        await run_until_signalled(server, settings.drain_grace_s)

    asyncio.run(run())
