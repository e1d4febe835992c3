"""Whole engine steps (schedule -> execute -> update -> deliver) of the fused graph's engine
(the one scheduler with whole prompts over the slot cache, server/slot_chunks.py) over a
fake runner whose "KV cache" stores the token ids themselves.

So after any sequence of admits, drops and row moves we can check that every running row's
cache holds exactly its own prompt and output, in the right row (`run_to_end` checks after
every step).
"""

from __future__ import annotations

from server.request import FinishReason
from tests.support.engine import (
    TokenEchoRunner,
    check_cache,
    make_engine,
    make_request,
    run_to_end,
    texts,
)


def test_staggered_arrivals_keep_every_row_cache_aligned():
    engine, sink = make_engine(), {}
    engine.submit(make_request("a", [3, 4, 5], sink, max_new_tokens=6))
    engine.step()
    engine.submit(make_request("b", [10], sink, max_new_tokens=2))
    engine.submit(make_request("c", [20, 21, 22, 23, 24, 25, 26], sink, max_new_tokens=4))
    engine.step()
    check_cache(engine.scheduler)
    assert [r.request_id for r in engine.scheduler.running] == ["a", "b", "c"]
    run_to_end(engine)
    assert texts(sink["a"]) == [6, 7, 8, 9, 10, 11]
    assert texts(sink["b"]) == [11, 12]
    assert texts(sink["c"]) == [27, 28, 29, 30]
    for events in sink.values():
        assert [e.finish_reason for e in events[:-1]] == [None] * (len(events) - 1)
        assert events[-1].finish_reason is FinishReason.LENGTH


def test_finished_rows_are_compacted_by_moving_survivors_into_holes():
    engine, sink = make_engine(), {}
    lengths = [1, 6, 2, 6, 6]
    for i, n in enumerate(lengths):
        engine.submit(make_request(str(i), [10 * i + 1], sink, max_new_tokens=n))
    engine.step()  # "0" finishes with its first token
    engine.step()  # its row leaves: "4" moves into row 0; "2" finishes with its second token
    engine.step()  # "2"'s row leaves: "3" moves into it
    assert [r.request_id for r in engine.scheduler.cache.rows] == ["4", "1", "3"]
    check_cache(engine.scheduler)
    run_to_end(engine)
    assert texts(sink["4"]) == [42, 43, 44, 45, 46, 47]


def test_finished_slot_is_reused_on_the_next_step():
    engine, sink = make_engine(max_batch_size=2), {}
    engine.submit(make_request("short", [1], sink, max_new_tokens=1))
    engine.submit(make_request("long", [2], sink, max_new_tokens=5))
    engine.submit(make_request("next", [30], sink, max_new_tokens=2))
    engine.step()  # prefill short+long; short finishes with its first token
    assert [r.request_id for r in engine.scheduler.running] == ["long"]
    assert len(engine.scheduler.waiting) == 1
    engine.step()  # "next" takes the freed slot at once
    assert sorted(r.request_id for r in engine.scheduler.running) == ["long", "next"]
    check_cache(engine.scheduler)
    run_to_end(engine)
    assert texts(sink["next"]) == [31, 32]


def test_cancelled_and_expired_requests_leave_at_the_next_step():
    engine, sink = make_engine(), {}
    keep = make_request("keep", [1], sink, max_new_tokens=6)
    gone = make_request("gone", [5, 6], sink, max_new_tokens=6)
    late = make_request("late", [7], sink, max_new_tokens=6)
    for r in (keep, gone, late):
        engine.submit(r)
    engine.step()
    gone.cancelled = True
    late.deadline = 0.0  # long past
    engine.step()
    assert [r.request_id for r in engine.scheduler.running] == ["keep"]
    check_cache(engine.scheduler)
    assert sink["gone"][-1].finish_reason is FinishReason.CANCELLED
    assert sink["late"][-1].finish_reason is FinishReason.DEADLINE
    run_to_end(engine)
    assert texts(sink["keep"]) == [2, 3, 4, 5, 6, 7]


def test_batch_size_and_step_budget_limit_admission_and_prompts_run_whole():
    runner, sink = TokenEchoRunner(), {}
    engine = make_engine(runner, max_batch_size=3, max_step_tokens=7)
    for i in range(5):
        engine.submit(make_request(str(i), [1, 2, 3], sink, max_new_tokens=5))
    engine.step()
    assert len(engine.scheduler.running) == 2  # a third prompt would make 9 > 7 tokens
    engine.step()  # 2 decoding + one more whole prompt; the batch is then full
    assert len(engine.scheduler.running) == 3
    run_to_end(engine)
    assert all(len(texts(sink[str(i)])) == 5 for i in range(5))
    assert max(n for kind, n in runner.calls if kind == "decode") <= 3


