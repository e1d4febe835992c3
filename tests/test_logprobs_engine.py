"""Issue 21 items 1-2 in the engine: sampled tokens' logprobs and prompt scoring.

The fake paged runner (tests/support/engine.py) gives one-hot logits, so every logprob has a
closed form; the real runner over the tiny fp32 artifact is held to HF transformers'
log-softmax on the checkpoint it was exported from (the issue's 1e-4 bar).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from server.logprobs import TokenLogprob, log_softmax, token_logprobs
from tests.support.engine import (
    EOS,
    VOCAB,
    TokenPagedCache,
    artifact_engine,
    make_request,
    paged_engine,
    run_paged_to_end,
)
from tests.support.hf import PROMPTS, hf_logprobs

HIT = 10.0 - math.log(math.exp(10.0) + VOCAB - 1)  # one-hot logits: the hot token's logprob
MISS = 0.0 - math.log(math.exp(10.0) + VOCAB - 1)


def echo_next(token: int) -> int:
    nxt = (token + 1) % VOCAB
    return 1 if nxt == EOS else nxt


def run(requests, **options):
    engine = paged_engine(**options)
    for request in requests:
        engine.submit(request)
    run_paged_to_end(engine)
    return engine


def test_token_logprobs_match_a_plain_log_softmax():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 300)).astype(np.float32) * 4
    picked = rng.integers(0, 300, size=5)
    got = token_logprobs(logits, picked, top=7)
    expected = np.log(np.exp(logits.astype(np.float64)) / np.exp(logits).sum(1, keepdims=True))
    for row, item in enumerate(got):
        assert item.token_id == picked[row]
        assert item.logprob == pytest.approx(expected[row, picked[row]], abs=1e-5)
        ids = [t for t, _ in item.top]
        assert ids == list(np.argsort(-expected[row], kind="stable")[:7])
        assert [lp for _, lp in item.top] == sorted((lp for _, lp in item.top), reverse=True)
    assert all(item.top == () for item in token_logprobs(logits, picked, top=0))


def test_top_ties_go_to_the_lower_token_id():
    logits = np.zeros((1, 10), np.float32)
    logits[0, [7, 3, 5]] = 2.0
    (item,) = token_logprobs(logits, np.array([7]), top=2)
    assert [t for t, _ in item.top] == [3, 5]


def test_log_softmax_is_stable_for_huge_logits():
    out = log_softmax(np.array([[1e30, 0.0, -1e30]], np.float32))
    assert np.isfinite(out[0, :2]).all() and out[0, 0] == 0.0


def test_sampled_tokens_carry_their_logprobs_when_asked_and_only_then():
    sink: dict = {}
    asked = make_request("asked", [3, 9], sink, max_new_tokens=4, logprobs=3)
    quiet = make_request("quiet", [4, 8], sink, max_new_tokens=4)
    run([asked, quiet])
    events = sink["asked"]
    logprobs = [lp for e in events for lp in e.logprobs]
    tokens = [t for e in events for t in e.token_ids]
    assert [lp.token_id for lp in logprobs] == tokens == [10, 11, 12, 13]
    for lp in logprobs:
        assert lp.logprob == pytest.approx(HIT, abs=1e-6)
        assert lp.top[0] == (lp.token_id, pytest.approx(HIT, abs=1e-6))
        assert len(lp.top) == 3 and lp.top[1][1] == pytest.approx(MISS, abs=1e-6)
    assert all(e.logprobs == () and e.prompt_logprobs is None for e in sink["quiet"])


def test_each_request_gets_its_own_number_of_alternatives():
    sink: dict = {}
    requests = [
        make_request(f"r{k}", [5 + k, 6], sink, max_new_tokens=2, logprobs=k) for k in (0, 2, 5)
    ]
    run(requests)
    for k in (0, 2, 5):
        assert {len(lp.top) for e in sink[f"r{k}"] for lp in e.logprobs} == {k}


def test_eos_is_scored_too():
    sink: dict = {}
    request = make_request("r", [VOCAB - 2], sink, max_new_tokens=3, logprobs=1)
    run([request])  # echo: VOCAB - 1, then 0 == EOS is replaced by 1; so no eos here
    assert [lp.token_id for e in sink["r"] for lp in e.logprobs] == [VOCAB - 1, 1, 2]


def check_prompt_scores(scores, prompt):
    assert len(scores) == len(prompt) and scores[0] is None
    for position in range(1, len(prompt)):
        item = scores[position]
        assert isinstance(item, TokenLogprob) and item.token_id == prompt[position]
        expected = HIT if echo_next(prompt[position - 1]) == prompt[position] else MISS
        assert item.logprob == pytest.approx(expected, abs=1e-6)
        if item.top:
            assert item.top[0][0] == echo_next(prompt[position - 1])


@pytest.mark.parametrize("step_tokens", [3, 7, 64])
def test_prompt_scores_cover_every_prompt_token_across_chunks(step_tokens):
    prompt = [5, 6, 7, 20, 21, 3, 4, 5, 30, 31, 32, 33, 2]
    sink: dict = {}
    request = make_request("s", prompt, sink, max_new_tokens=3, prompt_logprobs=2)
    other = make_request("o", [9, 1, 2], sink, max_new_tokens=6)
    run([other, request], max_step_tokens=step_tokens)
    first, *rest = sink["s"]
    check_prompt_scores(first.prompt_logprobs, prompt)
    assert all(len(lp.top) == 2 for lp in first.prompt_logprobs[1:])
    assert all(e.prompt_logprobs is None for e in rest)
    assert [t for e in sink["s"] for t in e.token_ids] == [3, 4, 5]  # generation unchanged


def test_max_new_tokens_zero_scores_the_prompt_and_generates_nothing():
    prompt = [8, 9, 10, 44]
    sink: dict = {}
    run([make_request("z", prompt, sink, max_new_tokens=0, prompt_logprobs=0)])
    (event,) = sink["z"]
    assert event.finish_reason is not None and event.finish_reason.value == "length"
    assert event.token_ids == [] and event.completion_tokens == 0
    check_prompt_scores(event.prompt_logprobs, prompt)


def test_a_one_token_prompt_has_one_empty_score():
    sink: dict = {}
    run([make_request("one", [12], sink, max_new_tokens=0, prompt_logprobs=0)])
    assert sink["one"][0].prompt_logprobs == (None,)


def test_scoring_skips_the_prefix_cache_and_others_still_hit_it():
    prompt = list(range(2, 20))  # 18 tokens: 4 full blocks of 4
    sink: dict = {}
    engine = run([make_request("warm", prompt, sink, max_new_tokens=1)])
    blocks = engine.scheduler.blocks
    hits = blocks.hit_tokens
    for request in (make_request("score", prompt, sink, max_new_tokens=1, prompt_logprobs=0),):
        engine.submit(request)
    run_paged_to_end(engine)
    assert blocks.hit_tokens == hits  # the scoring request looked nothing up
    check_prompt_scores(sink["score"][0].prompt_logprobs, prompt)
    engine.submit(make_request("again", prompt, sink, max_new_tokens=1))
    run_paged_to_end(engine)
    assert blocks.hit_tokens > hits  # the blocks it computed are in the cache for others


def test_a_preempted_scoring_request_keeps_one_score_per_token():
    sink: dict = {}
    cache = TokenPagedCache(num_blocks=9, block_size=4)
    long_prompt = [7, 8, 9, 1, 2, 40, 41, 42, 3, 4]
    requests = [
        make_request("a", [30, 31], sink, max_new_tokens=20),
        make_request("s", long_prompt, sink, max_new_tokens=12, prompt_logprobs=1, logprobs=0),
    ]
    engine = run(requests, cache=cache, max_step_tokens=4)
    assert engine.scheduler.preempted > 0, "the pool was meant to run dry"
    first = sink["s"][0]
    check_prompt_scores(first.prompt_logprobs, long_prompt)
    tokens = [t for e in sink["s"] for t in e.token_ids]
    assert [lp.token_id for e in sink["s"] for lp in e.logprobs] == tokens
    assert len(tokens) == 12


# the real runner against HF transformers


def test_the_gate_held_prompt_scoring_to_pytorch(tiny_artifact):
    from artifact import read_manifest

    parity = read_manifest(tiny_artifact).parity
    assert parity["passed"] and 0 <= parity["scoring_max_logit_diff"] <= 1e-3


@pytest.fixture(scope="module")
def real_engine(tiny_artifact):
    engine, model = artifact_engine(tiny_artifact, kv_cache_memory=64 << 20, max_step_tokens=48)
    assert engine.scores_prompts
    return engine, model


def test_logprobs_equal_hf_log_softmax(real_engine, tiny_checkpoint):
    engine, model = real_engine
    sink: dict = {}
    prompts = [model.tokenizer.encode(p).ids for p in PROMPTS]
    for k, ids in enumerate(prompts):  # all at once: batched steps, chunked prompts
        engine.submit(
            make_request(
                f"p{k}",
                ids,
                sink,
                max_new_tokens=32,
                logprobs=5,
                prompt_logprobs=5,
                ignore_eos=True,
            )
        )
    for _ in range(400):
        if not engine.scheduler.has_work():
            break
        engine.step()
    generated = [[t for e in sink[f"p{k}"] for t in e.token_ids] for k in range(len(prompts))]
    assert all(len(g) == 32 for g in generated)
    references = hf_logprobs(
        tiny_checkpoint, [p + g for p, g in zip(prompts, generated, strict=True)]
    )
    worst = 0.0
    for k, (prompt, reference) in enumerate(zip(prompts, references, strict=True)):
        events = sink[f"p{k}"]
        scores = events[0].prompt_logprobs
        assert scores[0] is None and len(scores) == len(prompt)
        sampled = [lp for e in events for lp in e.logprobs]
        items = list(scores[1:]) + sampled  # item i scores sequence token i + 1
        sequence = prompt + generated[k]
        for i, item in enumerate(items):
            row = reference[i]
            assert item.token_id == sequence[i + 1]
            worst = max(worst, abs(item.logprob - row[item.token_id]))
            for token, logprob in item.top:
                worst = max(worst, abs(logprob - row[token]))
            assert [t for t, _ in item.top] == list(np.argsort(-row, kind="stable")[:5])
        for item in sampled:  # greedy: the sampled token is the likeliest
            assert item.top[0][0] == item.token_id
    print(f"\nengine: largest |logprob - HF| (sampled, prompt, top-5): {worst:.2e}")
    assert worst < 1e-4, worst
