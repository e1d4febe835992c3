"""Who may talk to the server: TLS (`--tls-cert/--tls-key`), mutual TLS (`--tls-client-ca`)
and bearer tokens (`--auth-token-file`), gathered from the config in one place.

Problems are found at startup, before the model loads, as one line naming the flag or file
(SecurityError; the CLI exits 2). Key material is read here and handed to gRPC; nothing
secret is ever logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from server.auth import HEALTH_METHODS, BearerAuthInterceptor, TokenFileError, TokenStore

log = logging.getLogger("kvserve.security")


class SecurityError(ValueError):
    """Bad TLS or token settings; the message names the flag or the file."""


@dataclass
class ServerSecurity:
    credentials: grpc.ServerCredentials | None = None  # None = plaintext
    tokens: TokenStore | None = None  # None = no token needed
    exempt_health: bool = False
    summary: str = "plaintext, no auth"  # for the startup log line
    interceptors: list[grpc.aio.ServerInterceptor] = field(default_factory=list)

    def reload_tokens(self) -> None:
        """SIGHUP: re-read the token file (the old tokens stay when the new file is bad)."""
        if self.tokens is not None:
            self.tokens.reload()


def load_security(config) -> ServerSecurity:
    """ServerSecurity from a ServeConfig's tls_* / auth_* fields (absent fields: off)."""
    cert, key = getattr(config, "tls_cert", None), getattr(config, "tls_key", None)
    client_ca = getattr(config, "tls_client_ca", None)
    token_file = getattr(config, "auth_token_file", None)
    exempt = bool(getattr(config, "auth_exempt_health", False))
    credentials = tls_credentials(cert, key, client_ca)
    tokens = None
    if token_file is not None:
        try:
            tokens = TokenStore(Path(token_file))
        except TokenFileError as e:
            raise SecurityError(f"--auth-token-file: {e}") from None
    interceptors = []
    if tokens is not None:
        interceptors.append(
            BearerAuthInterceptor(tokens, HEALTH_METHODS if exempt else frozenset())
        )
    parts = ["mTLS" if client_ca else "TLS" if credentials else "plaintext"]
    parts.append(f"bearer tokens ({len(tokens)})" if tokens else "no auth")
    if tokens and exempt:
        parts.append("health open")
    return ServerSecurity(credentials, tokens, exempt, ", ".join(parts), interceptors)


def tls_credentials(
    cert: Path | None, key: Path | None, client_ca: Path | None
) -> grpc.ServerCredentials | None:
    if cert is None and key is None:
        if client_ca is not None:
            raise SecurityError("--tls-client-ca needs --tls-cert and --tls-key (mTLS is TLS)")
        return None
    if cert is None or key is None:
        raise SecurityError("--tls-cert and --tls-key go together")
    chain = _read_pem("--tls-cert", cert, b"CERTIFICATE")
    private_key = _read_pem("--tls-key", key, b"PRIVATE KEY")
    roots = None if client_ca is None else _read_pem("--tls-client-ca", client_ca, b"CERTIFICATE")
    return grpc.ssl_server_credentials(
        [(private_key, chain)], root_certificates=roots, require_client_auth=roots is not None
    )


def _read_pem(flag: str, path: Path, kind: bytes) -> bytes:
    """The file's bytes, checked to be PEM of the right kind (gRPC's own error is a crash)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise SecurityError(f"{flag}: {path}: cannot read ({e.strerror or e})") from None
    if b"-----BEGIN " not in data or kind not in data:
        raise SecurityError(f"{flag}: {path}: not a PEM {kind.decode().lower()}")
    return data
