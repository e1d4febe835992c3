"""The update stage on hand-built plans and logits: tokens, text pieces, stop rules, failures
and stats, with a toy detokenizer (token i = letter chr(65 + i % 26)) and no runner."""

from __future__ import annotations

import numpy as np

from server.engine import deliver
from server.request import FinishReason, Request, RequestStatus, StreamEvent
from server.step import Batch, ModelOutput, StepPlan, StepResult
from server.update import Updater
from tests.support.engine import (
    VOCAB,
    break_sampling_for_seed,
    make_request,
    make_updater,
    one_hot,
    running,
    texts,
)


def prefill(updater: Updater, requests: list[Request], logits: np.ndarray) -> StepResult:
    """A step where these requests joined and sampled their first token."""
    joined = tuple(requests)
    plan = StepPlan(joined=joined)
    return updater.update(plan, ModelOutput(sampled=Batch(joined, logits)))


def decode(updater: Updater, requests: list[Request], logits: np.ndarray) -> StepResult:
    rows = tuple(requests)
    return updater.update(StepPlan(), ModelOutput(sampled=Batch(rows, logits)))


def generate(updater: Updater, request: Request, tokens: list[int]) -> list[StreamEvent]:
    """Give `request` these next tokens, one step each (a prefill, then decode steps), until
    it finishes; the events it got."""
    result = prefill(updater, [running(request)], one_hot(tokens[:1]))
    events = [e for _, e in result.events]
    for token in tokens[1:]:
        if request.status is RequestStatus.FINISHED:
            break
        events += [e for _, e in decode(updater, [request], one_hot([token])).events]
    assert request.status is RequestStatus.FINISHED
    return events


def test_eos_stops_unless_ignored():
    updater, sink, counting = make_updater(eos=3), {}, list(range(2, 12))
    stop = generate(updater, make_request("stop", [1], sink, max_new_tokens=10), counting)
    go = make_request("go", [1], sink, max_new_tokens=4, ignore_eos=True)
    go = generate(updater, go, counting)
    assert texts(stop) == [2, 3]
    assert stop[-1].finish_reason is FinishReason.STOP
    assert stop[-1].completion_tokens == 2
    assert texts(go) == [2, 3, 4, 5]
    assert go[-1].finish_reason is FinishReason.LENGTH


def test_stop_string_ends_generation_and_is_not_returned():
    updater, sink = make_updater(), {}
    # tokens 1,2,3,4,... detokenize to "BCDE..."; stop on "DE"
    request = make_request("s", [0], sink, max_new_tokens=10, stop=("DE",))
    events = generate(updater, request, list(range(1, 11)))
    assert "".join(e.text for e in events) == "BC"
    assert events[-1].finish_reason is FinishReason.STOP


def test_context_window_ends_with_length():
    updater, sink = make_updater(max_context=8), {}
    request = make_request("w", [1, 2, 3, 4, 5], sink, max_new_tokens=50)
    events = generate(updater, request, list(range(6, 40)))
    assert len(texts(events)) == 3
    assert events[-1].finish_reason is FinishReason.LENGTH


def test_each_token_streams_its_piece_and_the_last_event_carries_usage():
    updater, sink = make_updater(), {}
    events = generate(updater, make_request("a", [5, 6], sink, max_new_tokens=3), [1, 2, 3])
    assert [(e.text, e.token_ids, e.finish_reason) for e in events] == [
        ("B", [1], None),
        ("C", [2], None),
        ("D", [3], FinishReason.LENGTH),
    ]
    last = events[-1]
    assert (last.request_id, last.prompt_tokens, last.completion_tokens) == ("a", 2, 3)
    assert last.timing.total_seconds >= last.timing.time_to_first_token_seconds >= 0


def test_dropped_requests_get_a_last_event_and_no_token():
    updater, sink = make_updater(), {}
    gone, late = make_request("gone", [1], sink), make_request("late", [1], sink)
    plan = StepPlan(dropped=((gone, FinishReason.CANCELLED), (late, FinishReason.DEADLINE)))
    result = updater.update(plan, ModelOutput())
    assert [(r, e.finish_reason, e.token_ids) for r, e in result.events] == [
        (gone, FinishReason.CANCELLED, []),
        (late, FinishReason.DEADLINE, []),
    ]
    assert gone.status is late.status is RequestStatus.FINISHED
    assert result.stats.finished == [FinishReason.CANCELLED, FinishReason.DEADLINE]
    assert result.stats.generated_tokens == 0


