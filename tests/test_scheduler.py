"""The scheduler with a fake runner whose "KV cache" stores the token ids themselves.

So after any sequence of admits, filters and concatenations we can check that every running
row's cache holds exactly its own prompt and output, right-aligned, in the right row.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from server.config import ServeConfig
from server.kv_cache import SlotCache
from server.request import FinishReason, Request, StreamEvent
from server.sampling import SamplingParams
from server.scheduler import QueueFull, Scheduler, SchedulerConfig

VOCAB = 50
EOS = 0
SERVE = ServeConfig(model=Path("."))


def scheduler_config(**changes) -> SchedulerConfig:
    """The server's batch and queue limits (ServeConfig's defaults), with this test's changes."""
    return replace(SERVE.scheduler_config(eos_token_id=EOS, max_context=64), **changes)


class TokenEchoRunner:
    """Next token = (last token + 1) % VOCAB, never EOS. Its "KV cache" holds token ids."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def new_cache(self, max_rows: int) -> SlotCache:
        return SlotCache(num_layers=1, heads=1, head_dim=1, max_rows=max_rows, max_length=256)

    def prefill(self, cache: SlotCache, prompts: list[list[int]]) -> np.ndarray:
        start = cache.size
        cache.reserve(start + len(prompts), max(len(p) for p in prompts))
        key = cache.layers[0][0]  # [rows, 1, capacity, 1]
        for row, prompt in enumerate(prompts, start):
            key[row, 0, : len(prompt), 0] = prompt
            cache.lengths[row] = len(prompt)
        cache.size = start + len(prompts)
        self.calls.append(("prefill", len(prompts)))
        return _logits(np.array([p[-1] for p in prompts]))

    def decode(self, cache: SlotCache, tokens: np.ndarray) -> np.ndarray:
        n = len(tokens)
        assert n <= cache.size
        cache.reserve(n, int(cache.lengths[:n].max()) + 1)
        key = cache.layers[0][0]
        key[np.arange(n), 0, cache.lengths[:n], 0] = tokens
        cache.lengths[:n] += 1
        self.calls.append(("decode", n))
        return _logits(tokens)


def _logits(last: np.ndarray) -> np.ndarray:
    nxt = (last + 1) % VOCAB
    nxt = np.where(nxt == EOS, 1, nxt)
    logits = np.zeros((len(last), VOCAB), dtype=np.float32)
    logits[np.arange(len(last)), nxt] = 10.0
    return logits


def make_request(rid: str, prompt: list[int], sink: dict, **params) -> Request:
    events: list[StreamEvent] = sink.setdefault(rid, [])
    return Request(
        request_id=rid,
        prompt_ids=prompt,
        params=SamplingParams(**{"max_new_tokens": 5, **params}),
        decode=lambda ids: "".join(chr(65 + i % 26) for i in ids),
        emit=events.append,
    )


def check_cache(scheduler: Scheduler) -> None:
    """Row i of the cache = running[i]'s prompt + outputs except the last (not yet fed)."""
    cache = scheduler.cache
    assert cache.size == len(scheduler.running)
    key = cache.layers[0][0]
    for row, request in enumerate(scheduler.running):
        expected = request.prompt_ids + request.output_ids[:-1]
        assert cache.lengths[row] == len(expected)
        assert key[row, 0, : len(expected), 0].astype(int).tolist() == expected


def run_to_end(scheduler: Scheduler, max_steps: int = 100) -> None:
    for _ in range(max_steps):
        if not scheduler.has_work():
            return
        scheduler.step()
        if scheduler.running:
            check_cache(scheduler)
    raise AssertionError("scheduler did not finish")


def texts(events: list[StreamEvent]) -> list[int]:
    return [t for e in events for t in e.token_ids]


