"""Start service processes for end-to-end tests and wait until they serve."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_serving(address: str, timeout: float = 120.0, process: subprocess.Popen[bytes] | None = None) -> None:
    end = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < end:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"service at {address} exited with {process.returncode}")
            try:
                # types-grpcio-health-checking declares HealthStub without its methods
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:  # type: ignore[attr-defined]
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"{address} did not become SERVING in {timeout}s")


class ServiceProcess:
    """A service subprocess; `stop()` sends SIGTERM and waits, `kill()` sends SIGKILL."""

    def __init__(self, name: str, args: Sequence[str], port: int, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.args = [sys.executable, *args]
        self.port = port
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> ServiceProcess:
        self.process = subprocess.Popen(self.args, cwd=ROOT, env=self.env)
        wait_serving(self.address, timeout, self.process)
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def tiny_service(name: str, delay: float = 0.0, tasks: str | None = None) -> ServiceProcess:
    port = free_port()
    args = ["-m", "visioncompare.testing.tiny_service", "--port", str(port), "--name", name, "--delay", str(delay)]
    if tasks:
        args += ["--tasks", tasks]
    return ServiceProcess(name, args, port)
