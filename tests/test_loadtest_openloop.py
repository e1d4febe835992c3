"""Open loop and worker processes against the fake server: the schedule is kept (rate,
Poisson gaps, no coordinated omission against a slow server), warmup stays out of the
figures, and two worker processes sustain 750 req/s without lagging.

Timing bars hold on a shared 2-core machine because what is checked is the client's own
send times against its own schedule, not absolute latencies. The two runs that need the
client's speed are retried when it reports it fell behind, and give no verdict (a skip that
says why) only when other jobs held the CPUs while it lagged.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import pytest

from loadtest.config import LoadConfig
from loadtest.run import LoadResult, run_load_sync
from loadtest.specs import parse_schedule
from tests.support.fake_server import TOKENS, FakeServer
from tests.support.machine import OtherJobs


def open_config(target: str, tmp_path: Path, **kw) -> LoadConfig:
    settings = dict(requests=None, max_new_tokens=TOKENS, out_dir=tmp_path, progress=False)
    return LoadConfig(targets=(target,), **{**settings, **kw})


def watched_run(
    config: LoadConfig, fake: FakeServer, attempts: int
) -> tuple[LoadResult, str | None]:
    """Run until the client does not say it fell behind (`attempts` at most): the last result,
    and why it gives no verdict when it still lagged while other jobs held the CPUs (None
    otherwise: a client that lags on a machine of its own fails)."""
    for _ in range(attempts):
        with OtherJobs(fake.process.pid) as others:
            result = run_load_sync(config)
        if not result.warnings:
            return result, None
    return result, others.excuse()


def test_poisson_send_rate_within_3_percent_over_2000_requests(fake_server, tmp_path):
    # 400 req/s: a rate the client keeps on a busy 2-core machine (the capacity test below
    # is the one about speed); one retry when the client itself says it fell behind
    config = open_config(
        fake_server.target, tmp_path, rate=400.0, requests=2000, rpc="unary", seed=1
    )
    result, excuse = watched_run(config, fake_server, attempts=2)
    if excuse:
        pytest.skip(f"the client fell behind twice: {excuse}")
    f = result.figures
    gaps = np.diff(np.sort([r.scheduled_s for r in result.records]))  # the schedule kept
    print(f"send rate {f.send_rate:.1f} req/s (asked 400), lag {f.send_lag.scaled(1e3)}")
    assert f.requests == 2000 and f.status_counts == {"OK": 2000}
    assert f.send_rate == pytest.approx(400.0, rel=0.03)
    assert f.offered_rate == pytest.approx(400.0, rel=0.01)
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(1.0, abs=0.1)  # Poisson: CV 1
    assert f.send_lag.p50 < 0.005, f.send_lag


def test_no_coordinated_omission_against_a_slow_server(tmp_path):
    """The server serves one call at a time, 10 ms each (~100 req/s). Asked for 200 req/s,
    the open loop still sends 200 req/s and sees the queue grow; a closed loop on the same
    server sends only as fast as it is answered and reports a healthy 10-20 ms."""
    with FakeServer("--serial-ms", "10") as slow:
        config = open_config(
            slow.target, tmp_path, rate=200.0, requests=300, rpc="unary", arrival="constant"
        )
        result = run_load_sync(config)
        closed = run_load_sync(dataclasses.replace(config, rate=None, concurrency=2, requests=60))
    f = result.figures
    e2e = [r.e2e_s for r in result.records]
    c = closed.figures
    print(
        f"open: sent {f.send_rate:.1f} req/s (lag p99 {f.send_lag.p99 * 1e3:.0f} ms), "
        f"e2e p50 {f.e2e.p50 * 1e3:.1f} ms; "
        f"closed: {c.request_throughput:.1f} req/s, {c.e2e.p50 * 1e3:.1f} ms"
    )
    assert f.status_counts == {"OK": 300}
    # the schedule was kept (loosely: the 3% accuracy is the Poisson test's job; here the
    # point is sending well past what the server answers). Alone it sends 199.9 req/s; late
    # in the whole suite on the 2-core CI box 178 and 157 were seen (the sender shares the
    # cores with the fake server): 140 is still 1.4x the ~100 a closed loop could send
    assert 140 < f.send_rate <= 200.0 * 1.03
    # a sender that waited for replies would fall 1.5 s behind by the end (300 sent at the
    # ~100 req/s answered, not 200); a busy box's late sends stay well under half that
    assert f.send_lag.p99 < 0.75, f.send_lag
    assert f.request_throughput < 130  # ... though the server answered ~100 req/s
    assert np.mean(e2e[-30:]) > 5 * np.mean(e2e[:30])  # the queue grew: latency shows it
    assert f.e2e.p50 > 0.2 and max(result.series.in_flight_max) > 50
    assert c.e2e.p50 < 0.1 and c.request_throughput < 130  # the closed loop hides the queue
    assert f.e2e.p50 > 5 * c.e2e.p50


@pytest.fixture
def clock_at_6000_s(monkeypatch):
    """perf_counter as on a machine up 100 minutes. Far from 0, the difference of two clock
    readings rounds by ~1e-12 s either way: a check sitting on a schedule instant would fail
    there every run (it did), so this test runs there on every machine."""
    real = time.perf_counter
    zero = real()
    monkeypatch.setattr(time, "perf_counter", lambda: real() - zero + 6000.0)


def test_open_loop_warmup_and_schedule(fake_server, tmp_path, clock_at_6000_s):
    before = fake_server.calls()
    config = open_config(
        fake_server.target,
        tmp_path,
        schedule=parse_schedule("100:0.3s,200:0.3s"),
        arrival="constant",
        warmup=10,
    )
    result = run_load_sync(config)
    assert [r.index for r in result.records] == list(range(90))  # 30 + 60
    assert sorted(r.index for r in result.warmup_records) == list(range(-10, 0))
    # scheduled before the measured start and sent before it (not necessarily before 0: the
    # last one is due 10 ms before it, and a busy box may send it a little late)
    assert all(r.scheduled_s < 0 for r in result.warmup_records)
    assert max(r.start_s for r in result.warmup_records) <= min(r.start_s for r in result.records)
    starts = np.array([r.scheduled_s for r in result.records])
    # constant arrivals: every 10 ms for 0.3 s, then every 5 ms; in 5 ms ticks, exactly
    ticks = np.rint(starts / 0.005)
    assert np.abs(starts - ticks * 0.005).max() < 1e-6
    assert ticks.astype(int).tolist() == [*range(0, 60, 2), *range(60, 120)]
    # counted per phase with the bin edges half a gap away from any send time
    assert np.histogram(starts, bins=[-0.005, 0.295, 0.5975])[0].tolist() == [30, 60]
    assert result.figures.status_counts == {"OK": 90}
    assert fake_server.calls() - before == 100


def test_closed_loop_over_two_worker_processes(fake_server, tmp_path):
    seen = []
    config = open_config(fake_server.target, tmp_path, requests=20, concurrency=4, workers=2)
    result = run_load_sync(config, on_record=seen.append)
    assert [r.index for r in result.records] == list(range(20))
    assert {r.worker for r in result.records} == {0, 1}
    assert sorted(r.index for r in seen) == list(range(20))
    assert result.figures.status_counts == {"OK": 20}
    assert all(r.output_tokens == TOKENS for r in result.records)
    assert len(result.workers) == 2 and all(w.busy_s > 0 for w in result.workers)


def test_two_workers_sustain_750_requests_per_second(fake_server, tmp_path):
    config = open_config(
        fake_server.target, tmp_path, rate=750.0, requests=2250, workers=2, rpc="unary"
    )
    result, excuse = watched_run(config, fake_server, attempts=3)
    if excuse:
        pytest.skip(f"the client fell behind 3 times: {excuse}")
    f = result.figures
    cpu = ", ".join(f"{w.cpu_share:.0%}" for w in result.workers)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"capacity: sent {f.send_rate:.0f} req/s, done {f.request_throughput:.0f} req/s, "
        f"lag p99 {f.send_lag.p99 * 1e3:.2f} ms, worker CPU {cpu}, load avg {load}"
    )
    assert result.warnings == []
    assert f.status_counts == {"OK": 2250}
    assert f.send_rate >= 750 * 0.97
    assert {r.worker for r in result.records} == {0, 1}
