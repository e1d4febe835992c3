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
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn

log = logging.getLogger("kvserve.http")
FLUSH_S = 5.0  # the drain's wait for HTTP responses to finish writing once the engine is idle
CLOSE_S = 0.5  # then for uvicorn to close the connections (a TLS close may wait on the client)


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
        """Close the port and let responses still being written finish, for at most
        FLUSH_S of the `grace` (None: stop now, cutting what is left).

        Called once the engine is idle, so every answer is complete and only its last bytes
        may still be on their way; idle keep-alive connections are not waited for (a TLS
        client that never answers the close would otherwise hold the exit)."""
        if self._task is None:
            return
        flush = 0.0 if grace is None else min(grace, FLUSH_S)
        self.config.timeout_graceful_shutdown = flush
        self._server.force_exit = grace is None
        self._server.should_exit = True  # uvicorn closes the port and idle connections
        deadline = time.monotonic() + flush
        while self._server.server_state.tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # requests still writing their last bytes
        try:
            await asyncio.wait_for(asyncio.shield(self._task), CLOSE_S)
        except asyncio.TimeoutError:
            log.info("HTTP connections still open %.1fs after the last response: closed", CLOSE_S)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