def test_staggered_arrivals_keep_every_row_cache_aligned():
    runner, sink = TokenEchoRunner(), {}
    scheduler = Scheduler(runner, scheduler_config())
    scheduler.add(make_request("a", [3, 4, 5], sink, max_new_tokens=6))
    scheduler.step()
    scheduler.add(make_request("b", [10], sink, max_new_tokens=2))
    scheduler.add(make_request("c", [20, 21, 22, 23, 24, 25, 26], sink, max_new_tokens=4))
    scheduler.step()
    check_cache(scheduler)
    assert [r.request_id for r in scheduler.running] == ["a", "b", "c"]
    run_to_end(scheduler)
    assert texts(sink["a"]) == [6, 7, 8, 9, 10, 11]
    assert texts(sink["b"]) == [11, 12]
    assert texts(sink["c"]) == [27, 28, 29, 30]
    for events in sink.values():
        assert [e.finish_reason for e in events[:-1]] == [None] * (len(events) - 1)
        assert events[-1].finish_reason is FinishReason.LENGTH


def test_finished_rows_are_compacted_by_moving_survivors_into_holes():
    runner, sink = TokenEchoRunner(), {}
    scheduler = Scheduler(runner, scheduler_config())
    lengths = [1, 6, 2, 6, 6]
    for i, n in enumerate(lengths):
        scheduler.add(make_request(str(i), [10 * i + 1], sink, max_new_tokens=n))
    scheduler.step()
    scheduler.step()  # "0" finished after one token, "2" after two
    assert [r.request_id for r in scheduler.running] == ["4", "1", "3"]  # "4" filled row 0
    check_cache(scheduler)
    run_to_end(scheduler)
    assert texts(sink["4"]) == [42, 43, 44, 45, 46, 47]


def test_finished_slot_is_reused_on_the_next_step():
    runner, sink = TokenEchoRunner(), {}
    config = scheduler_config(max_batch_size=2)
    scheduler = Scheduler(runner, config)
    scheduler.add(make_request("short", [1], sink, max_new_tokens=1))
    scheduler.add(make_request("long", [2], sink, max_new_tokens=5))
    scheduler.add(make_request("next", [30], sink, max_new_tokens=2))
    scheduler.step()  # prefill short+long; short finishes with its first token
    assert [r.request_id for r in scheduler.running] == ["long"]
    assert len(scheduler.waiting) == 1
    scheduler.step()  # "next" takes the freed slot at once
    assert sorted(r.request_id for r in scheduler.running) == ["long", "next"]
    check_cache(scheduler)
    run_to_end(scheduler)
    assert texts(sink["next"]) == [31, 32]


def test_eos_stops_unless_ignored():
    runner, sink = TokenEchoRunner(), {}
    scheduler = Scheduler(runner, scheduler_config(eos_token_id=3))
    scheduler.add(make_request("stop", [1], sink, max_new_tokens=10))
    scheduler.add(make_request("go", [1], sink, max_new_tokens=4, ignore_eos=True))
    run_to_end(scheduler)
    assert texts(sink["stop"]) == [2, 3]
    assert sink["stop"][-1].finish_reason is FinishReason.STOP
    assert sink["stop"][-1].completion_tokens == 2
    assert texts(sink["go"]) == [2, 3, 4, 5]
    assert sink["go"][-1].finish_reason is FinishReason.LENGTH


def test_stop_string_ends_generation_and_is_not_returned():
    runner, sink = TokenEchoRunner(), {}
    scheduler = Scheduler(runner, scheduler_config())
    # tokens 1,2,3,4,... decode to "BCDE..."; stop on "DE"
    scheduler.add(make_request("s", [0], sink, max_new_tokens=10, stop=("DE",)))
    run_to_end(scheduler)
    assert "".join(e.text for e in sink["s"]) == "BC"
    assert sink["s"][-1].finish_reason is FinishReason.STOP


def test_context_window_ends_with_length():
    runner, sink = TokenEchoRunner(), {}
    scheduler = Scheduler(runner, scheduler_config(max_context=8))
    scheduler.add(make_request("w", [1, 2, 3, 4, 5], sink, max_new_tokens=50))
    run_to_end(scheduler)
    assert len(texts(sink["w"])) == 3
    assert sink["w"][-1].finish_reason is FinishReason.LENGTH


