"""Helpers for the reliability and security tests: certificates, metrics, polling."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from loadtest.server_metrics import fetch, parse


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # signed by another CA: must not pass mTLS
    stranger_key: Path


def tls_token_flags(certs: Certs, token_file: Path) -> list[str]:
    """kvserve-serve flags for TLS with the server cert and bearer tokens, health exempt."""
    return [
        *("--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)),
        *("--auth-token-file", str(token_file), "--auth-exempt-health", "true"),
    ]


def make_certs(directory: Path) -> Certs:
    """A throwaway CA, a server cert for localhost/127.0.0.1, a client cert, and a client
    cert from a second CA; made here with the openssl CLI (short RSA keys: test speed)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    for ca in ("ca", "other-ca"):
        run(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{ca}.key",
            "-out",
            f"{ca}.crt",
            "-days",
            "2",
            "-subj",
            f"/CN=kvserve-test-{ca}",
        )
    (d / "san.cnf").write_text("subjectAltName = DNS:localhost, IP:127.0.0.1\n")
    for name, ca, cn in (
        ("server", "ca", "localhost"),
        ("client", "ca", "test-client"),
        ("stranger", "other-ca", "stranger"),
    ):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={cn}",
        )
        ext = ["-extfile", "san.cnf"] if name == "server" else []
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            f"{ca}.crt",
            "-CAkey",
            f"{ca}.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            *ext,
        )
    return Certs(
        d / "ca.crt",
        d / "server.crt",
        d / "server.key",
        d / "client.crt",
        d / "client.key",
        d / "stranger.crt",
        d / "stranger.key",
    )


def tls_channel(
    target: str, ca: Path, cert: Path | None = None, key: Path | None = None
) -> grpc.Channel:
    read = lambda p: None if p is None else p.read_bytes()  # noqa: E731
    return grpc.secure_channel(
        target, grpc.ssl_channel_credentials(read(ca), read(key), read(cert))
    )


def metric(url: str, name: str, **labels: str) -> float:
    """One sample's value from /metrics (0 when absent); labels must match exactly."""
    return parse(fetch(url)).get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Wait until `predicate()` holds, `timeout` at most; whether it did (for a caller that then
    asserts on what it reads, so that a failure shows the values)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> float:
    """Seconds until `predicate()` held; AssertionError after `timeout`."""
    start = time.monotonic()
    if not wait_for(predicate, timeout, interval):
        raise AssertionError(f"condition not met within {timeout}s")
    return time.monotonic() - start


def counted(url: str, expected: float, name: str, timeout: float = 5.0, **labels: str) -> float:
    """`metric(url, name, **labels)` once it has reached `expected` (or after `timeout`), for
    the caller to assert equal: an HTTP call is counted as its handler ends, a moment after
    the client read its last byte, and a cancelled one when the server sees the cancel, so a
    count read at once may be short. Too many still fails the caller's equality."""
    wait_for(lambda: metric(url, name, **labels) >= expected, timeout)
    return metric(url, name, **labels)


def engine_idle(metrics_url: str) -> bool:
    """The engine's own view: no running sequence and nothing queued."""
    running = metric(metrics_url, "kvserve_requests_running")
    waiting = metric(metrics_url, "kvserve_requests_waiting")
    return running == 0 and waiting == 0
