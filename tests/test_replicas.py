"""Two real replicas on loopback, as a client-side load balanced deployment runs them.

- the load tester's round-robin reaches both, as each replica's own /metrics shows;
- the README's gRPC client (round_robin over an address list) spreads over both;
- a replica stopped mid-run (SIGTERM: drain) finishes what it accepted: every request is
  answered in full or gets an explicit gRPC error, and a client that follows the health
  protocol and retries refusals (the README's) sees no error at all.
"""

from __future__ import annotations

import math
import re
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from loadtest import LoadConfig, run_load_sync
from loadtest.record import RequestRecord
from proto import kvserve_pb2 as pb
from proto import kvserve_pb2_grpc as pb_grpc
from server.process import ServerProcess
from tests.support.reliability import metric

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--max-batch-size", "8", "--threads", "1", "--grace-seconds", "20"]


def start_replicas(artifact: Path, logs: Path, names: list[str]) -> list[ServerProcess]:
    """Start replicas side by side (loading overlaps); none left running if one fails."""
    with ThreadPoolExecutor(len(names)) as pool:
        futures = [
            pool.submit(ServerProcess.start, artifact, logs / f"{n}.log", FLAGS) for n in names
        ]
    started = [f.result() for f in futures if f.exception() is None]
    if len(started) < len(names):
        for server in started:
            server.stop()
        next(f for f in futures if f.exception() is not None).result()  # raises its error
    return started


@pytest.fixture(scope="module")
def replicas(tiny_artifact, tmp_path_factory):
    logs = tmp_path_factory.mktemp("replicas")
    servers = start_replicas(tiny_artifact, logs, ["a", "b"])
    yield servers
    for server in servers:
        server.stop()


def ok_streams(server: ServerProcess, rpc: str = "GenerateStream") -> float:
    """The replica's own count of successful RPCs (kvserve_requests_total{rpc, code="OK"})."""
    return metric(server.metrics_url, "kvserve_requests_total", rpc=rpc, code="OK")


