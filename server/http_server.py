"""uvicorn serving the HTTP door on the server's own asyncio loop, under the server's drain.

`uvicorn.run` would start a loop of its own and take SIGTERM/SIGINT for itself; here
`Server.serve()` runs as a task on the loop gRPC already uses (one engine, one process),
and signals stay with the server (server/app.py), which drains both doors: uvicorn is only
told to stop once in-flight requests have finished, or at once on a second signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import uvicorn

log = logging.getLogger("kvserve.http")


class _Uvicorn(uvicorn.Server):
    """uvicorn without its signal handlers: kvserve's drain owns SIGTERM and SIGINT (uvicorn
    would otherwise replace the loop's handlers and re-raise the signal when it stops)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    def __init__(
        self,
        app,
        host: str,
        port: int,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        tls_client_ca: Path | None = None,
    ) -> None:
        self.host = host
        self.config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            ws="none",
            log_config=None,  # the server's logging set-up stays as it is
            log_level="warning",
            access_log=False,  # the door writes its own access line per API call
            server_header=False,
            ssl_certfile=tls_cert,
            ssl_keyfile=tls_key,
            ssl_ca_certs=tls_client_ca,
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls_client_ca else ssl.CERT_NONE,
        )
        self._server = _Uvicorn(self.config)
        self._socket: socket.socket | None = None
        self._task: asyncio.Task | None = None

    @property
    def tls(self) -> bool:
        return self.config.ssl_certfile is not None

    def bind(self) -> int:
        """Bind the port now (OSError if taken), so start-up fails before the model warms up;
        returns the port (the one picked, for port 0)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets
        # that say they are TCP, and with Nagle on each small SSE chunk after the first
        # waits for the client's delayed ACK (about 40 ms on Linux)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.config.port))
        except OSError as e:
            sock.close()
            raise OSError(f"cannot bind HTTP to {self.host}:{self.config.port} ({e})") from None
        self._socket = sock
        return sock.getsockname()[1]

    async def start(self) -> None:
        """Serve on the bound socket (TLS files are read here: a bad one raises at once)."""
        assert self._socket is not None, "bind() first"
        try:
            self.config.load()
        except (OSError, ssl.SSLError) as e:
            raise OSError(f"cannot serve HTTPS ({e})") from None
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._task.done():  # it failed to start: its exception says why
                self._task.result()
            await asyncio.sleep(0.01)

    async def stop(self, grace: float | None) -> None:
        """Close the port and wait up to `grace` seconds for responses still being written
        (None: stop now, cutting what is left)."""
        if self._task is None:
            return
        self.config.timeout_graceful_shutdown = None if grace is None else max(grace, 1.0)
        self._server.force_exit = grace is None
        self._server.should_exit = True
        # bounded: on Python >= 3.12 uvicorn's shutdown also waits for open connections
        bound = 1.0 if grace is None else max(grace, 1.0) + 1.0
        try:
            await asyncio.wait_for(asyncio.shield(self._task), bound)
        except asyncio.TimeoutError:
            log.warning("HTTP connections still open after %.1fs: closing them", bound)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
