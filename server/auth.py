"""Bearer-token authentication: a grpc.aio server interceptor over a reloadable token file.

Every RPC must carry `authorization: Bearer <token>` with one of the file's tokens, or it
ends with UNAUTHENTICATED before any servicer code runs. Health checks can be left open for
load-balancer and kubelet probes (`--auth-exempt-health`). Tokens are compared as SHA-256
digests with `hmac.compare_digest`, against every token (no early exit), so neither the
content nor the length of a valid token leaks through timing. No token ever reaches a log.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

log = logging.getLogger("kvserve.auth")
HEALTH_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
SCHEME = "bearer"


class TokenFileError(ValueError):
    """The token file cannot be used; the message names the file, never a token."""


def read_tokens(path: Path) -> tuple[str, ...]:
    """One token per line; blank lines and `#` comments are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TokenFileError(f"{path}: cannot read the token file ({type(e).__name__})") from None
    tokens = tuple(t for t in (line.strip() for line in text.splitlines()) if t and t[0] != "#")
    if not tokens:
        raise TokenFileError(f"{path}: no tokens (one per line; # starts a comment)")
    if any(any(c.isspace() for c in t) for t in tokens):
        raise TokenFileError(f"{path}: a token contains whitespace (one token per line)")
    return tokens


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenStore:
    """The accepted tokens (as digests), reloaded from their file on demand (SIGHUP)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._digests = tuple(_digest(t) for t in read_tokens(path))

    def __len__(self) -> int:
        return len(self._digests)

    def reload(self) -> bool:
        """Re-read the file; on failure keep the current tokens (a typo must not lock out all)."""
        try:
            digests = tuple(_digest(t) for t in read_tokens(self.path))
        except TokenFileError as e:
            log.error("token reload failed, keeping the %d current tokens: %s", len(self), e)
            return False
        self._digests = digests  # one assignment: a concurrent check sees old or new, whole
        log.info("reloaded %d tokens from %s", len(digests), self.path)
        return True

    def accepts(self, token: str) -> bool:
        given = _digest(token)
        matched = False
        for known in self._digests:  # no early exit: the time does not say which one matched
            matched |= hmac.compare_digest(given, known)
        return matched


def bearer_token(metadata) -> str | None:
    """The token of an `authorization: Bearer <token>` header, or None."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == SCHEME and token.strip():
                return token.strip()
    return None


class BearerAuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: TokenStore, exempt: frozenset[str] = frozenset()) -> None:
        self.tokens = tokens
        self.exempt = exempt
        # (method, problem) of each refused call: the server counts and access-logs it there,
        # since a refused call never reaches the service that counts the others
        self.on_reject: Callable[[str, str], None] | None = None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method in self.exempt:
            return handler
        token = bearer_token(details.invocation_metadata)
        if token is not None and self.tokens.accepts(token):
            return handler
        problem = "missing bearer token" if token is None else "invalid bearer token"
        log.info("unauthenticated call to %s: %s", details.method, problem)
        if self.on_reject is not None:
            self.on_reject(details.method, problem)
        return _rejecting(handler, f"{problem} (send 'authorization: Bearer <token>')")


def _rejecting(handler: grpc.RpcMethodHandler, details: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that ends the call with UNAUTHENTICATED."""
    code = grpc.StatusCode.UNAUTHENTICATED

    async def unary(_request, context):
        await context.abort(code, details)

    async def streaming(_request, context):
        await context.abort(code, details)
        yield  # never reached; makes this an async generator like the real handler

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming)
    return grpc.unary_unary_rpc_method_handler(unary)
