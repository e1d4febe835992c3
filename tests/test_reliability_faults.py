"""Engine faults and deadlines, with the real server in this process over a fake runner.

`FaultyRunner` wraps the real ONNX runner: armed, its next prefill or decode (the fused
graph's slot engine) or any step holding a chosen request (the paged engine) makes ONNX
Runtime itself fail (a session run with inputs of the wrong type), and it can slow every call
down so a deadline passes mid-generation. Production code is untouched; only the runner is
swapped. The paged engine is the default artifact's (`tiny_artifact`), the slot engine the
fused one's (`tiny_fused_artifact`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from contextlib import asynccontextmanager

import grpc
import numpy as np
import pytest

from proto import kvserve_pb2 as pb
from proto import kvserve_pb2_grpc as pb_grpc
from server.app import Server, load_model
from server.config import ServeConfig

pytestmark = pytest.mark.slow


class FaultyRunner:
    def __init__(self, inner) -> None:
        self.inner = inner
        self.fail_next: str | None = None  # "prefill" | "decode" (slot engine)
        self.fail_request: str | None = None  # any step holding this request (paged engine)
        self.delay = 0.0  # seconds added to every call
        self.prefills: list[int] = []  # prompts per prefill call
        self.decodes: list[float] = []  # when each decode step (paged: each step) began
        self.seen: set[str] = set()  # request ids any paged step held

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def prefill(self, cache, prompts):
        self._call("prefill")
        self.prefills.append(len(prompts))
        return self.inner.prefill(cache, prompts)

    def decode_step(self, cache, tokens):
        self.decodes.append(time.monotonic())
        self._call("decode")
        return self.inner.decode_step(cache, tokens)

    def run_chunks(self, cache, chunks):
        self.decodes.append(time.monotonic())
        ids = {chunk.request.request_id for chunk in chunks}
        self.seen |= ids
        self._call("step", fail=self.fail_request in ids)
        return self.inner.run_chunks(cache, chunks)

    def _call(self, kind: str, fail: bool = False) -> None:
        time.sleep(self.delay)
        if fail or self.fail_next == kind:
            self.fail_next = None
            # a genuine ONNX Runtime error from its C++ side: every input of the wrong type
            inner = self.inner
            session = inner.dense.sessions[0] if hasattr(inner, "dense") else inner.session
            wrong = {i.name: np.zeros((1, 1), dtype=np.int8) for i in session.get_inputs()}
            session.run(None, wrong)


@asynccontextmanager
async def serving(artifact, **overrides):
    config = ServeConfig(model=artifact, port=0, metrics_port=-1, **overrides)
    model = load_model(config)
    model.runner = FaultyRunner(model.runner)
    server = Server(config, model)
    port = await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            yield server, model.runner, pb_grpc.GenerationStub(channel)
        finally:
            await server.grpc.stop(None)
            server.engine.stop()


def stream_request(rid: str, tokens: int = 40) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        prompt=f"Question: {rid}?\nAnswer:", max_new_tokens=tokens, ignore_eos=True, request_id=rid
    )


async def outcome(call, tokens: int = 0) -> tuple[str, int]:
    """Read a stream to its end (read(), not iteration: first_token may have read already)."""
    try:
        while (message := await call.read()) is not grpc.aio.EOF:
            tokens += len(message.token_ids)
    except grpc.aio.AioRpcError as error:
        return error.code().name, tokens
    return "OK", tokens


async def first_token(call) -> int:
    """Wait for a stream's first message; its token count."""
    message = await call.read()
    assert message is not grpc.aio.EOF
    return len(message.token_ids)


def decoding_both_with_c_queued(scheduler) -> bool:
    """a and b have each had a token from a decode step of the two together (a step that
    prefills one of them decodes only the other), and c waits: every decode from now on is
    of a and b, whichever step the armed fault lands in."""
    running = list(scheduler.running)
    both = len(running) == 2 and all(len(r.output_ids) >= 2 for r in running)
    return both and bool(scheduler.waiting)


