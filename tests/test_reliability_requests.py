"""Bad input, generated input, cancellation, crashing clients and memory, against a real
server process (the session's tiny model).

Figures (printed; run with -s to see them) go into the issue's closing note.
"""

from __future__ import annotations

import asyncio
import math
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from artifact import read_manifest
from proto import kvserve_pb2 as pb
from proto import kvserve_pb2_grpc as pb_grpc
from tests.support.reliability import engine_idle, metric, wait_for, wait_until
from tests.support.servers import serving

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
NEW_TOKENS_LIMIT = 1024  # the server's default --max-new-tokens-limit


@pytest.fixture(scope="module")
def server(tiny_artifact, tmp_path_factory):
    log = tmp_path_factory.mktemp("reliability") / "server.log"
    extra = ["--max-batch-size", "8", "--max-queue", "512", "--default-max-new-tokens", "4"]
    with serving(tiny_artifact, log, extra) as process:
        yield process


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.target) as channel:
        yield pb_grpc.GenerationStub(channel)


@pytest.fixture(scope="module")
def arch(tiny_artifact):
    return read_manifest(tiny_artifact).architecture


# -- bad requests: each one INVALID_ARGUMENT naming the field ---------------------------------
G, A = pb.GenerateRequest, pb.AnswerRequest
BAD = [  # (rpc, request builder over the model's architecture, field named first)
    ("Generate", lambda a: G(prompt=""), "prompt"),
    ("Generate", lambda a: G(prompt=" \n\t "), "prompt"),
    ("Generate", lambda a: G(prompt="word " * (a.max_positions + 8)), "prompt"),  # > context
    ("Generate", lambda a: G(prompt="x" * 64_001), "prompt"),  # over 64,000 characters
    ("Generate", lambda a: G(prompt="hi", max_new_tokens=NEW_TOKENS_LIMIT + 1), "max_new_tokens"),
    ("Generate", lambda a: G(prompt="hi", max_new_tokens=2**32 - 1), "max_new_tokens"),
    ("Generate", lambda a: G(prompt="hi", max_new_tokens=0), "max_new_tokens"),
    ("Generate", lambda a: G(prompt="hi", temperature=-0.5), "temperature"),
    ("Generate", lambda a: G(prompt="hi", temperature=math.nan), "temperature"),
    ("Generate", lambda a: G(prompt="hi", temperature=math.inf), "temperature"),
    ("Generate", lambda a: G(prompt="hi", temperature=-math.inf), "temperature"),
    ("Generate", lambda a: G(prompt="hi", top_p=1.5), "top_p"),
    ("Generate", lambda a: G(prompt="hi", top_p=-0.1), "top_p"),
    ("Generate", lambda a: G(prompt="hi", top_p=math.nan), "top_p"),
    ("Generate", lambda a: G(prompt="hi", top_p=0.0), "top_p"),
    ("Generate", lambda a: G(prompt="hi", top_k=a.vocab_size + 1), "top_k"),
    ("Generate", lambda a: G(prompt="hi", top_k=2**32 - 1), "top_k"),  # -1 sent as uint32
    ("Generate", lambda a: G(prompt="hi", repetition_penalty=-1.0), "repetition_penalty"),
    ("Generate", lambda a: G(prompt="hi", repetition_penalty=0.0), "repetition_penalty"),
    ("Generate", lambda a: G(prompt="hi", repetition_penalty=math.nan), "repetition_penalty"),
    ("Generate", lambda a: G(prompt="hi", repetition_penalty=math.inf), "repetition_penalty"),
    ("Generate", lambda a: G(prompt="hi", stop=["s"] * 9), "stop"),  # too many
    ("Generate", lambda a: G(prompt="hi", stop=["s" * 65]), "stop"),  # too long
    ("Generate", lambda a: G(prompt="hi", stop=[""]), "stop"),
    ("Generate", lambda a: G(prompt="hi", request_id="bad id!"), "request_id"),
    ("Generate", lambda a: G(prompt="hi", request_id="r" * 129), "request_id"),
    ("Generate", lambda a: G(prompt="hi", request_id="ünïcode"), "request_id"),
    ("GenerateStream", lambda a: G(prompt=""), "prompt"),
    ("GenerateStream", lambda a: G(prompt="hi", temperature=math.nan), "temperature"),
    ("Answer", lambda a: A(question=""), "question"),
    ("Answer", lambda a: A(question="   "), "question"),
    ("Answer", lambda a: A(question="why?", context="c" * 64_001), "context"),
    ("Answer", lambda a: A(question="why?", context="word " * (a.max_positions + 8)), "context"),
    ("Answer", lambda a: A(question="why?", top_p=2.0), "top_p"),
]


