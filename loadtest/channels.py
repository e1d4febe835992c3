"""Channels to the targets: plaintext or TLS (mTLS with a client cert), plus a bearer token.

The token travels as `authorization: Bearer <token>` call metadata on every RPC, so it works
over TLS and, behind a TLS-terminating proxy, over plaintext too. It is never written to a
report (`Security.to_dict` leaves it out).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from loadtest.errors import TargetUnreachable

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Security:
    """How to reach the targets: TLS settings (paths to PEM files) and an optional token."""

    tls: bool = False  # TLS with the system's roots unless `ca` is given
    ca: Path | None = None
    cert: Path | None = None  # client certificate chain (mTLS), with `key`
    key: Path | None = None
    server_name: str | None = None  # expected name in the server's cert (default: the host)
    token: str | None = field(default=None, repr=False)

    @property
    def secure(self) -> bool:
        return self.tls or self.ca is not None or self.cert is not None

    def problem(self) -> str | None:
        """Why these settings cannot work (None when they can): one line naming the option."""
        if (self.cert is None) != (self.key is None):
            return "--tls-cert and --tls-key go together (mTLS needs both)"
        for flag, path in (
            ("--tls-ca", self.ca),
            ("--tls-cert", self.cert),
            ("--tls-key", self.key),
        ):
            if path is not None and not path.is_file():
                return f"{flag}: no such file: {path}"
        if self.server_name is not None and not self.secure:
            return "--tls-server-name needs TLS (--tls or --tls-ca)"
        if self.token is not None and (not self.token or any(c in self.token for c in "\r\n")):
            return "--auth-token: the token must be one non-empty line"
        return None

    def metadata(self) -> Metadata:
        """Call metadata for every RPC: the bearer token when one is set."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def credentials(self) -> grpc.ChannelCredentials:
        read = lambda p: None if p is None else p.read_bytes()  # noqa: E731
        return grpc.ssl_channel_credentials(read(self.ca), read(self.key), read(self.cert))

    def options(self) -> list[tuple[str, str]]:
        if self.server_name is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]

    def to_dict(self) -> dict:
        """For the report: which options were used, never the token itself."""
        return {
            "tls": self.secure,
            "ca": None if self.ca is None else str(self.ca),
            "client_cert": None if self.cert is None else str(self.cert),
            "server_name": self.server_name,
            "auth": "bearer" if self.token else None,
        }


def aio_channel(target: str, security: Security) -> grpc.aio.Channel:
    if security.secure:
        return grpc.aio.secure_channel(target, security.credentials(), security.options())
    return grpc.aio.insecure_channel(target)


def sync_channel(target: str, security: Security) -> grpc.Channel:
    if security.secure:
        return grpc.secure_channel(target, security.credentials(), security.options())
    return grpc.insecure_channel(target)


def read_token_file(path: Path) -> str:
    """The token in a file (surrounding whitespace dropped); OSError when it cannot be read."""
    return path.read_text(encoding="utf-8").strip()


async def wait_ready(
    channels: Sequence[grpc.aio.Channel], targets: Sequence[str], timeout_s: float, secure: bool
) -> None:
    """Connect to every target first, so a wrong address is one clear error, not N failures."""
    for channel, target in zip(channels, targets, strict=True):
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout_s)
        except asyncio.TimeoutError:
            hint = " (a TLS handshake failing? check --tls-ca, --tls-server-name)" if secure else ""
            raise TargetUnreachable(
                f"cannot connect to {target} within {timeout_s:g}s "
                f"(is kvserve-serve running?){hint}"
            ) from None
