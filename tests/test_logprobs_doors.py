"""Issue 21 at the doors, with engine events built by hand: the logprob knobs' checks, n
choices and their seeds, batches of prompts, token text/bytes/offsets, and the OpenAI and
gRPC shapes (checked against the official `openai` SDK's own response types), the hand-over
verdict included. The HTTP app runs in process over httpx's ASGI transport, on a fake engine.

The same shapes from a real server and the real engine: tests/test_logprobs_doors_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import replace
from types import SimpleNamespace

import grpc
import httpx
import openai.types as oai
import openai.types.chat as oai_chat
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from artifact.confidence import Calibration
from proto import kvserve_pb2 as pb
from server.generation import (
    Ask,
    Completion,
    Draining,
    GenerationFailed,
    Generator,
    Knobs,
    Prompt,
    QueueFull,
    choice_seed,
    collect_all,
    interleave,
)
from server.handover import HandOver, Verdict
from server.http_answer import server_sent_events
from server.http_app import HttpDoor, create_app
from server.http_schema import (
    ChatCompletion as ChatSchema,
)
from server.http_schema import (
    ChatCompletionChunk as ChatChunkSchema,
)
from server.http_schema import (
    Completion as CompletionSchema,
)
from server.http_schema import (
    CompletionChunk as CompletionChunkSchema,
)
from server.http_schema import CompletionRequest
from server.logprobs import TokenLogprob
from server.openai_logprobs import LogprobRenderer
from server.openai_replies import ChunkWriter, Rendering, Reply, whole
from server.openai_requests import Shown, completion_ask
from server.request import FinishReason, StreamEvent
from server.service import GenerationService, ServiceInfo
from server.token_text import TokenText
from server.validation import REQUEST_ID, InvalidArgument, Limits, sampling_params_of

EOS = 0
LIMITS = Limits(default_max_new_tokens=16, max_new_tokens=64)
CORPUS = ["the red light means the filter needs a clean", "Café au lait ☕ naïve 😀"] * 20


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    """A small byte-level BPE (GPT-2's scheme) that splits multi-byte characters."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok


@pytest.fixture(scope="module")
def token_text(tokenizer) -> TokenText:
    return TokenText(tokenizer)


# -- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("knobs", "field"),
    [
        (Knobs(logprobs=21), "logprobs"),
        (Knobs(logprobs=-1), "logprobs"),
        (Knobs(prompt_logprobs=21), "prompt_logprobs"),
        (Knobs(max_new_tokens=0), "max_new_tokens"),
        (Knobs(max_new_tokens=0, logprobs=3), "max_new_tokens"),
    ],
)
def test_bad_logprob_knobs_name_their_field(knobs, field):
    with pytest.raises(InvalidArgument) as error:
        sampling_params_of(knobs, LIMITS)
    assert error.value.field == field


def test_logprob_knobs_reach_the_engine_and_zero_tokens_needs_prompt_scoring():
    params = sampling_params_of(Knobs(logprobs=20, prompt_logprobs=0, max_new_tokens=0), LIMITS)
    assert (params.logprobs, params.prompt_logprobs, params.max_new_tokens) == (20, 0, 0)
    assert sampling_params_of(Knobs(), LIMITS).logprobs is None


def test_an_artifact_that_cannot_score_prompts_refuses_prompt_logprobs():
    with pytest.raises(InvalidArgument) as error:
        sampling_params_of(Knobs(prompt_logprobs=2), LIMITS, scores_prompts=False)
    assert error.value.field == "prompt_logprobs" and "--attention kernel" in str(error.value)
    assert sampling_params_of(Knobs(logprobs=2), LIMITS, scores_prompts=False).logprobs == 2


# -- choices and seeds -----------------------------------------------------------------------
def test_choice_seeds_are_derived_deterministically_and_differ():
    seeds = [choice_seed(7, i) for i in range(8)]
    assert seeds[0] == 7 and len(set(seeds)) == 8
    assert seeds == [choice_seed(7, i) for i in range(8)]
    assert all(0 <= s < 2**64 for s in seeds)
    assert choice_seed(2**64 - 1, 3) == (2**64 - 1 + 3 * 0x9E3779B97F4A7C15) % 2**64
    assert choice_seed(None, 3) is None


class FakeEngine:
    """Takes requests (QueueFull past `room`); the test plays the engine's events."""

    def __init__(self, room: int = 100, scores_prompts: bool = True) -> None:
        self.requests = []
        self.room = room
        self.scores_prompts = scores_prompts

    def submit(self, request) -> None:
        if len(self.requests) >= self.room:
            raise QueueFull("queue full")
        self.requests.append(request)


def make_generator(tokenizer, engine=None, calibration=None) -> Generator:
    arch = SimpleNamespace(max_positions=512, vocab_size=tokenizer.get_vocab_size())
    template = SimpleNamespace(format=lambda q, c: f"Question: {q}\nAnswer:", question="")
    manifest = SimpleNamespace(
        architecture=arch, eos_token_id=EOS, prompt_template=template, confidence=calibration
    )
    return Generator(engine or FakeEngine(), tokenizer, manifest, LIMITS)  # type: ignore[arg-type]