def call(stub, rpc: str, request, timeout: float = 30.0):
    """One RPC; a stream is read to its end. Returns the status code."""
    try:
        if rpc == "GenerateStream":
            for _ in stub.GenerateStream(request, timeout=timeout):
                pass
        else:
            getattr(stub, rpc)(request, timeout=timeout)
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize(("rpc", "build", "field"), BAD, ids=[f"{r}-{f}" for r, _, f in BAD])
def test_bad_request_is_invalid_argument_naming_the_field(stub, arch, rpc, build, field):
    code, details = call(stub, rpc, build(arch))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.startswith(f"{field}:"), details


def test_a_message_over_the_transport_limit_is_refused_by_grpc(stub):
    # grpc's own 4 MiB receive limit answers before the service sees it (RESOURCE_EXHAUSTED)
    code, _ = call(stub, "Generate", G(prompt="x" * (5 << 20)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_server_serves_normally_after_bad_requests(server, stub, arch):
    for rpc, build, _ in BAD:
        call(stub, rpc, build(arch))
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    reply = stub.Generate(G(prompt="Question: hi?\nAnswer:", max_new_tokens=6, ignore_eos=True))
    assert len(reply.token_ids) == 6 and reply.finish_reason == pb.FINISH_REASON_LENGTH


# -- 1000 generated requests: only OK or INVALID_ARGUMENT -------------------------------------
# (allow_subnormal=False: ONNX Runtime sessions made in this process, with denormals-as-zero,
# leave the FPU flushing them, and hypothesis refuses to draw subnormals then.)
# Each request starts valid; up to three of its fields are then drawn from anything the wire
# can carry (NaN, inf, huge, empty, overlong, odd unicode), so both outcomes are common.
line = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=1, max_size=60)
EDGES = st.sampled_from([1e-40, -1e-40, 1e-30, 3.4e38, -0.0])  # subnormal, tiny, huge
VALID = {
    "text": line.filter(str.strip),
    "max_new_tokens": st.integers(1, 6),
    "temperature": st.one_of(st.just(0.0), st.floats(0.0625, 2, width=32, allow_subnormal=False)),
    "top_k": st.integers(0, 300),
    "top_p": st.floats(0.0625, 1, width=32, allow_subnormal=False),  # not exclude_min: FTZ
    "repetition_penalty": st.one_of(
        st.just(1.0), st.floats(0.5, 2, width=32, allow_subnormal=False)
    ),
    "stop": st.lists(st.text(min_size=1, max_size=8), max_size=3),
    "seed": st.one_of(st.none(), st.integers(0, 2**64 - 1)),
    "request_id": st.one_of(st.just(""), st.from_regex(r"[A-Za-z0-9._:\-]{1,128}", fullmatch=True)),
    "ignore_eos": st.booleans(),
}
WILD = {
    "text": st.one_of(st.text(max_size=80), st.sampled_from(["", "  \n", "\x00", "word " * 200])),
    "max_new_tokens": st.integers(1025, 2**32 - 1),  # over the limit (valid ones are above)
    "temperature": st.one_of(st.floats(width=32, allow_subnormal=False), EDGES),
    "top_k": st.integers(0, 2**32 - 1),
    "top_p": st.one_of(st.floats(width=32, allow_subnormal=False), EDGES),
    "repetition_penalty": st.one_of(st.floats(width=32, allow_subnormal=False), EDGES),
    "stop": st.lists(st.text(max_size=70), max_size=10),
    "seed": st.integers(0, 2**64 - 1),
    "request_id": st.text(max_size=140),
    "ignore_eos": st.booleans(),
}
KNOBS = [k for k in VALID if k != "text"]


@st.composite
def requests(draw):
    rpc = draw(st.sampled_from(["Generate", "GenerateStream", "Answer"]))
    wild = draw(st.sets(st.sampled_from([*KNOBS, "text"]), max_size=3))
    values = {k: draw((WILD if k in wild else VALID)[k]) for k in KNOBS}
    if values["seed"] is None:
        del values["seed"]
    text = draw((WILD if "text" in wild else VALID)["text"])
    if rpc == "Answer":
        return rpc, A(question=text, context=draw(st.one_of(st.just(""), WILD["text"])), **values)
    return rpc, G(prompt=text, **values)


def test_generated_requests_get_only_ok_or_invalid_argument(server, stub):
    codes: Counter = Counter()

    @settings(
        max_examples=1000,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(requests())
    def one(rpc_and_request):
        rpc, request = rpc_and_request
        code, details = call(stub, rpc, request)
        codes[code.name] += 1
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), (code, details)

    start = time.monotonic()
    one()
    print(f"\n1000 generated requests: {dict(codes)} in {time.monotonic() - start:.1f}s")
    assert sum(codes.values()) >= 1000 and codes["OK"] > 100 and codes["INVALID_ARGUMENT"] > 100
    assert server.process.poll() is None
    assert stub.Generate(G(prompt="still alive?", max_new_tokens=3, ignore_eos=True)).token_ids


# -- cancellation: half of 200 streams, mid-generation ----------------------------------------
async def half_cancelled(target: str, n: int, new_tokens: int) -> list[tuple[str, int]]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GenerationStub(channel)

        async def one(i: int) -> tuple[str, int]:
            request = G(
                prompt=f"Question: stream {i}?\nAnswer:", max_new_tokens=new_tokens, ignore_eos=True
            )
            stream, tokens = stub.GenerateStream(request), 0
            async for message in stream:
                tokens += len(message.token_ids)
                if i % 2 == 0 and tokens >= 2:
                    stream.cancel()  # explicit: an abandoned aio call is never collected
                    return "cancelled", tokens
            return "finished", tokens

        return await asyncio.gather(*(one(i) for i in range(n)))


def test_half_of_200_streams_cancelled_mid_generation(server):
    url = server.metrics_url

    def count(code: str) -> float:
        return metric(url, "kvserve_requests_total", rpc="GenerateStream", code=code)

    before = count("OK"), count("CANCELLED")
    start = time.monotonic()
    results = asyncio.run(half_cancelled(server.target, 200, new_tokens=48))
    elapsed = time.monotonic() - start
    idle_after = wait_until(lambda: engine_idle(url), timeout=5)
    finished = [tokens for kind, tokens in results if kind == "finished"]
    cancelled = [tokens for kind, tokens in results if kind == "cancelled"]
    print(
        f"\n200 streams, 100 cancelled: {elapsed:.2f}s; engine idle {idle_after * 1e3:.0f} ms later"
    )
    assert len(finished) == len(cancelled) == 100
    assert all(tokens == 48 for tokens in finished)  # the others were never disturbed
    assert all(2 <= tokens < 48 for tokens in cancelled)
    # the server counts each as it was: every stream once, OK or CANCELLED. A cancel that
    # lands after the server sent its last token (the tiny model is fast; seen: 39 of 100
    # on a busy machine) is an OK stream there, so only the sum is exact
    # a cancel is counted when the server sees it
    wait_for(lambda: count("OK") + count("CANCELLED") >= sum(before) + 200, timeout=5)
    ok, gone = count("OK") - before[0], count("CANCELLED") - before[1]
    assert ok + gone == 200 and ok >= 100 and gone > 0, (ok, gone)


# -- crashing clients: 100 streams whose processes are killed with SIGKILL --------------------
def test_killed_clients_free_every_slot(server):
    url = server.metrics_url
    tokens_before = metric(url, "kvserve_generated_tokens_total")
    admitted_before = metric(url, "kvserve_queue_wait_seconds_count")
    clients = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.stream_clients", server.target, "25"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for client in clients:  # 100 connections up; no request sent yet
            assert client.stdout.readline().strip() == "CONNECTED"
        for client in clients:
            client.stdin.write("GO\n")
            client.stdin.flush()
        for client in clients:  # each has sent its 25 streams
            assert client.stdout.readline().strip() == "READY"

        def accepted() -> float:  # admitted to the batch so far, plus queued
            admitted = metric(url, "kvserve_queue_wait_seconds_count") - admitted_before
            return admitted + metric(url, "kvserve_requests_waiting")

        wait_until(lambda: accepted() >= 100, timeout=10)
        busy_at_kill = in_engine(url)  # streams still running or queued: killed mid-stream
    finally:
        for client in clients:
            client.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    for client in clients:
        client.wait()
    freed = wait_until(lambda: engine_idle(url), timeout=10)
    generated = metric(url, "kvserve_generated_tokens_total") - tokens_before
    print(
        f"\n100 killed clients: every slot free {(time.monotonic() - killed) * 1e3:.0f} ms "
        f"after SIGKILL ({busy_at_kill:.0f} in the engine then); {generated:.0f} of ~11600 "
        "tokens generated"
    )
    assert busy_at_kill > 0 and freed < 10
    assert generated < 0.75 * 100 * 116  # cut short: ~116 tokens each if run to the context
    assert server.process.poll() is None
    with grpc.insecure_channel(server.target) as channel:
        reply = pb_grpc.GenerationStub(channel).Generate(G(prompt="after", max_new_tokens=3))
    assert reply.usage.completion_tokens >= 1


def in_engine(url: str) -> float:
    return metric(url, "kvserve_requests_running") + metric(url, "kvserve_requests_waiting")


# -- memory and threads over many requests with cancellations ---------------------------------
async def churn(target: str, n: int, concurrency: int) -> Counter:
    """n requests, concurrency at a time: a third unary, a third full streams, a third
    streams cancelled after their first token."""
    outcomes: Counter = Counter()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GenerationStub(channel)
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            request = G(
                prompt=f"Question: churn {i % 50}?\nAnswer:", max_new_tokens=6, ignore_eos=True
            )
            async with gate:
                if i % 3 == 0:
                    await stub.Generate(request)
                    outcomes["unary"] += 1
                    return
                stream = stub.GenerateStream(request)
                async for _ in stream:
                    if i % 3 == 1:
                        stream.cancel()
                        outcomes["cancelled"] += 1
                        return
                outcomes["stream"] += 1

        await asyncio.gather(*(one(i) for i in range(n)))
    return outcomes


def test_memory_and_threads_flat_over_requests_with_cancellations(server):
    asyncio.run(churn(server.target, 600, concurrency=32))  # warm-up: allocator, caches
    wait_until(lambda: engine_idle(server.metrics_url), timeout=5)
    time.sleep(0.2)
    warm = server.status()
    outcomes = asyncio.run(churn(server.target, 1500, concurrency=32))
    wait_until(lambda: engine_idle(server.metrics_url), timeout=5)
    time.sleep(0.2)
    # a pool thread that served the last calls may take a moment to go back: wait for the
    # count, rather than reading it once (a thread that never goes back still fails)
    wait_for(lambda: server.status().threads <= warm.threads, timeout=5)
    after = server.status()
    growth = after.rss_bytes / warm.rss_bytes - 1
    print(
        f"\n1500 requests {dict(outcomes)}: RSS {warm.rss_bytes / 2**20:.1f} -> "
        f"{after.rss_bytes / 2**20:.1f} MiB ({growth:+.2%}); threads {warm.threads} -> "
        f"{after.threads}"
    )
    assert sum(outcomes.values()) == 1500
    assert growth < 0.05
    assert after.threads == warm.threads
