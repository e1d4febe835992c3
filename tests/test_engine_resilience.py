"""The engine loop survives whatever a step throws: a sampler failure, a step that raises,
a request whose sink is gone. Scheduler and engine over the fake runner of test_scheduler."""

from __future__ import annotations

import threading

from reliability_support import wait_until
from test_scheduler import (
    TokenEchoRunner,
    make_request,
    run_to_end,
    scheduler_config,
    texts,
)

import server.scheduler
from server.engine import Engine
from server.request import FinishReason, RequestStatus
from server.scheduler import QueueFull, Scheduler


def test_a_sampling_failure_fails_its_step_not_the_scheduler(monkeypatch):
    real = server.scheduler.select_tokens

    def picky(logits, params, seen, uniforms):
        if any(p.seed == 666 for p in params):
            raise FloatingPointError("sampler blew up")
        return real(logits, params, seen, uniforms)

    monkeypatch.setattr(server.scheduler, "select_tokens", picky)
    runner, sink = TokenEchoRunner(), {}
    scheduler = Scheduler(runner, scheduler_config())
    scheduler.add(make_request("evil", [1], sink, seed=666))
    scheduler.step()
    assert sink["evil"][-1].finish_reason is FinishReason.ERROR
    assert "sampler blew up" in sink["evil"][-1].error
    assert scheduler.running == [] and scheduler.cache.size == 0
    scheduler.add(make_request("fine", [1], sink, max_new_tokens=3))
    run_to_end(scheduler)
    assert texts(sink["fine"]) == [2, 3, 4]


def test_engine_loop_survives_a_step_that_raises():
    class Exploding(Scheduler):
        def __init__(self, *args) -> None:
            super().__init__(*args)
            self.explode = True

        def step(self):
            if self.explode:
                self.explode = False
                raise RuntimeError("step exploded")
            return super().step()

    sink: dict = {}
    scheduler = Exploding(TokenEchoRunner(), scheduler_config())
    engine = Engine(scheduler)
    engine.start()
    try:
        engine.submit(make_request("victim", [1], sink))
        wait_until(lambda: sink["victim"] and sink["victim"][-1].finish_reason is not None,
                   timeout=5, interval=0.005)  # fmt: skip
        assert sink["victim"][-1].finish_reason is FinishReason.ERROR
        engine.submit(make_request("survivor", [1], sink, max_new_tokens=3))
        wait_until(lambda: sink["survivor"] and sink["survivor"][-1].finish_reason is not None,
                   timeout=5, interval=0.005)  # fmt: skip
        assert texts(sink["survivor"]) == [2, 3, 4]
    finally:
        engine.stop()


def test_a_broken_sink_ends_only_its_request():
    runner, sink = TokenEchoRunner(), {}
    scheduler = Scheduler(runner, scheduler_config())
    broken = make_request("broken", [1], sink, max_new_tokens=4)
    broken.emit = lambda event: (_ for _ in ()).throw(RuntimeError("Event loop is closed"))
    scheduler.add(broken)
    scheduler.add(make_request("fine", [2], sink, max_new_tokens=4))
    run_to_end(scheduler)
    assert broken.cancelled and broken.status is RequestStatus.FINISHED
    assert texts(sink["fine"]) == [3, 4, 5, 6]


def test_cancelled_slot_is_reused_by_a_waiting_request_at_the_next_step():
    runner, sink = TokenEchoRunner(), {}
    scheduler = Scheduler(runner, scheduler_config(max_batch_size=2))
    first, second, third = (make_request(r, [1], sink, max_new_tokens=20) for r in "abc")
    for r in (first, second, third):
        scheduler.add(r)
    scheduler.step()
    assert [r.request_id for r in scheduler.running] == ["a", "b"] and len(scheduler.waiting) == 1
    first.cancelled = True
    stats = scheduler.step()  # the very next step: a leaves, c takes its slot
    assert sorted(r.request_id for r in scheduler.running) == ["b", "c"]
    assert stats.prefill_requests == 1 and FinishReason.CANCELLED in stats.finished


def test_a_burst_is_admitted_or_refused_at_one_point():
    # the bound is checked and the request queued under one lock: 200 racing threads, exactly
    # max_queue get in, the rest are refused up front (none is queued and then dropped)
    scheduler = Scheduler(TokenEchoRunner(), scheduler_config(max_queue=50))
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