def test_n_choices_are_n_requests_with_derived_seeds_or_none(tokenizer):
    async def main():
        engine = FakeEngine()
        generator = make_generator(tokenizer, engine)
        ask = Ask("the red light", "prompt", Knobs(seed=11, logprobs=2), "rid")
        generations = generator.submit_all([ask], 3)
        assert [g.request_id for g in generations] == ["rid-0", "rid-1", "rid-2"]
        seeds = [r.params.seed for r in engine.requests]
        assert seeds == [choice_seed(11, i) for i in range(3)]
        assert all(r.params.logprobs == 2 for r in engine.requests)
        assert all(r.prompt_ids == engine.requests[0].prompt_ids for r in engine.requests)
        (one,) = generator.submit_all([ask], 1)
        assert one.request_id == "rid" and engine.requests[-1].params.seed == 11

    asyncio.run(main())


def test_a_refused_choice_cancels_the_ones_already_queued(tokenizer):
    async def main():
        engine = FakeEngine(room=2)
        generator = make_generator(tokenizer, engine)
        with pytest.raises(QueueFull):
            generator.submit_all([Ask("hi there", "prompt", Knobs(), "r")], 3)
        assert len(engine.requests) == 2 and all(r.cancelled for r in engine.requests)

    asyncio.run(main())


def test_a_prompt_of_token_ids_is_queued_as_sent_checked_and_decoded(tokenizer):
    async def main():
        engine = FakeEngine()
        generator = make_generator(tokenizer, engine)
        ids = tuple(tokenizer.encode("the red light").ids)
        (prepared,) = generator.prepare([Ask("", "prompt", Knobs(), "r", prompt_ids=ids)], 1)
        assert prepared.prompt == Prompt("the red light", list(ids))  # its text, for echo
        generator.submit(Ask("", "prompt", Knobs(), "r", prompt_ids=ids))
        assert engine.requests[0].prompt_ids == list(ids)
        vocab = tokenizer.get_vocab_size()
        with pytest.raises(InvalidArgument) as error:
            generator.submit(Ask("", "prompt", Knobs(), "r", prompt_ids=(1, vocab)))
        assert error.value.field == "prompt" and str(vocab) in str(error.value)
        with pytest.raises(InvalidArgument):  # checked before decoding (no overflow)
            generator.submit(Ask("", "prompt", Knobs(), "r", prompt_ids=(66804, 2**62)))
        assert len(engine.requests) == 1

    asyncio.run(main())


def test_token_id_prompts_are_checked_after_the_drain_and_request_id(tokenizer):
    """The conversion leaves token ids alone: a draining server answers 503 (not 400) for
    ids outside the vocabulary, as for any request, and a bad request id is named first."""
    body = CompletionRequest(prompt=[1, 10**6], max_tokens=2)
    converted = completion_ask(body, "rid")  # nothing decoded (or refused) here
    generator = make_generator(tokenizer)
    with pytest.raises(InvalidArgument) as error:
        generator.prepare([Ask("", "prompt", Knobs(), "bad id!", prompt_ids=(10**6,))], 1)
    assert error.value.field == "request_id"
    generator.draining = True
    with pytest.raises(Draining):
        generator.prepare(converted.asks, converted.n)


def test_a_batch_is_k_times_n_requests_in_openais_order_all_or_none(tokenizer):
    async def main():
        engine = FakeEngine()
        generator = make_generator(tokenizer, engine)
        texts = ["the red light", "Café au lait"]
        asks = [Ask(t, f"prompt[{j}]", Knobs(seed=3), "rid") for j, t in enumerate(texts)]
        generations = generator.submit_all(asks, 2)
        assert [g.request_id for g in generations] == ["rid-0", "rid-1", "rid-2", "rid-3"]
        encoded = [tokenizer.encode(t).ids for t in texts]
        assert [r.prompt_ids for r in engine.requests] == [encoded[0]] * 2 + [encoded[1]] * 2
        # each prompt's choices are seeded as if it came alone
        assert [r.params.seed for r in engine.requests] == [choice_seed(3, i) for i in (0, 1)] * 2

        full = FakeEngine(room=3)
        generator = make_generator(tokenizer, full)
        with pytest.raises(QueueFull):
            generator.submit_all(asks, 2)
        assert len(full.requests) == 3 and all(r.cancelled for r in full.requests)
        bad = [asks[0], Ask("  ", "prompt[1]", Knobs(), "rid")]
        with pytest.raises(InvalidArgument) as error:  # checked before anything is queued
            make_generator(tokenizer, engine).submit_all(bad, 2)
        assert error.value.field == "prompt[1]" and len(engine.requests) == 4

    asyncio.run(main())


