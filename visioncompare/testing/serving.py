"""Run a real model server on port 0 in a background thread, for synchronous tests.

with ServerThread(model, max_batch_size=4) as srv:
    client = VisionModelClient(srv.address)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

from visioncompare.runtime.model import VisionModel
from visioncompare.runtime.server import ModelServer, create_server
from visioncompare.runtime.settings import ServerSettings


class ServerThread:
    def __init__(
        self,
        model: VisionModel,
        settings: ServerSettings | None = None,
        *,
        wait_ready: bool = True,
        **overrides: Any,
    ) -> None:
        base = {"host": "127.0.0.1", "port": 0, "metrics_port": None, "log_json": False}
        self.settings = settings or ServerSettings(**{**base, **overrides})
        self.model = model
        self.wait_ready = wait_ready
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="grpc-server")
        self.server: ModelServer | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 120) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> ServerThread:
        self._thread.start()

        async def _start() -> None:
            self.server, self.port = create_server(self.settings, self.model)
            await self.server.start()

        self.run(_start())
        if self.wait_ready:
            self.ready()
        return self

    def ready(self, timeout: float = 120) -> None:
        assert self.server is not None
        self.run(self.server.wait_ready(timeout), timeout + 5)

    def stop(self, grace: float | None = 0) -> None:
        if self.server is not None:
            self.run(self.server.stop(grace))
            self.server = None
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