def test_decode_error_fails_only_that_steps_requests(tiny_fused_artifact, caplog):
    async def scenario():
        async with serving(tiny_fused_artifact, max_batch_size=2) as (server, runner, stub):
            runner.delay = 0.005
            a, b = (
                stub.GenerateStream(stream_request("req-a")),
                stub.GenerateStream(stream_request("req-b")),
            )
            await first_token(a)
            await first_token(b)
            c = stub.GenerateStream(stream_request("req-c", 5))  # waits: the batch is full
            while not decoding_both_with_c_queued(server.engine.scheduler):  # not a guessed sleep
                await asyncio.sleep(0.001)
            runner.fail_next = "decode"
            results = await asyncio.gather(outcome(a), outcome(b), outcome(c))
            after = await stub.Generate(stream_request("req-d", 4))
            return results, after, server.engine

    with caplog.at_level(logging.ERROR):
        results, after, engine = asyncio.run(scenario())
    assert [r[0] for r in results] == ["INTERNAL", "INTERNAL", "OK"]
    assert results[2][1] == 5 and len(after.token_ids) == 4  # the next ones are served
    failed = [r for r in caplog.records if "engine step failed" in r.getMessage()]
    assert len(failed) == 1 and "req-a" in failed[0].getMessage()
    assert "req-b" in failed[0].getMessage() and "req-c" not in failed[0].getMessage()


def test_prefill_error_fails_only_the_new_request(tiny_fused_artifact):
    async def scenario():
        async with serving(tiny_fused_artifact) as (_server, runner, stub):
            runner.delay = 0.003
            running = stub.GenerateStream(stream_request("steady", 30))
            seen = await first_token(running)
            runner.fail_next = "prefill"
            newcomer = stub.GenerateStream(stream_request("newcomer", 5))
            return await asyncio.gather(outcome(running, seen), outcome(newcomer))

    steady, newcomer = asyncio.run(scenario())
    assert steady == ("OK", 30) and newcomer[0] == "INTERNAL"


@pytest.mark.parametrize("engine", ["paged", "slots"])
def test_deadline_mid_generation_frees_the_slot(engine, tiny_artifact, tiny_fused_artifact):
    artifact = tiny_artifact if engine == "paged" else tiny_fused_artifact

    async def scenario():
        async with serving(artifact, max_batch_size=1) as (server, runner, stub):
            runner.delay = 0.01  # 40 tokens take 40 steps of >= 10 ms; the deadline is 0.15 s
            await stub.Generate(stream_request("warm", 2), timeout=5)
            runner.decodes.clear()
            start = time.monotonic()
            try:
                await stub.Generate(stream_request("slow", 40), timeout=0.15)
                code = "OK"
            except grpc.aio.AioRpcError as error:
                code = error.code().name
            failed_after = time.monotonic() - start
            scheduler = server.engine.scheduler
            while scheduler.running or scheduler.waiting:
                await asyncio.sleep(0.005)
            freed_after = time.monotonic() - start
            steps = [t - start for t in runner.decodes]
            reply = await stub.Generate(stream_request("next", 3), timeout=5)
            return code, failed_after, freed_after, steps, reply

    code, failed_after, freed_after, steps, reply = asyncio.run(scenario())
    late = sum(t > 0.15 for t in steps)
    print(
        f"\ndeadline 0.15 s: DEADLINE_EXCEEDED at {failed_after:.3f} s, slot free at "
        f"{freed_after:.3f} s; {len(steps)} decode steps, {late} begun after the deadline"
    )
    assert code == "DEADLINE_EXCEEDED"
    # freed within a few steps of the deadline, counted in steps (a busy box makes each step
    # slower, not more numerous): the request never ran its 39 decode steps
    assert late <= 3 and len(steps) < 39
    assert len(reply.token_ids) == 3