def test_choice_ids_stay_valid_request_ids(tokenizer):
    generator = make_generator(tokenizer)
    longest = "r" * 128
    asks = [Ask(t, "prompt", Knobs(), longest) for t in ("the red", "the light")]
    ids = [p.request_id for p in generator.prepare(asks, 8)]
    assert len(set(ids)) == 16 and all(REQUEST_ID.match(i) for i in ids)
    assert ids[0] == "r" * 126 + "-0" and ids[15] == "r" * 125 + "-15"


def test_prompt_logprobs_refused_when_the_engine_cannot_score(tokenizer):
    async def main():
        generator = make_generator(tokenizer, FakeEngine(scores_prompts=False))
        with pytest.raises(InvalidArgument) as error:
            generator.submit(Ask("hi there", "prompt", Knobs(prompt_logprobs=0), "r"))
        assert error.value.field == "prompt_logprobs"

    asyncio.run(main())


def lp(token_id: int, logprob: float, top: tuple = ()) -> TokenLogprob:
    return TokenLogprob(token_id, logprob, top)


def play(request, events: list[StreamEvent]) -> None:
    for event in events:
        request.emit(event)


def test_collect_joins_logprobs_and_keeps_the_first_events_prompt_logprobs(tokenizer):
    async def main():
        engine = FakeEngine()
        generator = make_generator(tokenizer, engine)
        generation = generator.submit(Ask("the red", "prompt", Knobs(logprobs=1), "r"))
        request = engine.requests[0]
        n = len(request.prompt_ids)
        prompt = (None, *(lp(t, -1.0) for t in request.prompt_ids[1:]))
        play(
            request,
            [
                StreamEvent("a", [5], "r", logprobs=(lp(5, -0.5),), prompt_logprobs=prompt),
                StreamEvent("b", [6], "r", logprobs=(lp(6, -0.25),)),
                StreamEvent("", [EOS], "r", FinishReason.STOP, n, 3, logprobs=(lp(EOS, -0.1),)),
            ],
        )
        completion = await generation.collect()
        assert completion.text == "ab" and completion.token_ids == [5, 6, EOS]
        assert [x.logprob for x in completion.logprobs] == [-0.5, -0.25, -0.1]
        assert completion.prompt_logprobs == list(prompt)
        assert completion.prompt_ids == request.prompt_ids

    asyncio.run(main())


def test_choices_interleave_and_a_failure_cancels_the_rest(tokenizer):
    async def main():
        engine = FakeEngine()
        generator = make_generator(tokenizer, engine)
        generations = generator.submit_all([Ask("hi there", "prompt", Knobs(), "r")], 2)
        a, b = engine.requests
        play(b, [StreamEvent("x", [7], "r-1")])
        play(a, [StreamEvent("y", [8], "r-0", FinishReason.LENGTH, 2, 1)])
        play(b, [StreamEvent("z", [9], "r-1", FinishReason.LENGTH, 2, 2)])
        seen = [(i, e.text) async for i, batch in interleave(generations) for e in batch]
        assert sorted(seen) == [(0, "y"), (1, "x"), (1, "z")]
        assert [t for i, t in seen if i == 1] == ["x", "z"]

        generations = generator.submit_all([Ask("hi there", "prompt", Knobs(), "s")], 2)
        c, d = engine.requests[2:]
        play(c, [StreamEvent("", [], "s-0", FinishReason.DEADLINE)])
        with pytest.raises(GenerationFailed):
            await collect_all(generations)
        assert d.cancelled

    asyncio.run(main())


# -- token text, bytes and offsets -----------------------------------------------------------
def test_token_bytes_join_back_to_split_characters(tokenizer, token_text):
    text = "Café ☕ naïve 😀"
    ids = tokenizer.encode(text).ids
    assert b"".join(token_text.bytes_of(i) for i in ids) == text.encode()
    partial = [i for i in ids if "\ufffd" in token_text.text_of(i)]
    assert partial, "the corpus should split some multi-byte character"
    for i in ids:  # a token's text is its bytes decoded, what tokenizer.decode([i]) gives
        assert token_text.text_of(i) == tokenizer.decode([i])
    assert token_text.bytes_of(EOS) is None and token_text.text_of(EOS) == "<|endoftext|>"


def test_offsets_point_at_each_tokens_first_character(tokenizer, token_text):
    text = "Café ☕ naïve 😀 the red light"
    ids = tokenizer.encode(text).ids + [EOS]
    starts = token_text.offsets().take(ids, shows_special=False)  # an answer's text
    assert starts[0] == 0 and starts == sorted(starts) and starts[-1] == len(text)
    for i, start in zip(ids, starts, strict=True):
        piece = token_text.text_of(i)
        if "\ufffd" not in piece and i != EOS:
            assert text[start:].startswith(piece)
    offsets = token_text.offsets()  # in pieces, as a stream feeds them: the same offsets
    assert offsets.take(ids[:3], False) + offsets.take(ids[3:], False) == starts
    assert token_text.offsets(start_chars=7).take(ids[:1]) == [7]


