"""2000 calls at once on each front door: the server takes what its batch and queue hold and
refuses the rest with a retryable status, never CANCELLED for a call the client did not
cancel (gRPC: RESOURCE_EXHAUSTED, or UNAVAILABLE; HTTP: 429 or 503). Loopback only, bounded
in time; every call is accounted for on both sides."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import aiohttp
import grpc
import pytest

from proto import kvserve_pb2 as pb
from proto import kvserve_pb2_grpc as pb_grpc
from server.process import ServerProcess
from tests.support.reliability import counted, engine_idle, metric, wait_until

pytestmark = pytest.mark.slow
CALLS, TOKENS, BATCH, QUEUE = 2000, 16, 8, 64
RETRYABLE_GRPC = {"OK", "RESOURCE_EXHAUSTED", "UNAVAILABLE"}
RETRYABLE_HTTP = {200, 429, 503}


@pytest.fixture(scope="module")
def server(tiny_artifact, tmp_path_factory):
    log = tmp_path_factory.mktemp("burst") / "server.log"
    extra = ["--max-batch-size", str(BATCH), "--max-queue", str(QUEUE), "--log-level", "WARNING"]
    process = ServerProcess.start(tiny_artifact, log, extra, http=True)
    yield process
    assert process.stop() == 0, log.read_text()[-3000:]


async def grpc_burst(target: str) -> list[tuple[str, int]]:
    """CALLS streams at once on one connection: (status name, tokens) of each."""
    async with grpc.aio.insecure_channel(target) as channel:
        await channel.channel_ready()
        stub = pb_grpc.GenerationStub(channel)

        async def one(i: int) -> tuple[str, int]:
            request = pb.GenerateRequest(
                prompt=f"Question: burst {i}?\nAnswer:", max_new_tokens=TOKENS, ignore_eos=True
            )
            tokens = 0
            try:
                async for message in stub.GenerateStream(request, timeout=120):
                    tokens += len(message.token_ids)
            except grpc.aio.AioRpcError as error:
                return error.code().name, tokens
            return "OK", tokens

        return await asyncio.gather(*(one(i) for i in range(CALLS)))


async def http_burst(url: str) -> list[tuple[int, bool]]:
    """CALLS streamed completions at once, a connection each: (status, ended with [DONE])."""
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def one(i: int) -> tuple[int, bool]:
            body = {
                "prompt": f"Question: burst {i}?\nAnswer:",
                "max_tokens": TOKENS,
                "ignore_eos": True,
                "stream": True,
            }
            async with http.post(f"{url}/v1/completions", json=body) as reply:
                data = await reply.read()
                return reply.status, data.rstrip().endswith(b"data: [DONE]")

        return await asyncio.gather(*(one(i) for i in range(CALLS)))


def test_2000_grpc_streams_at_once_are_served_or_refused_never_cancelled(server):
    start = time.monotonic()
    results = asyncio.run(asyncio.wait_for(grpc_burst(server.target), 150))
    elapsed = time.monotonic() - start
    codes = Counter(code for code, _ in results)
    print(
        f"\n{CALLS} gRPC streams at once (batch {BATCH}, queue {QUEUE}): {dict(codes)} "
        f"in {elapsed:.1f} s"
    )
    assert set(codes) <= RETRYABLE_GRPC, codes  # no CANCELLED, no other failure
    assert codes["OK"] >= BATCH + QUEUE and codes["RESOURCE_EXHAUSTED"] > 0
    assert all(tokens == TOKENS for code, tokens in results if code == "OK")
    assert all(tokens == 0 for code, tokens in results if code != "OK")  # refused before work
    counted = {
        c: metric(server.metrics_url, "kvserve_requests_total", rpc="GenerateStream", code=c)
        for c in codes
    }
    assert counted == dict(codes)  # every call reached the service, which said so
    wait_until(lambda: engine_idle(server.metrics_url), timeout=10)


def test_2000_http_streams_at_once_are_served_or_refused_with_429(server):
    start = time.monotonic()
    results = asyncio.run(asyncio.wait_for(http_burst(server.http_url), 150))
    elapsed = time.monotonic() - start
    statuses = Counter(status for status, _ in results)
    print(
        f"\n{CALLS} HTTP streams at once (batch {BATCH}, queue {QUEUE}): {dict(statuses)} "
        f"in {elapsed:.1f} s"
    )
    assert set(statuses) <= RETRYABLE_HTTP, statuses
    assert statuses[200] >= BATCH + QUEUE and statuses[429] > 0
    assert all(done for status, done in results if status == 200)
    route = {"rpc": "/v1/completions"}
    url, name = server.metrics_url, "kvserve_requests_total"
    ok = counted(url, statuses[200], name, code="OK", **route)
    refused = counted(url, statuses[429], name, code="RESOURCE_EXHAUSTED", **route)
    assert (ok, refused) == (statuses[200], statuses[429])
    wait_until(lambda: engine_idle(server.metrics_url), timeout=10)
