"""The local stack: the compose file's services as local processes.

`vcompare stack up` reads docker-compose.yml for each service's command and
environment (interpolated with deploy/local.env and the shell, as compose would),
applies the few differences a local run needs (loopback addresses, ./models for
/models, an optional port offset), starts the model services, waits until they
serve, starts the gateway, runs the main job and then either keeps the stack up
or stops it. Ctrl-C or SIGTERM stops every process it started.

The compose file is the checkout's (compose.COMPOSE_FILE) unless one is named; its
directory is the stack's root, as compose's project directory: the processes run
there, ./models and artifacts/stack (the logs) are under it, and deploy/local.env
beside it gives the variables unless an env file is named.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from visioncompare.tools.compose import (
    COMPOSE_FILE,
    MODEL_SERVICES,
    ROOT,
    compose_services,
    local_env_file,
    read_env_file,
)

PORT_KEY = re.compile(r"^[A-Z]+_(PORT|METRICS_PORT|HTTP_PORT)$")


def localize(env: Mapping[str, str], port_offset: int = 0, models_dir: Path | None = None) -> dict[str, str]:
    """The local-process version of a service's compose environment: compose's /models volume is
    `models_dir` (default ./models)."""
    models = models_dir or ROOT / "models"
    out = dict(env)
    for key, value in env.items():
        if key.endswith("_HOST"):
            out[key] = "127.0.0.1"
        elif key.endswith("_CACHE_DIR") and value.startswith("/models"):
            out[key] = str(models / value.removeprefix("/models").lstrip("/"))
        elif PORT_KEY.match(key) and value.isdigit():
            out[key] = str(int(value) + port_offset)
        elif key == "GATEWAY_TARGETS":

            def loopback(match: re.Match[str]) -> str:
                return f"{match[1] or ''}127.0.0.1:{int(match[2]) + port_offset}"

            targets = json.loads(value)
            out[key] = json.dumps({n: re.sub(r"^(dns:///)?[^:/]+:(\d+)$", loopback, a) for n, a in targets.items()})
    return out


def wait_serving(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    end = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < end:
            if process.poll() is not None:
                raise RuntimeError(f"exited with code {process.returncode} before serving")
            try:
                # types-grpcio-health-checking declares HealthStub without its methods
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status  # type: ignore[attr-defined]
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"not serving on port {port} after {timeout:.0f}s")


class StackFileError(ValueError):
    """A compose or env file the local stack cannot run from; the message says what to pass instead."""


class LocalStack:
    def __init__(
        self,
        *,
        compose_file: Path = COMPOSE_FILE,
        env_file: Path | None = None,
        port_offset: int = 0,
        log_dir: Path | None = None,
        models_dir: Path | None = None,
    ) -> None:
        compose_file = compose_file.resolve()
        if not compose_file.is_file():
            raise StackFileError(
                f"no compose file at {compose_file}: the local stack runs the services of a checkout's "
                "docker-compose.yml; name it with --compose-file PATH (or VCOMPARE_COMPOSE_FILE)"
            )
        env_file = env_file or local_env_file(compose_file)
        if not env_file.is_file():
            raise StackFileError(
                f"no env file at {env_file}: name the stack's variables (a checkout's deploy/local.env) "
                "with --env-file PATH"
            )
        shell = dict(os.environ)
        self.env = {**read_env_file(env_file), **shell}  # the shell wins, as with compose
        self.services = compose_services(self.env, compose_file)
        missing = [name for name in (*MODEL_SERVICES, "gateway") if name not in self.services]
        if missing:
            raise StackFileError(f"{compose_file} has no service {', '.join(missing)}: it is not this project's")
        self.root = compose_file.parent  # compose's project directory
        self.port_offset = port_offset
        self.models_dir = models_dir or self.root / "models"  # compose's /models volume
        self.log_dir = log_dir or self.root / "artifacts" / "stack"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def service_env(self, name: str) -> dict[str, str]:
        return localize(self.services[name].environment, self.port_offset, self.models_dir)

    def port(self, name: str) -> int:
        """The service's gRPC port: its `<PREFIX>_PORT` setting."""
        [port] = [v for k, v in self.service_env(name).items() if re.fullmatch(r"[A-Z]+_PORT", k)]
        return int(port)

    def spawn(self, name: str) -> None:
        command = self.services[name].command
        executable = Path(sys.executable).parent / command[0]
        argv = [str(executable) if executable.exists() else command[0], *command[1:]]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "wb") as log:
            self.processes[name] = subprocess.Popen(
                argv,
                env={**os.environ, **self.service_env(name)},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,  # its own group: stop() signals it and its children
            )

    def wait(self, name: str, timeout: float) -> None:
        try:
            wait_serving(self.port(name), self.processes[name], timeout)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{name}: {exc}; see {self.log_dir / f'{name}.log'}") from None

    def up(self, timeout: float = 600) -> None:
        """Start the model services together (their loading overlaps), then the gateway."""
        for name in MODEL_SERVICES:
            self.spawn(name)
        for name in MODEL_SERVICES:
            self.wait(name, timeout)
        self.spawn("gateway")
        self.wait("gateway", timeout)

    def stop(self, grace: float = 30) -> None:
        """SIGTERM every process (they drain), then SIGKILL what is left; no orphans."""
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        end = time.monotonic() + grace
        for process in self.processes.values():
            try:
                process.wait(max(end - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        self.processes.clear()


def stop_on_signals(stack: LocalStack) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        stack.stop()
        sys.exit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