def test_a_special_token_in_an_echoed_prompt_is_as_wide_as_its_name(tokenizer, token_text):
    """lm-evaluation-harness scores a continuation with no context as [eos] + its tokens;
    the echoed text shows the eos by name, so the offsets after it count 13 characters."""
    ids = [EOS, *tokenizer.encode("hello world").ids, EOS, *tokenizer.encode(" red").ids]
    text = tokenizer.decode(ids, skip_special_tokens=False)  # what echo shows
    assert text == "<|endoftext|>hello world<|endoftext|> red"
    starts = token_text.offsets().take(ids)
    assert starts[:2] == [0, 13] and starts[-1] == len(text) - len(" red")
    for i, start in zip(ids, starts, strict=True):
        assert text[start:].startswith(token_text.text_of(i))


# -- OpenAI shapes ---------------------------------------------------------------------------
def scored_completion(
    tokenizer, prompt: str, answer: str, top: int, eos: bool, prompt_ids=None
) -> Completion:
    """A Completion as the engine would give it: every token a TokenLogprob with `top`
    alternatives (the chosen one first, as greedy picks it), the prompt's too."""
    prompt_ids = prompt_ids or tokenizer.encode(prompt).ids
    ids = tokenizer.encode(answer).ids + ([EOS] if eos else [])

    def scored(t: int, k: int) -> TokenLogprob:
        others = [x for x in range(1, 40) if x != t][: max(top - 1, 0)]
        alternatives = ((t, -0.2 - k / 100), *((x, -3.0 - j) for j, x in enumerate(others)))
        return lp(t, -0.2 - k / 100, alternatives[:top])

    return Completion(
        text=answer,
        token_ids=ids,
        finish_reason=FinishReason.STOP if eos else FinishReason.LENGTH,
        prompt_tokens=len(prompt_ids),
        completion_tokens=len(ids),
        timing=None,
        request_id="r",
        logprobs=[scored(t, k) for k, t in enumerate(ids)],
        prompt_logprobs=[None, *(scored(t, k) for k, t in enumerate(prompt_ids[1:]))],
        prompt_ids=prompt_ids,
    )


NO_PROMPT = (Prompt("", []),)


def render(
    token_text, chat=False, top=None, echo=False, prompts=NO_PROMPT, n=1
) -> tuple[Reply, Rendering]:
    shown = Shown(logprobs=top, echo=echo, judged=chat)
    renderer = None if top is None else LogprobRenderer(token_text, EOS, top)
    return Reply("r", "m", 1, chat), Rendering(shown, prompts, n, "HANDED OVER", renderer)


def prompt_of(tokenizer, text: str) -> Prompt:
    return Prompt(text, tokenizer.encode(text).ids)


def test_completion_logprobs_have_openais_shape_and_offsets_from_the_prompt(tokenizer, token_text):
    prompt, answer = "the red light", " means Café 😀"
    completion = scored_completion(tokenizer, prompt, answer, top=3, eos=True)
    body = whole(*render(token_text, top=3, prompts=[prompt_of(tokenizer, prompt)]), [completion])
    CompletionSchema.model_validate(body)
    sdk = oai.Completion.model_validate(body)
    logprobs = sdk.choices[0].logprobs
    n = len(completion.token_ids)  # every generated token, the eos that ended it included
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == n
    assert logprobs.tokens[-1] == "<|endoftext|>"  # listed, though no part of the text
    assert "".join(logprobs.tokens[:-1]).replace("\ufffd", "") == answer.replace("é", "").replace(
        "😀", ""
    )
    assert logprobs.text_offset[0] == len(prompt)  # OpenAI counts from the prompt's start
    assert logprobs.text_offset[-1] == len(prompt) + len(answer)  # the eos: at the end
    for tops, token, value in zip(
        logprobs.top_logprobs, logprobs.tokens, logprobs.token_logprobs, strict=True
    ):
        assert token in tops and tops[token] == value and len(tops) <= 3 + 1
        assert max(tops.values()) == value  # greedy: the chosen token is the likeliest
        assert value <= 0 and sum(math.exp(v) for v in tops.values()) <= 1 + 1e-6
    assert sdk.usage.completion_tokens == len(completion.token_ids)
    body = whole(*render(token_text, prompts=[prompt_of(tokenizer, prompt)]), [completion])
    assert body["choices"][0]["logprobs"] is None  # not asked: not shown


def test_echo_puts_the_prompt_first_with_a_null_first_logprob(tokenizer, token_text):
    prompt = "the red light"
    completion = scored_completion(tokenizer, prompt, " means", top=2, eos=False)
    r = render(token_text, top=2, echo=True, prompts=[prompt_of(tokenizer, prompt)])
    # the SDK's types say List[float]; OpenAI (and vLLM) send null for the first prompt
    # token, and the SDK reads replies without validating (the e2e test reads it through it)
    choice = CompletionSchema.model_validate(whole(*r, [completion])).choices[0]
    assert choice.text == prompt + " means"
    lps = choice.logprobs
    k = len(completion.prompt_ids)
    assert lps.token_logprobs[0] is None and lps.top_logprobs[0] is None
    assert all(v is not None for v in lps.token_logprobs[1:])
    assert "".join(lps.tokens[:k]) == prompt and "".join(lps.tokens) == choice.text
    assert lps.text_offset[0] == 0
    for offset, token in zip(lps.text_offset, lps.tokens, strict=True):
        assert choice.text[offset:].startswith(token)


