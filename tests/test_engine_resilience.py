"""The engine loop survives whatever a step throws: a sampler failure, a step that raises,
a request whose sink is gone. The real scheduler, update stage and engine over the fake
runner of tests/support/engine.py."""

from __future__ import annotations

import threading

from server.kv_cache import CacheLost
from server.request import FinishReason, RequestStatus
from server.scheduler import QueueFull
from tests.support.engine import (
    break_sampling_for_seed,
    make_engine,
    make_request,
    run_to_end,
    texts,
)
from tests.support.reliability import wait_until


def test_a_sampling_failure_fails_its_step_not_the_engine(monkeypatch):
    break_sampling_for_seed(monkeypatch, 666)
    engine, sink = make_engine(), {}
    engine.submit(make_request("evil", [1], sink, seed=666))
    engine.step()
    assert sink["evil"][-1].finish_reason is FinishReason.ERROR
    assert "sampler blew up" in sink["evil"][-1].error
    assert engine.scheduler.running == []
    engine.submit(make_request("fine", [1], sink, max_new_tokens=3))
    run_to_end(engine)
    assert texts(sink["fine"]) == [2, 3, 4]
    assert [r.request_id for r in engine.scheduler.cache.rows] == ["fine"]  # "evil"'s row left


def test_engine_loop_survives_a_step_that_raises():
    sink: dict = {}
    engine = make_engine()
    scheduler, schedule, steps = engine.scheduler, engine.scheduler.schedule, []

    def exploding_once(now):
        steps.append(now)
        if len(steps) == 1:
            raise RuntimeError("step exploded")
        return schedule(now)

    def finished(rid: str):
        return lambda: sink[rid] and sink[rid][-1].finish_reason is not None

    scheduler.schedule = exploding_once
    old_cache = scheduler.cache.slots
    engine.start()
    try:
        engine.submit(make_request("victim", [1], sink))
        wait_until(finished("victim"), timeout=5, interval=0.005)
        assert sink["victim"][-1].finish_reason is FinishReason.ERROR
        assert scheduler.cache.slots is not old_cache  # the cache started over
        engine.submit(make_request("survivor", [1], sink, max_new_tokens=3))
        wait_until(finished("survivor"), timeout=5, interval=0.005)
        assert texts(sink["survivor"]) == [2, 3, 4]
    finally:
        engine.stop()


def test_a_lost_cache_fails_every_running_request_and_the_engine_starts_over():
    """A prefill whose cache growth failed half-way took the other rows' cache with it: the
    requests decoding beside it fail too (not only the prefill's), and new ones are served."""
    sink: dict = {}
    engine = make_engine()
    runner, prefill = engine.runner, engine.runner.prefill

    def losing_prefill(cache, prompts):
        if prompts == [[9, 9]]:
            raise CacheLost("growing the KV cache to 2 x 128: no room")
        return prefill(cache, prompts)

    runner.prefill = losing_prefill
    engine.submit(make_request("decoding", [1], sink, max_new_tokens=20))
    engine.step()
    engine.submit(make_request("grower", [9, 9], sink))
    engine.start()
    try:
        wait_until(lambda: sink["grower"] and sink["grower"][-1].finish_reason, timeout=5)
        wait_until(lambda: sink["decoding"][-1].finish_reason is not None, timeout=5)
        assert sink["grower"][-1].finish_reason is FinishReason.ERROR
        assert sink["decoding"][-1].finish_reason is FinishReason.ERROR
        assert "no room" in sink["decoding"][-1].error
        engine.submit(make_request("after", [1], sink, max_new_tokens=3))
        wait_until(lambda: sink["after"] and sink["after"][-1].finish_reason, timeout=5)
        assert texts(sink["after"]) == [2, 3, 4]
    finally:
        engine.stop()


def test_a_broken_sink_ends_only_its_request():
    engine, sink = make_engine(), {}
    broken = make_request("broken", [1], sink, max_new_tokens=4)
    broken.emit = lambda event: (_ for _ in ()).throw(RuntimeError("Event loop is closed"))
    engine.submit(broken)
    engine.submit(make_request("fine", [2], sink, max_new_tokens=4))
    run_to_end(engine)
    assert broken.cancelled and broken.status is RequestStatus.FINISHED
    assert texts(sink["fine"]) == [3, 4, 5, 6]


def test_cancelled_slot_is_reused_by_a_waiting_request_at_the_next_step():
    engine, sink = make_engine(max_batch_size=2), {}
    first, second, third = (make_request(r, [1], sink, max_new_tokens=20) for r in "abc")
    for r in (first, second, third):
        engine.submit(r)
    engine.step()
    scheduler = engine.scheduler
    assert [r.request_id for r in scheduler.running] == ["a", "b"] and len(scheduler.waiting) == 1
    first.cancelled = True
    stats = engine.step()  # the very next step: a leaves, c takes its slot
    assert sorted(r.request_id for r in scheduler.running) == ["b", "c"]
    assert stats.prefill_requests == 1 and FinishReason.CANCELLED in stats.finished


def test_a_burst_is_admitted_or_refused_at_one_point():
    # the bound is checked and the request queued under one lock: 200 racing threads, exactly
    # max_queue get in, the rest are refused up front (none is queued and then dropped)
    scheduler = make_engine(max_queue=50).scheduler
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def burst(first: int) -> None:
        start.wait()
        for i in range(first, first + 25):
            try:
                scheduler.add(make_request(str(i), [1], {}))
                outcomes.append("queued")
            except QueueFull:
                outcomes.append("full")

    threads = [threading.Thread(target=burst, args=(t * 25,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("queued") == 50 == len(scheduler.waiting)
    assert outcomes.count("full") == 150