def test_cancelled_and_expired_requests_leave_at_the_next_step():
    runner, sink = TokenEchoRunner(), {}
    scheduler = Scheduler(runner, scheduler_config())
    keep = make_request("keep", [1], sink, max_new_tokens=6)
    gone = make_request("gone", [5, 6], sink, max_new_tokens=6)
    late = make_request("late", [7], sink, max_new_tokens=6)
    for r in (keep, gone, late):
        scheduler.add(r)
    scheduler.step()
    gone.cancelled = True
    late.deadline = 0.0  # long past
    scheduler.step()
    assert [r.request_id for r in scheduler.running] == ["keep"]
    check_cache(scheduler)
    assert sink["gone"][-1].finish_reason is FinishReason.CANCELLED
    assert sink["late"][-1].finish_reason is FinishReason.DEADLINE
    run_to_end(scheduler)
    assert texts(sink["keep"]) == [2, 3, 4, 5, 6, 7]


def test_waiting_queue_is_bounded():
    scheduler = Scheduler(TokenEchoRunner(), scheduler_config(max_queue=2))
    sink: dict = {}
    scheduler.add(make_request("1", [1], sink))
    scheduler.add(make_request("2", [1], sink))
    with pytest.raises(QueueFull):
        scheduler.add(make_request("3", [1], sink))


def test_batch_size_and_token_budget_limit_admission():
    runner, sink = TokenEchoRunner(), {}
    config = scheduler_config(max_batch_size=3, max_batch_tokens=20)
    scheduler = Scheduler(runner, config)
    for i in range(5):
        scheduler.add(make_request(str(i), [1, 2, 3], sink, max_new_tokens=5))  # 8 tokens each
    scheduler.step()
    assert len(scheduler.running) == 2  # 3 would need 24 > 20 tokens
    run_to_end(scheduler)
    assert all(len(texts(sink[str(i)])) == 5 for i in range(5))
    assert max(n for kind, n in runner.calls if kind == "decode") <= 3


def test_runner_error_fails_only_that_steps_requests():
    class Flaky(TokenEchoRunner):
        def prefill(self, cache, prompts):
            if any(p[0] == 13 for p in prompts):
                raise RuntimeError("bad kernel")
            return super().prefill(cache, prompts)

    runner, sink = Flaky(), {}
    scheduler = Scheduler(runner, scheduler_config())
    scheduler.add(make_request("ok", [1], sink, max_new_tokens=4))
    scheduler.step()
    scheduler.add(make_request("bad", [13], sink))
    scheduler.step()
    assert sink["bad"][-1].finish_reason is FinishReason.ERROR
    assert "bad kernel" in sink["bad"][-1].error
    run_to_end(scheduler)
    assert texts(sink["ok"]) == [2, 3, 4, 5]


def test_step_stats_count_tokens_and_latencies():
    runner, sink = TokenEchoRunner(), {}
    scheduler = Scheduler(runner, scheduler_config())
    scheduler.add(make_request("a", [1, 2], sink, max_new_tokens=3))
    scheduler.add(make_request("b", [1, 2, 3], sink, max_new_tokens=3))
    first = scheduler.step()
    assert (first.prefill_requests, first.prompt_tokens, first.generated_tokens) == (2, 5, 2)
    assert len(first.ttft_seconds) == 2 and len(first.queue_seconds) == 2
    second = scheduler.step()
    assert second.generated_tokens == 2 and len(second.itl_seconds) == 2
    assert second.running == 2 and second.kv_cache_bytes > 0
    third = scheduler.step()
    assert third.finished == [FinishReason.LENGTH, FinishReason.LENGTH]
    assert third.running == 0 and scheduler.cache.size == 0


def test_prompts_of_very_different_lengths_prefill_in_separate_groups():
    runner, sink = TokenEchoRunner(), {}
    scheduler = Scheduler(runner, scheduler_config(max_context=256))
    lengths = {"a": 16, "b": 200, "c": 18, "d": 190, "e": 17}
    for rid, n in lengths.items():
        scheduler.add(make_request(rid, list(range(1, n + 1)), sink))
    scheduler.step()
    # one call for the short three, one for the long two: no 16-token row padded to 200
    assert [c for c in runner.calls if c[0] == "prefill"] == [("prefill", 3), ("prefill", 2)]
    assert sorted(len(r.prompt_ids) for r in scheduler.running[:3]) == [16, 17, 18]
    check_cache(scheduler)
    while scheduler.has_work():
        scheduler.step()
        check_cache(scheduler)
    assert sum(len(e.token_ids) for rid in lengths for e in sink[rid]) == 5 * len(lengths)