def loglikelihood_events(tokenizer, context: str, continuation: str):
    """What the engine gives lm-evaluation-harness' loglikelihood request (echo, logprobs 1,
    max_tokens 1) when the one token it samples is the eos: the prompt scored, then the eos."""
    ids = tokenizer.encode(context + continuation).ids
    ctxlen = len(tokenizer.encode(context).ids)
    scores = (None, *(lp(t, -0.5 - k, ((t, -0.5 - k),)) for k, t in enumerate(ids[1:])))
    eos = (lp(EOS, -0.1, ((EOS, -0.1),)),)
    event = StreamEvent(
        "", [EOS], "r", FinishReason.STOP, len(ids), 1, logprobs=eos, prompt_logprobs=scores
    )
    return ids, ctxlen, scores, event


def test_an_eos_sampled_after_an_echoed_prompt_keeps_its_entry(tokenizer, token_text):
    """lm-evaluation-harness reads token_logprobs[ctxlen:-1]: the continuation's scores, the
    last entry being the one generated token. Dropping an eos there cut a continuation token."""
    ids, ctxlen, scores, event = loglikelihood_events(tokenizer, "the red", " light")
    prompt = Prompt("the red light", ids)
    completion = Completion(
        "",
        [EOS],
        FinishReason.STOP,
        len(ids),
        1,
        None,
        "r",
        list(event.logprobs),
        list(scores),
        ids,
    )
    r = render(token_text, top=1, echo=True, prompts=[prompt])
    body = whole(*r, [completion])
    choice = body["choices"][0]
    assert choice["text"] == "the red light"  # the eos adds no text
    unary = choice["logprobs"]
    assert unary["token_logprobs"][ctxlen:-1] == [s.logprob for s in scores[ctxlen:]]
    assert unary["tokens"][-1] == "<|endoftext|>" and unary["token_logprobs"][-1] == -0.1
    assert unary["text_offset"][-1] == len("the red light")
    (streamed,) = sse(ChunkWriter(*r, include_usage=False).chunks(event))
    assert streamed["choices"][0]["logprobs"] == unary
    assert streamed["choices"][0]["text"] == "the red light"


def test_chat_logprobs_carry_bytes_and_the_top_alternatives(tokenizer, token_text):
    completion = scored_completion(tokenizer, "q", " Café 😀 ok", top=4, eos=True)
    verdict = Verdict(confidence=0.25, handed_over=False)
    body = whole(*render(token_text, chat=True, top=4), [completion], [verdict])
    ChatSchema.model_validate(body)
    choice = oai_chat.ChatCompletion.model_validate(body).choices[0]
    content = choice.logprobs.content
    assert len(content) == len(completion.token_ids) - 1  # no eos entry in a chat answer
    assert bytes(b for entry in content for b in entry.bytes).decode() == " Café 😀 ok"
    for entry in content:
        assert len(entry.top_logprobs) == 4 and entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob == entry.logprob <= 0
    extra = body["choices"][0]
    assert extra["confidence"] == 0.25 and extra["handed_over"] is False
    assert choice.message.content == " Café 😀 ok"


def test_a_handed_over_chat_answer_is_the_handover_text(tokenizer, token_text):
    completion = scored_completion(tokenizer, "q", " ok", top=0, eos=True)
    body = whole(*render(token_text, chat=True), [completion], [Verdict(0.1, True)])
    choice = body["choices"][0]
    assert choice["message"]["content"] == "HANDED OVER" and choice["handed_over"] is True
    assert choice["logprobs"] is None  # the engine's logprobs were internal: not shown


def sse(chunks: list[bytes]) -> list[dict]:
    return [json.loads(c.decode()[len("data: ") :]) for c in chunks]


def test_streamed_choices_interleave_with_their_index_and_usage_sums(tokenizer, token_text):
    r = render(token_text, top=1, prompts=[Prompt("p", [9, 9, 9, 9])], n=2)
    writer = ChunkWriter(*r, include_usage=True)
    out = []
    out += writer.chunks(StreamEvent("a", [5], "r", logprobs=(lp(5, -1.0, ((5, -1.0),)),)), 1)
    out += writer.chunks(StreamEvent("b", [6], "r", logprobs=(lp(6, -2.0, ((6, -2.0),)),)), 0)
    last = StreamEvent("", [EOS], "r", FinishReason.STOP, 4, 2, logprobs=(lp(EOS, -0.5),))
    out += writer.chunks(last, 1)
    done = StreamEvent("c", [7], "r", FinishReason.LENGTH, 4, 3, logprobs=(lp(7, -0.1),))
    out += writer.chunks(done, 0)
    events = sse(out)
    for event in events:
        CompletionChunkSchema.model_validate(event)  # (the SDK's reading: the e2e tests)
    assert [e["choices"][0]["index"] for e in events[:-1]] == [1, 0, 1, 0]
    assert events[2]["choices"][0]["logprobs"]["tokens"] == ["<|endoftext|>"]
    assert events[0]["choices"][0]["logprobs"]["text_offset"] == [1]  # after the prompt "p"
    assert events[-1]["choices"] == [] and events[-1]["usage"] == {
        "prompt_tokens": 4,
        "completion_tokens": 5,
        "total_tokens": 9,
    }


