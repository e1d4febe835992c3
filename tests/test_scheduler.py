"""The scheduler as pure policy: plans from hand-built requests, no runner, no sampling.

Where a test needs rows, it appends them to a tiny host-memory slot cache by hand, as the
runner would after a prefill.
"""

from __future__ import annotations

import pytest

from server.request import FinishReason, Request, RequestStatus
from server.scheduler import QueueFull, Scheduler, prefill_groups
from tests.support.engine import make_request, scheduler_config, token_cache

NOW = 1000.0


def scheduler_with(**options) -> Scheduler:
    config = scheduler_config(**options)
    return Scheduler(config, token_cache(config.max_batch_size))


def prefilled(scheduler: Scheduler, requests: list[Request]) -> None:
    """What the runner and the update stage would do: the rows appended, the requests placed."""
    scheduler.cache.reserve(scheduler.cache.size + len(requests), 64)
    scheduler.cache.append([len(r.prompt_ids) for r in requests])
    scheduler.end_step(requests)


def start(scheduler: Scheduler, *requests: Request) -> None:
    """Queue, admit and prefill these requests (one step's worth)."""
    for request in requests:
        scheduler.add(request)
    plan = scheduler.schedule(NOW)
    prefilled(scheduler, plan.admitted)


def test_waiting_queue_is_bounded():
    scheduler, sink = scheduler_with(max_queue=2), {}
    scheduler.add(make_request("1", [1], sink))
    scheduler.add(make_request("2", [1], sink))
    with pytest.raises(QueueFull):
        scheduler.add(make_request("3", [1], sink))


def test_admitted_requests_run_and_the_running_rows_decode():
    scheduler, sink = scheduler_with(), {}
    a, b = make_request("a", [1, 2], sink), make_request("b", [3], sink)
    start(scheduler, a, b)
    c = make_request("c", [4, 5, 6], sink)
    scheduler.add(c)
    plan = scheduler.schedule(NOW + 1)
    assert plan.decode == (b, a)  # rows in prefill order: shortest prompt first
    assert plan.prefill_groups == ((c,),) and plan.dropped == ()
    assert c.status is RequestStatus.RUNNING and c.scheduled_at == NOW + 1
    assert scheduler.has_work() and not scheduler.waiting  # c counts as work while prefilling


def test_batch_size_and_token_budget_limit_admission():
    scheduler, sink = scheduler_with(max_batch_size=3, max_batch_tokens=20), {}
    for i in range(5):
        scheduler.add(make_request(str(i), [1, 2, 3], sink, max_new_tokens=5))  # 8 tokens each
    plan = scheduler.schedule(NOW)
    assert [r.request_id for r in plan.admitted] == ["0", "1"]  # 3 would need 24 > 20 tokens
    prefilled(scheduler, plan.admitted)
    assert scheduler.schedule(NOW).prefill_groups == ()  # the budget is still spent
    scheduler.end_step([])
    scheduler.running[0].status = RequestStatus.FINISHED
    scheduler.end_step([])
    assert [r.request_id for r in scheduler.schedule(NOW).admitted] == ["2"]


def test_a_lone_request_over_the_token_budget_still_runs():
    scheduler, sink = scheduler_with(max_batch_tokens=10), {}
    scheduler.add(make_request("big", [1] * 8, sink, max_new_tokens=50))
    scheduler.add(make_request("next", [1], sink, max_new_tokens=5))
    assert [r.request_id for r in scheduler.schedule(NOW).admitted] == ["big"]


def test_cancelled_and_expired_requests_are_dropped_before_any_work():
    scheduler, sink = scheduler_with(), {}
    keep, gone, late = (make_request(r, [1], sink) for r in ("keep", "gone", "late"))
    start(scheduler, keep, gone)
    queued_late = make_request("queued-late", [1], sink)
    queued_late.deadline = NOW - 1
    scheduler.add(queued_late)
    scheduler.add(late)
    gone.cancelled = True
    plan = scheduler.schedule(NOW)
    assert plan.dropped == ((queued_late, FinishReason.DEADLINE), (gone, FinishReason.CANCELLED))
    assert plan.decode == (keep,) and plan.admitted == [late]
    assert scheduler.running == [keep] and scheduler.cache.size == 1  # its row left at once


