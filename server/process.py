"""Run `kvserve-serve` as a child process and wait until it is ready (tests, demo, benches).

Readiness is the gRPC health protocol saying SERVING, exactly what a load balancer sees.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


@dataclass(frozen=True)
class ProcStatus:
    rss_bytes: int
    threads: int


def proc_status(pid: int) -> ProcStatus:
    """Resident memory and OS thread count of a process (Linux /proc)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return ProcStatus(int(fields["VmRSS"].split()[0]) * 1024, int(fields["Threads"]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    process: subprocess.Popen
    port: int
    metrics_port: int
    log_path: Path
    args: list[str] = field(default_factory=list)
    http_port: int | None = None  # the HTTP door's, when started with http=True

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def http_url(self) -> str:
        """The HTTP door's base URL (plain http; a TLS server's is https:// on the same port)."""
        assert self.http_port is not None, "started without http=True"
        return f"http://127.0.0.1:{self.http_port}"

    @classmethod
    def start(
        cls,
        model: Path,
        log_path: Path,
        extra: list[str] | None = None,
        timeout: float = 60.0,
        channel: Callable[[str], grpc.Channel] = grpc.insecure_channel,
        metadata: tuple[tuple[str, str], ...] = (),
        http: bool = False,
    ) -> ServerProcess:
        port, metrics_port = free_port(), free_port()
        http_port = free_port() if http else None
        args = [
            sys.executable,
            "-m",
            "server",
            "--model",
            str(model),
            "--port",
            str(port),
            "--metrics-port",
            str(metrics_port),
            *(extra or []),
        ]
        if http_port is not None:
            args += ["--http-port", str(http_port)]
        log = open(log_path, "wb")  # noqa: SIM115 - the child writes to it for its whole life
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        server = cls(process, port, metrics_port, log_path, args, http_port)
        server.wait_ready(timeout, channel, metadata)
        return server

    def wait_ready(
        self,
        timeout: float,
        channel: Callable[[str], grpc.Channel] = grpc.insecure_channel,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Poll health until SERVING (`channel` and `metadata` for a TLS or token server)."""
        deadline = time.monotonic() + timeout
        with channel(self.target) as ready_channel:
            stub = health_pb2_grpc.HealthStub(ready_channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited early:\n{self.log_path.read_text()[-3000:]}")
                try:
                    reply = stub.Check(
                        health_pb2.HealthCheckRequest(), timeout=1.0, metadata=metadata
                    )
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(
            f"server not SERVING after {timeout}s:\n{self.log_path.read_text()[-3000:]}"
        )

    def status(self) -> ProcStatus:
        return proc_status(self.process.pid)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful drain) and wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