def readme_client():
    """The README's client code ("Several replicas"), run as the README shows it."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Several replicas", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace["balanced_channel"]


def test_load_test_round_robin_reaches_both_replicas(replicas):
    before = [ok_streams(r) for r in replicas]
    config = LoadConfig(
        targets=tuple(r.target for r in replicas),
        concurrency=4,
        requests=24,
        max_new_tokens=8,
        ignore_eos=True,
        progress=False,
        html=False,
    )
    result = run_load_sync(config)
    assert Counter(r.status for r in result.records) == {"OK": 24}
    sent = Counter(r.target for r in result.records)
    for replica, was in zip(replicas, before, strict=True):
        assert sent[replica.target] == 12  # request i goes to target i mod 2
        assert ok_streams(replica) - was == 12  # ... and that replica says it served them


def test_readme_round_robin_channel_spreads_over_replicas(replicas):
    balanced_channel = readme_client()
    before = [ok_streams(r, "Generate") for r in replicas]
    target = "ipv4:" + ",".join(r.target for r in replicas)
    with balanced_channel(target) as channel:
        stub = pb_grpc.GenerationStub(channel)
        request = pb.GenerateRequest(prompt="Question: hi\nAnswer:", max_new_tokens=4)
        for _ in range(16):
            stub.Generate(request, timeout=30)
    served = [ok_streams(r, "Generate") - was for r, was in zip(replicas, before, strict=True)]
    assert sum(served) == 16 and min(served) >= 4, served


def request_seconds(server: ServerProcess, tokens: int) -> float:
    """One `tokens`-token Generate on `server`, alone: the median of three, in seconds."""
    prompt = "Question: how long?\nAnswer:"
    request = pb.GenerateRequest(prompt=prompt, max_new_tokens=tokens, ignore_eos=True)
    times = []
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.GenerationStub(channel)
        for _ in range(3):
            start = time.perf_counter()
            stub.Generate(request, timeout=30)
            times.append(time.perf_counter() - start)
    return sorted(times)[1]


def test_sigterm_mid_run_loses_no_request(replicas):
    """Open loop over both; replica b gets SIGTERM at a moment it has a request in flight.
    That request must finish in full; later ones to it get UNAVAILABLE."""
    a, b = replicas
    # b must have requests in flight, on a fast machine or a slow one: with one request's time
    # here D, b's requests go D/4 apart, and one counts as in flight once it was due D/4 ago
    # (sent: send lag is far below that) and is not back. The run lasts 1 s at least: time
    # for b to act on the signal and refuse the requests that follow.
    tokens = 96
    seconds = request_seconds(b, tokens)
    rate, sent_slack = 8.0 / seconds, seconds / 4
    n = max(80, math.ceil(rate))
    print(f"\n{tokens} tokens alone: {seconds * 1e3:.1f} ms; {n} requests at {rate:.0f} req/s")
    done: set[int] = set()
    stop_at: list[float] = []  # when b got SIGTERM, on the records' clock

    def on_record(record: RequestRecord) -> None:
        done.add(record.index)
        now = record.end_s
        # constant arrivals: request i is sent at i / rate, to target i mod 2 (odd: b)
        sent_to_b = range(1, int((now - sent_slack) * rate) + 1, 2)
        if not stop_at and record.index >= 8 and any(i not in done for i in sent_to_b):
            b.process.send_signal(signal.SIGTERM)
            stop_at.append(now)

    config = LoadConfig(
        targets=(a.target, b.target),
        rate=rate,
        arrival="constant",
        requests=n,
        max_new_tokens=tokens,
        ignore_eos=True,
        timeout_s=30.0,
        progress=False,
        html=False,
    )
    result = run_load_sync(config, on_record=on_record)
    assert stop_at, "b never had a request in flight: nothing to drain"
    assert b.process.wait(30) == 0 and "draining" in b.log_path.read_text()
    records = result.records
    assert sorted(r.index for r in records) == list(range(n))  # every request accounted for
    statuses = Counter(r.status for r in records)
    assert set(statuses) <= {"OK", "UNAVAILABLE"}, statuses  # explicit, retryable errors only
    for r in records:
        if r.ok:  # an answer is a whole answer
            assert r.output_tokens == tokens and r.finish_reason == "LENGTH", r
    assert all(r.ok for r in records if r.target == a.target)
    (t_stop,) = stop_at
    on_b = [r for r in records if r.target == b.target]
    # in flight at the signal: answered in full (the drain let it finish)
    assert any(r.ok and r.start_s < t_stop < r.end_s for r in on_b)
    # refused: only after the signal (the refusal came back after it was sent; a request sent
    # a moment before may still have been on its way, however slow the machine); one the
    # replica had accepted is never refused (UNAVAILABLE comes only from the door, above)
    refused = [r for r in on_b if not r.ok]
    assert refused and all(r.end_s > t_stop for r in refused)
    assert statuses["UNAVAILABLE"] == len(refused)


def test_readme_client_rides_through_a_drain_without_errors(replicas, tiny_artifact, tmp_path):
    """Health checking moves the client off a draining replica, and the retry policy covers
    the race (a request that reached it just as it started refusing)."""
    a = replicas[0]
    (c,) = start_replicas(tiny_artifact, tmp_path, ["c"])
    balanced_channel = readme_client()
    errors: list[str] = []
    answered: list[int] = []  # list.append is atomic across threads
    stop = threading.Event()

    def client_loop(stub) -> None:
        request = pb.GenerateRequest(prompt="Question: hi\nAnswer:", max_new_tokens=16)
        while not stop.is_set():
            try:
                stub.Generate(request, timeout=30)
                answered.append(1)
            except grpc.RpcError as e:
                errors.append(f"{e.code().name}: {e.details()}")

    try:
        with balanced_channel(f"ipv4:{a.target},{c.target}") as channel:
            stub = pb_grpc.GenerationStub(channel)
            loops = [threading.Thread(target=client_loop, args=(stub,)) for _ in range(4)]
            for t in loops:
                t.start()
            time.sleep(1.0)
            served_by_c = ok_streams(c, "Generate")
            c.process.send_signal(signal.SIGTERM)
            time.sleep(1.5)
            stop.set()
            for t in loops:
                t.join(30)
        assert c.process.wait(30) == 0
    finally:
        stop.set()
        c.stop()
    assert served_by_c > 0 and len(answered) > served_by_c
    assert errors == []