def test_a_failed_model_call_fails_only_its_own_requests():
    updater, sink = make_updater(), {}
    steady = running(make_request("steady", [1], sink))
    deliver(prefill(updater, [steady], one_hot([2])).events)
    bad = running(make_request("bad", [13], sink))
    plan = StepPlan(joined=(bad,))
    output = ModelOutput(
        sampled=Batch((steady,), one_hot([3])),
        failed=(Batch((bad,), error=RuntimeError("bad kernel")),),
    )
    deliver(updater.update(plan, output).events)
    assert sink["bad"][-1].finish_reason is FinishReason.ERROR
    assert "bad kernel" in sink["bad"][-1].error
    assert texts(sink["steady"]) == [2, 3] and steady.status is RequestStatus.RUNNING


def test_a_sampling_failure_fails_only_the_request_that_causes_it(monkeypatch):
    break_sampling_for_seed(monkeypatch, 666)
    updater, sink = make_updater(), {}
    fine = running(make_request("fine", [1], sink, temperature=1.0, seed=7))
    twin = make_request("twin", [1], {}, temperature=1.0, seed=7)  # fine's seed, alone
    deliver(prefill(updater, [fine], one_hot([2])).events)
    deliver(prefill(make_updater(), [running(twin)], one_hot([2])).events)
    evil = running(make_request("evil", [1], sink, seed=666))
    logits = np.zeros((1, VOCAB), np.float32)  # all alike: the draw alone picks the token
    plan = StepPlan(joined=(evil,))
    output = ModelOutput(sampled=Batch((evil, fine), np.concatenate([one_hot([4]), logits])))
    result = updater.update(plan, output)
    deliver(result.events)
    assert sink["evil"][-1].finish_reason is FinishReason.ERROR
    assert "sampler blew up" in sink["evil"][-1].error
    assert fine.status is RequestStatus.RUNNING and result.stats.generated_tokens == 1
    # fine's token is the one it draws with no failing company: its seed's next draw
    decode(make_updater(), [twin], logits)
    assert fine.output_ids == twin.output_ids


def test_stats_count_admissions_tokens_and_latencies():
    updater, sink = make_updater(), {}
    a = running(make_request("a", [1, 2], sink))
    b = running(make_request("b", [1, 2, 3], sink))
    first = prefill(updater, [a, b], one_hot([4, 5])).stats
    assert (first.prefill_requests, first.prompt_tokens, first.generated_tokens) == (2, 5, 2)
    assert first.batch_size == 2 and len(first.ttft_seconds) == len(first.queue_seconds) == 2
    assert first.itl_seconds == [] and first.finished == []
    second = decode(updater, [a, b], one_hot([6, 7])).stats
    assert second.prefill_requests == 0 and len(second.itl_seconds) == 2
    assert second.ttft_seconds == []


def test_seeded_requests_draw_the_same_tokens_whatever_the_batch():
    def tokens_of(seed: int, companions: int) -> list[int]:
        updater, sink = make_updater(), {}
        others = [make_request(f"o{i}", [1], sink, temperature=1.0, seed=i) for i in range(3)]
        target = make_request("t", [1], sink, temperature=1.0, seed=seed, max_new_tokens=6)
        batch = [running(r) for r in [*others[:companions], target]]
        flat = np.zeros((len(batch), VOCAB), dtype=np.float32)  # every token equally likely
        deliver(prefill(updater, batch, flat).events)
        while target.status is RequestStatus.RUNNING:
            batch = [r for r in batch if r.status is RequestStatus.RUNNING]
            deliver(decode(updater, batch, np.zeros((len(batch), VOCAB), np.float32)).events)
        return texts(sink["t"])

    assert tokens_of(42, companions=0) == tokens_of(42, companions=3)
    assert tokens_of(42, companions=0) != tokens_of(43, companions=0)