def test_a_streamed_batch_echoes_each_choices_own_prompt_and_sums_usage(tokenizer, token_text):
    prompts = [prompt_of(tokenizer, "the red"), prompt_of(tokenizer, "Café au lait")]
    writer = ChunkWriter(*render(token_text, echo=True, prompts=prompts, n=2), include_usage=True)
    out = []
    for index in (3, 0, 2, 1):  # as the engine happens to finish them
        event = StreamEvent(f"!{index}", [5], "r", FinishReason.LENGTH, 0, index + 1)
        out += writer.chunks(event, index)
    events = sse(out)
    texts = {e["choices"][0]["index"]: e["choices"][0]["text"] for e in events[:-1]}
    assert texts == {0: "the red!0", 1: "the red!1", 2: "Café au lait!2", 3: "Café au lait!3"}
    prompt_tokens = len(prompts[0].token_ids) + len(prompts[1].token_ids)  # each prompt once
    assert events[-1]["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 1 + 2 + 3 + 4,
        "total_tokens": prompt_tokens + 10,
    }


def test_streamed_echo_sends_the_prompt_and_its_scores_first(tokenizer, token_text):
    prompt = prompt_of(tokenizer, "the red light")
    ids = prompt.token_ids
    writer = ChunkWriter(*render(token_text, top=0, echo=True, prompts=[prompt]), False)
    scores = (None, *(lp(t, -1.5) for t in ids[1:]))
    # max_tokens 0: one event, the prompt scored, nothing generated
    only = StreamEvent("", [], "r", FinishReason.LENGTH, len(ids), 0, prompt_logprobs=scores)
    (event,) = sse(writer.chunks(only))
    choice = event["choices"][0]
    assert choice["text"] == prompt.text and choice["finish_reason"] == "length"
    assert choice["logprobs"]["token_logprobs"] == [None] + [-1.5] * (len(ids) - 1)
    assert "".join(choice["logprobs"]["tokens"]) == prompt.text
    assert choice["logprobs"]["top_logprobs"][1] == {token_text.text_of(ids[1]): -1.5}


def test_a_streamed_chat_choice_ends_with_its_verdict(tokenizer, token_text):
    judged = []

    def judge(ids, lps):
        judged.append((list(ids), [x.logprob for x in lps]))
        return Verdict(0.05, True)

    writer = ChunkWriter(*render(token_text, chat=True), include_usage=False, judge=judge)
    out = writer.chunks(StreamEvent("ok", [5], "r", logprobs=(lp(5, -1.0),)))
    out += writer.chunks(
        StreamEvent("", [EOS], "r", FinishReason.STOP, 3, 2, logprobs=(lp(EOS, -0.5),))
    )
    events = sse(out)
    for event in events:
        ChatChunkSchema.model_validate(event)
        oai_chat.ChatCompletionChunk.model_validate(event)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[1]["choices"][0]["logprobs"] is None  # internal logprobs are not shown
    last = events[-1]["choices"][0]
    assert last["finish_reason"] == "stop" and last["handed_over"] is True
    assert last["confidence"] == 0.05 and last["handover_text"] == "HANDED OVER"
    assert judged == [([5, EOS], [-1.0, -0.5])]


def test_closing_a_stream_cancels_every_choice_at_once(tokenizer, token_text):
    """A client gone mid-stream: Starlette closes the stream's generator, and every choice's
    request is cancelled right then, not when the relay is garbage-collected."""

    async def main():
        engine = FakeEngine()
        generator = make_generator(tokenizer, engine)
        for n in (4, 1):
            engine.requests.clear()
            generations = generator.submit_all([Ask("hi there", "prompt", Knobs(), "r")], n)
            writer = ChunkWriter(*render(token_text, n=n), include_usage=False)
            state = SimpleNamespace()
            stream = server_sent_events(interleave(generations), writer, state)  # type: ignore[arg-type]
            play(engine.requests[0], [StreamEvent("x", [5], "r")])
            assert b'"text":"x"' in await anext(stream)
            await stream.aclose()
            assert [r.cancelled for r in engine.requests] == [True] * n

    asyncio.run(main())


# -- the HTTP app in process, on the fake engine ---------------------------------------------
def http_door(tokenizer, engine) -> HttpDoor:
    generator = make_generator(tokenizer, engine)
    return HttpDoor(generator, "m", 512, Observed(), serving=lambda: True)