def test_a_dropped_row_is_given_to_a_waiting_request_in_the_same_step():
    scheduler, sink = scheduler_with(max_batch_size=2), {}
    a, b, c = (make_request(r, [1], sink) for r in "abc")
    start(scheduler, a, b, c)
    assert scheduler.running == [a, b] and list(scheduler.waiting) == [c]
    a.cancelled = True
    plan = scheduler.schedule(NOW)
    assert plan.decode == (b,) and plan.admitted == [c]


def test_prefilled_rows_join_after_the_decoding_rows_and_finished_rows_leave():
    scheduler, sink = scheduler_with(), {}
    requests = [make_request(str(i), [i + 1] * (i + 1), sink) for i in range(4)]
    start(scheduler, *requests)
    new = make_request("new", [9], sink)
    scheduler.add(new)
    plan = scheduler.schedule(NOW)
    requests[0].status = RequestStatus.FINISHED  # finished by the update stage
    prefilled(scheduler, plan.admitted)
    # row 0 left: the last row ("new") moved into it, the others stayed put
    assert [r.request_id for r in scheduler.running] == ["new", "1", "2", "3"]
    assert scheduler.cache.lengths.tolist() == [1, 2, 3, 4]


def test_a_request_whose_prefill_failed_never_takes_a_row():
    scheduler, sink = scheduler_with(), {}
    ok, bad = make_request("ok", [1], sink), make_request("bad", [2] * 100, sink)
    for request in (ok, bad):
        scheduler.add(request)
    plan = scheduler.schedule(NOW)
    assert plan.prefill_groups == ((ok,), (bad,))
    bad.status = RequestStatus.FINISHED  # failed by the update stage
    prefilled(scheduler, [ok])
    assert scheduler.running == [ok] and scheduler.cache.size == 1


def test_abandon_all_hands_back_every_request_and_takes_a_fresh_cache():
    scheduler, sink = scheduler_with(max_batch_size=1), {}
    first, second = make_request("1", [1], sink), make_request("2", [1], sink)
    start(scheduler, first, second)
    fresh = token_cache()
    assert scheduler.abandon_all(fresh) == [first, second]
    assert scheduler.cache is fresh and not scheduler.has_work()


def test_prompts_are_grouped_so_padding_stays_small():
    sink: dict = {}
    lengths = {"a": 16, "b": 200, "c": 18, "d": 190, "e": 17}
    requests = [make_request(rid, [1] * n, sink) for rid, n in lengths.items()]
    groups = prefill_groups(requests)
    assert [[r.request_id for r in g] for g in groups] == [["a", "e", "c"], ["d", "b"]]


def test_a_step_prefills_at_most_its_prefill_budget_and_the_rest_follow():
    scheduler, sink = scheduler_with(max_prefill_tokens=7), {}
    start(scheduler, make_request("running", [1], sink))
    for i, size in enumerate((3, 4, 2, 9)):
        scheduler.add(make_request(str(i), [1] * size, sink))
    plan = scheduler.schedule(NOW)
    assert [r.request_id for r in plan.admitted] == ["0", "1"]  # 3 + 4; 2 more would be 9 > 7
    assert [r.request_id for r in plan.decode] == ["running"]  # decoding goes on meanwhile
    prefilled(scheduler, plan.admitted)
    plan = scheduler.schedule(NOW)
    assert [r.request_id for r in plan.admitted] == ["2"]  # FIFO: 9 does not jump ahead
    prefilled(scheduler, plan.admitted)
    assert [r.request_id for r in scheduler.schedule(NOW).admitted] == ["3"]  # alone, over 7


def test_no_prefill_budget_admits_every_prompt_that_fits_at_once():
    scheduler, sink = scheduler_with(), {}
    for i in range(4):
        scheduler.add(make_request(str(i), [1] * 100, sink))
    assert len(scheduler.schedule(NOW).admitted) == 4
