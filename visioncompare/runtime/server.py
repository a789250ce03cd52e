"""The gRPC server every service stands on.

`create_server(settings, model)` builds a grpc.aio server with health checking,
reflection, the runtime interceptor, message limits and TLS/mTLS from settings,
and returns it with its bound port. `serve(settings, model)` runs one until
SIGTERM/SIGINT and drains it.

Importing this module loads the Open Inference Protocol's generated code (package
`inference`), whose names clash in protobuf's default pool with another copy of the
protocol such as tritonclient's: a process that talks to a server through tritonclient
imports the client (`visioncompare.runtime.client`) and the channel settings
(`visioncompare.runtime.channels`), never this module.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from visioncompare.runtime import oip
from visioncompare.runtime.channels import channel_options, server_credentials
from visioncompare.runtime.dataplane import DataPlane
from visioncompare.runtime.errors import ConfigurationError
from visioncompare.runtime.interceptors import RuntimeInterceptor
from visioncompare.runtime.logs import configure_logging
from visioncompare.runtime.metrics import ServerMetrics
from visioncompare.runtime.model import VisionModel
from visioncompare.runtime.scheduler import BatchScheduler
from visioncompare.runtime.servicer import VisionModelServicer
from visioncompare.runtime.settings import ServerSettings
from visioncompare.v1 import vision_model_service_pb2 as vms
from visioncompare.v1 import vision_model_service_pb2_grpc as vms_grpc

log = logging.getLogger(__name__)

VISION_SERVICE = vms.DESCRIPTOR.services_by_name["VisionModelService"].full_name


def software_version() -> str:
    try:
        return version("visioncompare")
    except PackageNotFoundError:
        return "0+unknown"


class HealthServicer(health_pb2_grpc.HealthServicer):
    """grpc.health.v1 (Check and Watch) whose Watch streams end when the server drains.

    As grpcio-health-checking's asyncio servicer, except at shutdown: that one sends its
    watchers NOT_SERVING and keeps their streams open, so a watcher (the gateway watches every
    model) holds an RPC in flight and `server.stop(grace)` waits out the whole drain grace for
    it. Here each Watch stream sends NOT_SERVING and then ends (status OK): a stop waits only
    for the real requests in flight. Status changes are coalesced as in the reference: a
    watcher always gets the latest status.
    """

    def __init__(self) -> None:
        self._status: dict[str, int] = {"": health_pb2.HealthCheckResponse.SERVING}
        self._changed = asyncio.Condition()
        self._draining = False
        self._watchers = 0  # Watch streams open

    def _current(self, service: str) -> int:
        return self._status.get(service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND)
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        last: int | None = None

        def news() -> bool:
            return self._draining or self._current(request.service) != last

        self._watchers += 1
        try:
            while True:
                async with self._changed:
                    await self._changed.wait_for(news)
                    status = self._current(request.service)
                if status != last:
                    await context.write(health_pb2.HealthCheckResponse(status=status))
                    last = status
                elif self._draining:  # NOT_SERVING sent (the drain may begin during a write)
                    return
        finally:
            async with self._changed:
                self._watchers -= 1
                self._changed.notify_all()

    async def set(self, service: str, status: int) -> None:
        """Set a service's status (ignored once draining)."""
        if self._draining:
            return
        async with self._changed:
            self._status[service] = status
            self._changed.notify_all()

    async def enter_graceful_shutdown(self, timeout: float = 1.0) -> None:
        """Every service NOT_SERVING for good; each Watch stream sends it and ends. Waits (up to
        `timeout`) until the streams have ended, so that the server's stop, which follows, does
        not cut a stream before its last message."""
        async with self._changed:
            self._draining = True
            for service in self._status:
                self._status[service] = health_pb2.HealthCheckResponse.NOT_SERVING
            self._changed.notify_all()
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self._watchers == 0), timeout)
            except TimeoutError:
                log.warning("%d health watcher(s) still open at shutdown", self._watchers)


class GenericHandlersOnly(grpc.aio.Server):
    """Where a GrpcServer registers its services: through their generic handlers only.

    grpc.aio (1.85) keeps one pending call per *registered* method and waits on all of them with
    `asyncio.wait` for every RPC it accepts (grpc/grpc#43461, open), so each registered method
    costs every RPC: the 18 methods of VisionModelService, the Open Inference Protocol, health
    and reflection cost about 120 k instructions per request, more than the runtime's
    interceptor. The generated `add_*_to_server` functions register a service both ways; here
    the generic handler (the same method handlers, found by name) is kept and the method
    registration dropped (`grpc.aio.Server.add_registered_method_handlers` is a no-op).
    """

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(generic_rpc_handlers)

    def add_insecure_port(self, address: str) -> int:
        return self._server.add_insecure_port(address)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self._server.add_secure_port(address, server_credentials)

    async def start(self) -> None:
        await self._server.start()

    async def stop(self, grace: float | None) -> None:
        await self._server.stop(grace)

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        return await self._server.wait_for_termination(timeout)


