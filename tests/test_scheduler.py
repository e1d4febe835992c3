"""The token-budget scheduler over paged blocks: plans, chunked prefill, preemption by
recompute and prefix caching, driven through the real update stage and engine over a fake
runner whose "KV cache" holds the token ids (tests/support/engine.py)."""

from __future__ import annotations

import pytest

from server.engine import deliver
from server.request import FinishReason, RequestStatus
from server.scheduler import QueueFull
from tests.support.engine import (
    TokenPagedCache,
    make_request,
    paged_engine,
    run_paged_to_end,
    texts,
)

NOW = 1000.0


def finish(engine, plan) -> None:
    """The rest of an engine step, for a plan a test took from `schedule` itself."""
    output = engine.execute(engine.runner, plan, engine.scheduler.cache)
    deliver(engine.updater.update(plan, output).events)
    engine.scheduler.finish_step(plan, output)


def echo(prompt: list[int], n: int) -> list[int]:
    """What the echo runner answers: last + 1, + 2, ... (mod 50, never 0)."""
    out, last = [], prompt[-1]
    for _ in range(n):
        last = (last + 1) % 50 or 1
        out.append(last)
    return out


def test_waiting_queue_is_bounded():
    engine, sink = paged_engine(max_queue=1), {}
    engine.submit(make_request("a", [1], sink))
    with pytest.raises(QueueFull):
        engine.submit(make_request("b", [1], sink))


def test_decoding_sequences_get_their_token_before_a_long_prompt_is_chunked():
    engine, sink = paged_engine(max_step_tokens=8), {}
    short = make_request("short", [1, 2], sink, max_new_tokens=6)
    engine.submit(short)
    engine.step()  # short prefilled, its first token out
    long = make_request("long", list(range(1, 21)), sink, max_new_tokens=2)
    engine.submit(long)
    plans = []
    for _ in range(3):
        plan = engine.scheduler.schedule(NOW)
        plans.append([(c.request.request_id, c.start, c.length, c.sample) for c in plan.chunks])
        finish(engine, plan)
    # every step: short's one token first, then as much of long's prompt as the budget holds
    assert plans == [
        [("short", 2, 1, True), ("long", 0, 7, False)],
        [("short", 3, 1, True), ("long", 7, 7, False)],
        [("short", 4, 1, True), ("long", 14, 6, True)],
    ]


def test_outputs_are_the_same_whatever_the_budget_and_memory():
    prompts = {f"r{i}": list(range(1 + i, 9 + 3 * i)) for i in range(8)}

    def run(**options) -> dict[str, list[int]]:
        cache = options.pop("cache", None)
        engine, sink = paged_engine(cache, **options), {}
        for rid, prompt in prompts.items():
            engine.submit(make_request(rid, prompt, sink, max_new_tokens=7))
        run_paged_to_end(engine)
        assert all(e[-1].finish_reason is FinishReason.LENGTH for e in sink.values())
        return {rid: texts(events) for rid, events in sink.items()}

    expected = {rid: echo(p, 7) for rid, p in prompts.items()}
    assert run() == expected
    assert run(max_step_tokens=5) == expected  # every prompt chunked
    # 14 blocks of 4 tokens: far fewer than 8 sequences of up to 36 tokens need at once
    tight = TokenPagedCache(num_blocks=14, block_size=4)
    engine_free = run(cache=tight)
    assert engine_free == expected
    assert tight.blocks.used_blocks == 0


def test_a_sequence_that_runs_out_of_blocks_preempts_the_newest_which_recomputes():
    cache = TokenPagedCache(num_blocks=4, block_size=4, prefix_caching=False)
    engine, sink = paged_engine(cache, max_step_tokens=64), {}
    # each holds up to 3 + 9 = 12 tokens (3 blocks) before its last: 6 blocks for both
    first = make_request("first", [1, 2, 3], sink, max_new_tokens=10)
    second = make_request("second", [7, 8, 9], sink, max_new_tokens=10)
    engine.submit(first)
    engine.submit(second)
    run_paged_to_end(engine)
    assert engine.scheduler.preempted >= 1
    assert texts(sink["first"]) == echo([1, 2, 3], 10)
    assert texts(sink["second"]) == echo([7, 8, 9], 10)
    assert cache.blocks.used_blocks == 0


