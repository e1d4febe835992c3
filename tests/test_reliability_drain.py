"""Graceful drain: SIGTERM with 64 streams in flight, and the ways a drain is cut short."""

from __future__ import annotations

import asyncio
import signal
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from proto import kvserve_pb2 as pb
from proto import kvserve_pb2_grpc as pb_grpc
from server.process import ServerProcess

pytestmark = pytest.mark.slow
STREAMS = 64


def start(artifact, tmp_path, *extra: str) -> ServerProcess:
    return ServerProcess.start(artifact, tmp_path / "server.log", list(extra))


async def streams_then(
    target: str, new_tokens: int, after_first_tokens, all_started: bool = True, n: int = STREAMS
) -> list[tuple]:
    """Open n streams; once each has a token (or, not `all_started`, any one has one and
    the rest had time to queue), run `after_first_tokens(channel, calls)` beside them.

    "Any one", not stream 0: the server may admit stream 0 last, and waiting for it would
    send the signals when nearly all the work is done.

    Returns (status code name, tokens, finish_reason) per stream."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GenerationStub(channel)
        started = [asyncio.Event() for _ in range(n)]
        first = asyncio.Event()

        async def one(i: int) -> tuple:
            request = pb.GenerateRequest(
                prompt=f"Question: drain {i}?\nAnswer:", max_new_tokens=new_tokens, ignore_eos=True
            )
            tokens, finish = 0, pb.FINISH_REASON_UNSPECIFIED
            try:
                async for message in stub.GenerateStream(request, timeout=60):
                    tokens += len(message.token_ids)
                    finish = message.finish_reason or finish
                    started[i].set()
                    first.set()
            except grpc.aio.AioRpcError as error:
                started[i].set()
                first.set()
                return error.code().name, tokens, finish
            return "OK", tokens, finish

        calls = [asyncio.create_task(one(i)) for i in range(n)]
        if all_started:
            await asyncio.gather(*(e.wait() for e in started))
        else:
            await first.wait()
            await asyncio.sleep(0.05)
        await after_first_tokens(channel, calls)
        return await asyncio.gather(*calls)


def test_sigterm_drains_64_streams_in_flight(tiny_artifact, tmp_path):
    server = start(tiny_artifact, tmp_path, "--max-batch-size", "64", "--grace-seconds", "20")
    seen: dict = {}

    async def during_drain(channel, calls) -> None:
        health = health_pb2_grpc.HealthStub(channel)
        stub = pb_grpc.GenerationStub(channel)
        server.process.send_signal(signal.SIGTERM)
        seen["sigterm"] = time.monotonic()
        while (await health.Check(health_pb2.HealthCheckRequest())).status == (
            health_pb2.HealthCheckResponse.SERVING
        ):
            await asyncio.sleep(0.001)
        seen["not_serving_s"] = time.monotonic() - seen["sigterm"]
        seen["finished_by_then"] = sum(call.done() for call in calls)
        try:
            await stub.Generate(pb.GenerateRequest(prompt="late", max_new_tokens=2))
            seen["new"] = "OK"
        except grpc.aio.AioRpcError as error:
            seen["new"] = error.code().name

    results = asyncio.run(streams_then(server.target, 110, during_drain))
    code = server.process.wait(timeout=25)
    drained = time.monotonic() - seen["sigterm"]
    print(
        f"\ndrain: NOT_SERVING {seen['not_serving_s'] * 1e3:.1f} ms after SIGTERM; "
        f"64 streams finished and the process exited in {drained:.2f} s"
    )
    # NOT_SERVING at once: while most streams were still running (an order, not a time: a
    # health that waited for the drain would see them all done; the bound is a loose one)
    assert seen["finished_by_then"] < STREAMS // 2 and seen["not_serving_s"] < 2.0
    assert seen["new"] == "UNAVAILABLE"
    assert results == [("OK", 110, pb.FINISH_REASON_LENGTH)] * STREAMS
    assert code == 0
    assert "draining" in (tmp_path / "server.log").read_text()


@pytest.mark.parametrize("how", ["second_sigterm", "grace_over"])
def test_a_drain_cut_short_stops_at_once(tiny_artifact, tmp_path, how):
    grace = "30" if how == "second_sigterm" else "0.2"
    server = start(tiny_artifact, tmp_path, "--max-batch-size", "1", "--grace-seconds", grace)
    seen: dict = {}

    async def signals(_channel, _calls) -> None:
        server.process.send_signal(signal.SIGTERM)
        seen["first"] = time.monotonic()
        if how == "second_sigterm":
            await asyncio.sleep(0.1)
            server.process.send_signal(signal.SIGTERM)
            seen["second"] = time.monotonic()

    # 128 streams of 110 tokens one at a time: far more work than the signals take to land
    results = asyncio.run(streams_then(server.target, 110, signals, all_started=False, n=128))
    code = server.process.wait(timeout=10)
    stopped = time.monotonic() - seen.get("second", seen["first"])
    cut = [r for r in results if r[0] != "OK"]
    print(f"\n{how}: exited {stopped:.2f} s after the last signal; {len(cut)} of 128 streams cut")
    assert code == 0
    # stopped, not drained: most of the queue was cut (a drain to the end cuts none, and takes
    # 128 x 110 steps); the time bound is a loose one, far under the 30 s grace
    assert len(cut) > 64 and all(r[0] in ("CANCELLED", "UNAVAILABLE") for r in cut)
    assert stopped < 5.0