async def post(door: HttpDoor, body: dict) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_app(door))
    async with httpx.AsyncClient(transport=transport, base_url="http://door") as client:
        return await client.post("/v1/completions", json=body)


def test_echo_with_nothing_to_generate_is_answered_without_the_engine(tokenizer):
    """echo + max_tokens 0 without logprobs: the prompts are the answer, so the door gives
    them itself, even on an artifact that cannot score prompts (the engine would refuse)."""
    ids = tokenizer.encode("Café au lait").ids
    body = {"prompt": [[*ids], [EOS, *ids]], "max_tokens": 0, "echo": True, "n": 2}
    engine = FakeEngine(scores_prompts=False)
    door = http_door(tokenizer, engine)
    reply = asyncio.run(post(door, body))
    assert reply.status_code == 200, reply.text
    sdk = oai.Completion.model_validate(reply.json())
    texts = ["Café au lait"] * 2 + ["<|endoftext|>Café au lait"] * 2
    assert [c.text for c in sdk.choices] == texts and [c.index for c in sdk.choices] == [0, 1, 2, 3]
    assert all(c.finish_reason == "length" and c.logprobs is None for c in sdk.choices)
    assert sdk.usage.prompt_tokens == 2 * len(ids) + 1 and sdk.usage.completion_tokens == 0
    streamed = asyncio.run(
        post(door, {**body, "stream": True, "stream_options": {"include_usage": True}})
    )
    lines = streamed.text.splitlines()
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    shown = sorted((e["choices"][0]["index"], e["choices"][0]["text"]) for e in events[:-1])
    assert shown == list(enumerate(texts))
    assert events[-1]["usage"] == reply.json()["usage"] and streamed.text.endswith("[DONE]\n\n")
    assert engine.requests == []  # the engine was never asked
    body["logprobs"] = 0  # scores asked for: the engine's work, refused by this artifact
    refused = asyncio.run(post(door, body))
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "echo"