def test_runner_error_fails_only_that_steps_requests():
    class Flaky(TokenEchoRunner):
        def prefill(self, cache, prompts):
            if any(p[0] == 13 for p in prompts):
                raise RuntimeError("bad kernel")
            return super().prefill(cache, prompts)

    engine, sink = make_engine(Flaky()), {}
    engine.submit(make_request("ok", [1], sink, max_new_tokens=4))
    engine.step()
    engine.submit(make_request("bad", [13], sink))
    engine.step()
    assert sink["bad"][-1].finish_reason is FinishReason.ERROR
    assert "bad kernel" in sink["bad"][-1].error
    check_cache(engine.scheduler)  # the failed prefill left no row behind
    run_to_end(engine)
    assert texts(sink["ok"]) == [2, 3, 4, 5]


def test_a_failed_prefill_group_leaves_the_next_groups_rows_aligned():
    class FailsShortPrompts(TokenEchoRunner):
        def prefill(self, cache, prompts):
            if len(prompts[0]) < 100:
                raise RuntimeError("bad kernel for short prompts")
            return super().prefill(cache, prompts)

    engine, sink = make_engine(FailsShortPrompts(), max_context=256), {}
    engine.submit(make_request("long-a", list(range(1, 151)), sink))
    engine.submit(make_request("short", [1, 2], sink))
    engine.submit(make_request("long-b", list(range(1, 141)), sink))
    engine.step()  # groups: [short] fails first, then [long-b, long-a] takes rows 0 and 1
    assert sink["short"][-1].finish_reason is FinishReason.ERROR
    assert [r.request_id for r in engine.scheduler.cache.rows] == ["long-b", "long-a"]
    check_cache(engine.scheduler)
    run_to_end(engine)
    assert len(texts(sink["long-a"])) == len(texts(sink["long-b"])) == 5


def test_step_stats_count_tokens_and_latencies():
    engine, sink = make_engine(), {}
    engine.submit(make_request("a", [1, 2], sink, max_new_tokens=3))
    engine.submit(make_request("b", [1, 2, 3], sink, max_new_tokens=3))
    first = engine.step()
    assert (first.prefill_requests, first.prompt_tokens, first.generated_tokens) == (2, 5, 2)
    assert len(first.ttft_seconds) == 2 and len(first.queue_seconds) == 2
    second = engine.step()
    assert second.generated_tokens == 2 and len(second.itl_seconds) == 2
    assert second.running == 2 and second.kv_cache_bytes > 0
    third = engine.step()
    assert third.finished == [FinishReason.LENGTH, FinishReason.LENGTH]
    assert third.running == 0


def test_prompts_of_very_different_lengths_prefill_in_separate_groups():
    runner, sink = TokenEchoRunner(), {}
    engine = make_engine(runner, max_context=256)
    lengths = {"a": 16, "b": 200, "c": 18, "d": 190, "e": 17}
    for rid, n in lengths.items():
        engine.submit(make_request(rid, list(range(1, n + 1)), sink))
    engine.step()
    # one call for the short three, one for the long two: no 16-token row padded to 200
    assert [c for c in runner.calls if c[0] == "prefill"] == [("prefill", 3), ("prefill", 2)]
    assert sorted(len(r.prompt_ids) for r in engine.scheduler.cache.rows[:3]) == [16, 17, 18]
    check_cache(engine.scheduler)
    run_to_end(engine)
    assert sum(len(e.token_ids) for rid in lengths for e in sink[rid]) == 5 * len(lengths)


def test_a_prompt_over_the_step_budget_runs_whole_and_alone():
    runner, sink = TokenEchoRunner(), {}
    engine = make_engine(runner, max_step_tokens=8, max_context=256)
    engine.submit(make_request("early", [1, 2], sink, max_new_tokens=6))
    engine.step()
    engine.submit(make_request("long", list(range(1, 21)), sink, max_new_tokens=2))
    engine.submit(make_request("after", [3, 4], sink, max_new_tokens=2))
    engine.step()  # "early" decodes; "long" (20 > 7 tokens left) runs whole, "after" waits
    assert [r.request_id for r in engine.scheduler.running] == ["early", "long"]
    assert runner.calls[-2:] == [("decode", 1), ("prefill", 1)]
    engine.step()
    assert "after" in [r.request_id for r in engine.scheduler.running]
    run_to_end(engine)
    assert texts(sink["long"]) == [21, 22] and texts(sink["after"]) == [5, 6]