class GrpcServer:
    """A grpc.aio server with health, reflection, metrics and the runtime interceptor."""

    def __init__(
        self,
        settings: ServerSettings,
        service_names: Sequence[str],
        register: Callable[[grpc.aio.Server], None],
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or ServerMetrics()
        token = settings.auth_token.get_secret_value() if settings.auth_token else None
        self.server = grpc.aio.server(
            interceptors=[RuntimeInterceptor(self.metrics, token)],
            options=channel_options(settings.max_message_bytes),
        )
        services = GenericHandlersOnly(self.server)
        register(services)
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, services)
        self.service_names = list(service_names)
        reflection.enable_server_reflection(
            [*self.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            services,
        )
        address = f"{settings.host}:{settings.port}"
        credentials = server_credentials(settings)
        if credentials is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, credentials)
        if self.port == 0:
            raise ConfigurationError(f"could not bind gRPC on {address}")
        self.metrics_port: int | None = None
        self._metrics_server: Any = None

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def start(self) -> None:
        await self.set_serving(False)
        await self.server.start()
        if self.settings.metrics_port is not None:
            self._metrics_server, self.metrics_port = self.metrics.serve(self.settings.host, self.settings.metrics_port)
        log.info("listening on %s:%d (metrics %s)", self.settings.host, self.port, self.metrics_port)

    async def stop(self, grace: float | None) -> None:
        """Report NOT_SERVING, refuse new RPCs and let in-flight ones finish within `grace`."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()


class ModelServer(GrpcServer):
    """Serves one VisionModel: loads and warms it up in the background, then reports SERVING."""

    def __init__(self, settings: ServerSettings, model: VisionModel) -> None:
        metrics = ServerMetrics()
        self.model = model
        self.scheduler = BatchScheduler(
            model,
            metrics,
            max_batch_size=settings.max_batch_size,
            max_queue_delay_ms=settings.max_queue_delay_ms,
            max_queue_size=settings.max_queue_size,
            watchdog_s=settings.inference_watchdog_s,
            on_health=self._on_scheduler_health,
        )
        # One data plane under both protocols: VisionModelService and the Open Inference
        # Protocol (KServe v2), on the same port, scheduler and interceptor.
        self.plane = DataPlane(model, self.scheduler, max_image_pixels=settings.max_image_pixels)
        self.servicer = VisionModelServicer(self.plane)
        self.oip = oip.OipServicer(self.plane, server_version=software_version())

        def register(server: grpc.aio.Server) -> None:
            vms_grpc.add_VisionModelServiceServicer_to_server(self.servicer, server)
            oip.add_to_server(self.oip, server)

        super().__init__(settings, [VISION_SERVICE, oip.SERVICE_NAME], register, metrics)
        self._loading: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await super().start()
        self._loading = asyncio.get_running_loop().create_task(self._load(), name="model-load")

    async def _load(self) -> None:
        loop = asyncio.get_running_loop()
        log.info("loading model %s", self.model.name)
        await loop.run_in_executor(None, self.model.load)
        await loop.run_in_executor(None, self.model.warmup)
        self.scheduler.start()
        self.plane.mark_ready()
        self.metrics.model_loaded.set(1)
        await self.set_serving(True)
        log.info("model %s loaded and warm: SERVING", self.model.name)

    async def _on_scheduler_health(self, serving: bool) -> None:
        """The scheduler's worker died, or an inference ran past (or finished after) the watchdog."""
        if serving and not self.plane.serving:
            return  # draining, or down for another reason
        await self.set_serving(serving)
        log.log(
            logging.WARNING if serving else logging.CRITICAL,
            "model %s: health is now %s",
            self.model.name,
            "SERVING" if serving else "NOT_SERVING",
        )

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait for load and warm-up; re-raises a load failure."""
        assert self._loading is not None, "start() first"
        await asyncio.wait_for(asyncio.shield(self._loading), timeout)

    async def stop(self, grace: float | None) -> None:
        self.plane.mark_draining()
        await super().stop(grace)
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        elif self._loading is not None and self._loading.exception() is None:
            await self.scheduler.stop()
        self.metrics.model_loaded.set(0)
        self.plane.close()
        self.model.close()


def create_server(settings: ServerSettings, model: VisionModel) -> tuple[ModelServer, int]:
    """Build (not start) a model server; returns it and its bound port."""
    server = ModelServer(settings, model)
    return server, server.port


async def run_until_signalled(server: GrpcServer, grace: float, started: Callable[[], Any] | None = None) -> None:
    """Start `server`, wait for SIGTERM/SIGINT, then drain it within `grace` seconds."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    waiters = [asyncio.ensure_future(stop.wait())]
    if started is not None:
        waiters.append(asyncio.ensure_future(started()))
    try:
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()  # re-raise a start-up failure
        await stop.wait()
        log.info("signal received: draining for up to %.1fs", grace)
    finally:
        for task in waiters:
            task.cancel()
        await server.stop(grace)


def serve(settings: ServerSettings, model: VisionModel) -> None:
    """Run a model server in this process until signalled (console-script entry)."""
    configure_logging(model.name, settings.log_level, settings.log_json)

    async def main() -> None:
        server, _ = create_server(settings, model)  # grpc.aio binds to the running loop
        await run_until_signalled(server, settings.drain_grace_s, server.wait_ready)

    try:
        asyncio.run(main())
    except ConfigurationError as exc:
        log.error("cannot start %s: %s", model.name, exc)
        sys.exit(2)