@pytest.mark.parametrize("engine", ["paged", "slots"])
def test_deadline_in_the_queue_never_reaches_the_model(engine, tiny_artifact, tiny_fused_artifact):
    artifact = tiny_artifact if engine == "paged" else tiny_fused_artifact

    async def scenario():
        async with serving(artifact, max_batch_size=1) as (_server, runner, stub):
            runner.delay = 0.01
            long = stub.GenerateStream(stream_request("long", 30))
            await first_token(long)
            prefills = len(runner.prefills)
            try:
                await stub.Generate(stream_request("queued", 5), timeout=0.1)
                code = "OK"
            except grpc.aio.AioRpcError as error:
                code = error.code().name
            await outcome(long)
            return code, len(runner.prefills) - prefills, runner.seen

    code, prefills, seen = asyncio.run(scenario())
    assert code == "DEADLINE_EXCEEDED" and prefills == 0 and "queued" not in seen


def test_a_failing_sequence_fails_alone_and_its_step_goes_on(tiny_artifact, caplog):
    """Paged engine: a step is one call for every sequence; when it fails, each chunk runs
    again alone, so only the sequence that fails is failed."""

    async def scenario():
        async with serving(tiny_artifact, max_batch_size=2) as (server, runner, stub):
            runner.delay = 0.005
            a, b = (
                stub.GenerateStream(stream_request("req-a")),
                stub.GenerateStream(stream_request("req-b")),
            )
            await first_token(a)
            seen_b = await first_token(b)
            c = stub.GenerateStream(stream_request("req-c", 5))  # waits: the batch is full
            while not decoding_both_with_c_queued(server.engine.scheduler):
                await asyncio.sleep(0.001)
            runner.fail_request = "req-a"
            results = await asyncio.gather(outcome(a), outcome(b, seen_b), outcome(c))
            after = await stub.Generate(stream_request("req-d", 4))
            return results, after

    with caplog.at_level(logging.ERROR):
        results, after = asyncio.run(scenario())
    assert [r[0] for r in results] == ["INTERNAL", "OK", "OK"]
    assert results[1][1] == 40 and results[2][1] == 5 and len(after.token_ids) == 4
    failed = [r for r in caplog.records if "engine step failed" in r.getMessage()]
    assert len(failed) == 1 and "req-a" in failed[0].getMessage()
    assert "req-b" not in failed[0].getMessage()


def test_a_failing_prompt_fails_only_the_new_request(tiny_artifact):
    async def scenario():
        async with serving(tiny_artifact) as (_server, runner, stub):
            runner.delay = 0.003
            running = stub.GenerateStream(stream_request("steady", 30))
            seen = await first_token(running)
            runner.fail_request = "newcomer"
            newcomer = stub.GenerateStream(stream_request("newcomer", 5))
            return await asyncio.gather(outcome(running, seen), outcome(newcomer))

    steady, newcomer = asyncio.run(scenario())
    assert steady == ("OK", 30) and newcomer[0] == "INTERNAL"


def test_tasks_and_threads_return_to_idle(tiny_artifact):
    async def scenario():
        async with serving(tiny_artifact, max_batch_size=8) as (_server, _runner, stub):
            await stub.Generate(stream_request("warm", 2))
            await asyncio.sleep(0.3)  # the warm-up call's own tasks wind down
            idle = len(asyncio.all_tasks()), threading.active_count()

            async def one(i: int) -> None:
                call = stub.GenerateStream(stream_request(f"t{i}", 12))
                async for _ in call:
                    if i % 2:
                        call.cancel()
                        return

            await asyncio.gather(*(one(i) for i in range(200)))
            deadline = time.monotonic() + 5
            while len(asyncio.all_tasks()) > idle[0] or threading.active_count() != idle[1]:
                now = len(asyncio.all_tasks()), threading.active_count()
                assert time.monotonic() < deadline, (idle, now)
                await asyncio.sleep(0.01)
            return idle

    tasks, threads = asyncio.run(scenario())
    print(f"\nafter 200 streams (100 cancelled): {tasks} tasks, {threads} threads, as when idle")