def test_a_batch_of_prompts_is_answered_in_openais_order_with_usage_summed(tokenizer):
    engine = FakeEngine()
    door = http_door(tokenizer, engine)
    texts = ["the red light", "Café au lait"]
    body = {"prompt": texts, "max_tokens": 4, "n": 2, "echo": True, "logprobs": 1}

    async def main() -> httpx.Response:
        call = asyncio.ensure_future(post(door, body))
        while len(engine.requests) < 4:
            await asyncio.sleep(0.001)
        for k, request in reversed(list(enumerate(engine.requests))):  # finish in any order
            scores = (None, *(lp(t, -1.0, ((t, -1.0),)) for t in request.prompt_ids[1:]))
            answer = (lp(5 + k, -0.5, ((5 + k, -0.5),)),)
            n = len(request.prompt_ids)
            end = StreamEvent(f"#{k}", [5 + k], "r", FinishReason.LENGTH, n, k + 1)
            play(request, [replace(end, logprobs=answer, prompt_logprobs=scores)])
        return await call

    reply = asyncio.run(main())
    assert reply.status_code == 200, reply.text
    choices = reply.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    assert [c["text"] for c in choices] == [f"{texts[k // 2]}#{k}" for k in range(4)]
    for k, choice in enumerate(choices):  # each choice's prompt, then its own token
        prompt_tokens = len(tokenizer.encode(texts[k // 2]).ids)
        assert len(choice["logprobs"]["tokens"]) == prompt_tokens + 1
        assert choice["logprobs"]["text_offset"][-1] == len(texts[k // 2])
    prompt_tokens = sum(len(tokenizer.encode(t).ids) for t in texts)  # each prompt once
    assert reply.json()["usage"]["prompt_tokens"] == prompt_tokens
    assert reply.json()["usage"]["completion_tokens"] == 1 + 2 + 3 + 4


def test_a_batch_is_admitted_whole_or_refused_naming_the_prompt(tokenizer):
    full = FakeEngine(room=3)
    reply = asyncio.run(post(http_door(tokenizer, full), {"prompt": ["a b", "c d"], "n": 2}))
    assert reply.status_code == 429
    assert len(full.requests) == 3 and all(r.cancelled for r in full.requests)
    engine = FakeEngine()
    vocab = tokenizer.get_vocab_size()
    bad = {"prompt": [[1, 2], [1, vocab]], "max_tokens": 2}
    reply = asyncio.run(post(http_door(tokenizer, engine), bad))
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "prompt[1]"
    too_many = {"prompt": [[1, 2]] * 17, "max_tokens": 2}
    reply = asyncio.run(post(http_door(tokenizer, engine), too_many))
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "prompt"
    assert engine.requests == []


# -- gRPC: Answer with its verdict -----------------------------------------------------------
class FakeContext:
    code = None
    message = ""

    def time_remaining(self):
        return None

    def add_done_callback(self, callback) -> None:
        pass

    async def abort(self, code, message) -> None:
        self.code, self.message = code, message
        raise grpc.aio.AbortError()


class Observed:
    def __init__(self) -> None:
        self.verdicts: list[Verdict] = []

    def observe_answer(self, verdict: Verdict) -> None:
        self.verdicts.append(verdict)

    def observe_rpc(self, *args) -> None:
        pass


def answer_rpc(tokenizer, request: pb.AnswerRequest, calibration, threshold=None):
    engine = FakeEngine()
    generator = make_generator(tokenizer, engine, calibration)
    generator.handover = HandOver(calibration, threshold, "a person will help")
    metrics = Observed()
    service = GenerationService(generator, ServiceInfo("cpu", 8, LIMITS), metrics)

    async def main():
        task = asyncio.ensure_future(service.Answer(request, FakeContext()))
        while not engine.requests:
            await asyncio.sleep(0)
        (req,) = engine.requests
        logprobs = (lp(5, -0.5, ((5, -0.5),)), lp(EOS, -3.0, ((EOS, -3.0),)))
        asked = req.params.logprobs is not None
        play(
            req,
            [
                StreamEvent("ok", [5], "r", logprobs=logprobs[:1] if asked else ()),
                StreamEvent(
                    "", [EOS], "r", FinishReason.STOP, 4, 2, logprobs=logprobs[1:] if asked else ()
                ),
            ],
        )
        return await task, req

    response, req = asyncio.run(main())
    return response, req, metrics


CALIBRATION = Calibration(a=2.0, b=2.0, threshold=0.4)  # -0.5 mean: sigmoid(1) = 0.73


def test_answer_rpc_judges_on_internal_logprobs_and_does_not_return_them(tokenizer):
    response, req, metrics = answer_rpc(tokenizer, pb.AnswerRequest(question="hi"), CALIBRATION)
    assert req.params.logprobs == 0  # asked for by the server, for the verdict
    assert len(response.logprobs) == 0  # ... and not shown to a client that did not ask
    expected = CALIBRATION.confidence([-0.5])  # the eos left out
    assert response.HasField("confidence")
    assert response.confidence == pytest.approx(expected, rel=1e-6)
    assert response.handed_over is False and response.text == "ok"
    assert metrics.verdicts == [Verdict(expected, False)]


def test_answer_rpc_hands_over_below_the_requests_threshold(tokenizer):
    request = pb.AnswerRequest(question="hi", handover_threshold=0.99, logprobs=1)
    response, req, metrics = answer_rpc(tokenizer, request, CALIBRATION)
    assert response.handed_over is True and response.text == "a person will help"
    assert [x.token_id for x in response.logprobs] == [5, EOS]  # asked: shown
    assert response.logprobs[0].alternatives[0].token_id == 5
    assert metrics.verdicts[0].handed_over is True


def test_answer_rpc_without_a_calibration_has_no_confidence(tokenizer):
    response, req, metrics = answer_rpc(tokenizer, pb.AnswerRequest(question="hi"), None)
    assert req.params.logprobs is None  # nothing to judge with: nothing asked of the engine
    assert not response.HasField("confidence") and response.handed_over is False
    assert metrics.verdicts == [Verdict(None, False)]


def test_answer_rpc_refuses_a_bad_threshold_naming_it(tokenizer):
    generator = make_generator(tokenizer, FakeEngine(), CALIBRATION)
    service = GenerationService(generator, ServiceInfo("cpu", 8, LIMITS), Observed())
    context = FakeContext()
    request = pb.AnswerRequest(question="hi", handover_threshold=1.5)
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(service.Answer(request, context))
    assert context.code is grpc.StatusCode.INVALID_ARGUMENT
    assert context.message.startswith("handover_threshold:")


def test_generate_rpc_returns_prompt_scores_the_first_without_a_logprob(tokenizer, token_text):
    engine = FakeEngine()
    generator = make_generator(tokenizer, engine)
    service = GenerationService(generator, ServiceInfo("cpu", 8, LIMITS), Observed())
    request = pb.GenerateRequest(prompt="the red light", max_new_tokens=0, prompt_logprobs=1)

    async def main():
        task = asyncio.ensure_future(service.Generate(request, FakeContext()))
        while not engine.requests:
            await asyncio.sleep(0)
        (req,) = engine.requests
        assert (req.params.max_new_tokens, req.params.prompt_logprobs) == (0, 1)
        ids = req.prompt_ids
        scores = (None, *(lp(t, -2.0, ((t, -2.0),)) for t in ids[1:]))
        end = StreamEvent("", [], "r", FinishReason.LENGTH, len(ids), 0, prompt_logprobs=scores)
        play(req, [end])
        return await task, ids

    response, ids = asyncio.run(main())
    assert [x.token_id for x in response.prompt_logprobs] == ids
    first, *rest = response.prompt_logprobs
    assert not first.HasField("logprob") and first.token == token_text.text_of(ids[0])
    assert all(x.HasField("logprob") and x.logprob == -2.0 for x in rest)
    assert "".join(x.token for x in response.prompt_logprobs) == "the red light"
    assert len(response.logprobs) == 0 and response.finish_reason == pb.FINISH_REASON_LENGTH
