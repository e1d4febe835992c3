"""A bug inside an RPC handler is reported as INTERNAL and counted as an error, never OK."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from server.metrics import Metrics
from server.service import GenerationService


class FakeContext:
    code: grpc.StatusCode | None = None
    message = ""

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        self.code, self.message = code, message
        raise grpc.aio.AbortError()


def test_unexpected_exception_is_internal_and_counted() -> None:
    metrics = Metrics()
    service = GenerationService(None, None, metrics)  # type: ignore[arg-type]
    context = FakeContext()

    async def handler() -> None:
        async with service._rpc("Generate", context):
            raise KeyError("secret detail")

    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(handler())
    assert context.code is grpc.StatusCode.INTERNAL
    assert "secret detail" not in context.message  # the cause goes to the log, not the client
    labels = {"rpc": "Generate", "code": "INTERNAL"}
    assert metrics.registry.get_sample_value("kvserve_requests_total", labels) == 1
    ok = {"rpc": "Generate", "code": "OK"}
    assert metrics.registry.get_sample_value("kvserve_requests_total", ok) is None