def test_admission_waits_for_the_whole_prompts_blocks():
    cache = TokenPagedCache(num_blocks=4, block_size=4)
    engine, sink = paged_engine(cache), {}
    engine.submit(make_request("big", list(range(1, 14)), sink, max_new_tokens=2))  # 4 blocks
    engine.submit(make_request("next", [5], sink, max_new_tokens=1))
    plan = engine.scheduler.schedule(NOW)
    assert [c.request.request_id for c in plan.chunks] == ["big"]
    assert [r.request_id for r in engine.scheduler.waiting] == ["next"]


def test_a_shared_prefix_is_computed_once():
    cache = TokenPagedCache(num_blocks=32, block_size=4)
    engine, sink = paged_engine(cache), {}
    template = list(range(10, 20))  # 2 full blocks and a half
    engine.submit(make_request("a", [*template, 1], sink, max_new_tokens=2))
    run_paged_to_end(engine)
    engine.submit(make_request("b", [*template, 2, 3], sink, max_new_tokens=2))
    plan = engine.scheduler.schedule(NOW)
    (chunk,) = plan.chunks
    assert chunk.start == 8 and chunk.length == 4  # blocks 0-1 came from the cache
    assert cache.blocks.hit_tokens == 8
    finish(engine, plan)
    run_paged_to_end(engine)
    assert texts(sink["b"]) == echo([3], 2)


def test_cancelled_and_expired_sequences_free_their_blocks_at_the_next_step():
    cache = TokenPagedCache(num_blocks=16, block_size=4, prefix_caching=False)
    engine, sink = paged_engine(cache), {}
    gone = make_request("gone", list(range(1, 10)), sink, max_new_tokens=20)
    late = make_request("late", list(range(1, 10)), sink, max_new_tokens=20)
    engine.submit(gone)
    engine.submit(late)
    engine.step()
    assert cache.blocks.used_blocks == 6
    gone.cancelled, late.deadline = True, 0.0
    engine.step()
    assert cache.blocks.used_blocks == 0 and not engine.scheduler.running
    assert sink["gone"][-1].finish_reason is FinishReason.CANCELLED
    assert sink["late"][-1].finish_reason is FinishReason.DEADLINE


def test_a_failed_call_fails_its_requests_keeps_nothing_and_the_engine_goes_on():
    engine, sink = paged_engine(), {}
    real = engine.runner.run_chunks
    engine.runner.run_chunks = lambda cache, chunks: 1 / 0
    engine.submit(make_request("doomed", [1, 2, 3], sink))
    engine.step()
    assert sink["doomed"][-1].finish_reason is FinishReason.ERROR
    assert engine.scheduler.cache.blocks.used_blocks == 0
    engine.runner.run_chunks = real
    engine.submit(make_request("fine", [4, 5], sink, max_new_tokens=3))
    run_paged_to_end(engine)
    assert texts(sink["fine"]) == echo([4, 5], 3)


def test_batch_size_caps_the_running_sequences():
    engine, sink = paged_engine(max_batch_size=2), {}
    for rid in "abc":
        engine.submit(make_request(rid, [1, 2], sink))
    plan = engine.scheduler.schedule(NOW)
    assert len(plan.chunks) == 2 and len(engine.scheduler.waiting) == 1
    assert {r.status for r in plan.joined} == {RequestStatus.RUNNING}


def test_a_sequence_whose_chunk_fails_fails_alone_and_its_step_goes_on():
    engine, sink = paged_engine(), {}
    real = engine.runner.run_chunks

    def poisoned(cache, chunks):
        if any(c.request.request_id == "poison" for c in chunks):
            raise FloatingPointError("bad sequence")
        return real(cache, chunks)

    engine.runner.run_chunks = poisoned
    for rid, prompt in (("a", [1, 2]), ("poison", [3, 4, 5]), ("b", [6])):
        engine.submit(make_request(rid, prompt, sink, max_new_tokens=4))
    run_paged_to_end(engine)
    assert sink["poison"][-1].finish_reason is FinishReason.ERROR
    assert texts(sink["a"]) == echo([1, 2], 4) and texts(sink["b"]) == echo([6], 4)
    assert engine.scheduler.cache.blocks.used_blocks == 0
