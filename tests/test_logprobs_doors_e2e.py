"""Issue 21 through both doors of a real server: logprobs, echo scoring, n choices, batches
of prompts and the hand-over, read by the official `openai` SDK over HTTP and by a gRPC stub
on loopback.

The server serves a copy of the tiny test artifact with a known calibration (sigmoid of the
mean token logprob: every answer's confidence is under 0.5), so the verdict each door gives
can be recomputed from the logprobs the same door returns. Values are real: logprobs <= 0,
a greedy token is the likeliest of its alternatives, the alternatives' probabilities sum to
at most 1, echoed prompt tokens join back to the prompt, offsets point into the text, and
both doors give the same numbers for the same request.
"""

from __future__ import annotations

import math

import grpc
import openai
import pytest
from tokenizers import Tokenizer

from artifact import read_manifest
from proto import kvserve_pb2 as pb
from proto import kvserve_pb2_grpc as pb_grpc
from server.handover import DEFAULT_TEXT
from server.process import ServerProcess
from tests.support.handover import UNDER_A_HALF, calibrated_copy
from tests.support.reliability import metric

pytestmark = pytest.mark.slow
PROMPT = "Question: What does the red light mean?\nAnswer:"
QUESTION = "How do I reset my password?"
CHAT = [{"role": "user", "content": QUESTION}]
FLOAT32 = 1e-5  # gRPC carries logprobs as float32, JSON as float64
EOS_TEXT = "<|endoftext|>"  # how a completion lists the eos that ended it (no part of its text)


@pytest.fixture(scope="module")
def server(tiny_artifact, tmp_path_factory):
    directory = tmp_path_factory.mktemp("logprobs-doors")
    artifact = calibrated_copy(tiny_artifact, directory / "artifact", UNDER_A_HALF)
    process = ServerProcess.start(
        artifact, directory / "server.log", ["--max-batch-size", "8"], http=True
    )
    yield process
    assert process.stop() == 0, (directory / "server.log").read_text()[-3000:]


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.http_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.target) as channel:
        yield pb_grpc.GenerationStub(channel)


@pytest.fixture(scope="module")
def model(tiny_artifact) -> str:
    return read_manifest(tiny_artifact).model_name


def check_alternatives(token: str, value: float, top: dict[str, float], greedy: bool) -> None:
    assert value <= 0 and all(v <= 0 for v in top.values())
    assert top[token] == value  # the chosen token is always among them
    assert sum(math.exp(v) for v in top.values()) <= 1 + 1e-6
    if greedy:
        assert max(top.values()) == pytest.approx(value, abs=1e-6)


# -- completions -----------------------------------------------------------------------------
def test_completion_logprobs_are_real_and_agree_with_grpc(client, stub, model):
    reply = client.completions.create(
        model=model, prompt=PROMPT, max_tokens=12, temperature=0, logprobs=5
    )
    (choice,) = reply.choices
    lps = choice.logprobs
    assert len(lps.tokens) == len(lps.token_logprobs) == len(lps.top_logprobs)
    # one entry per generated token, an eos that ended the answer included
    assert reply.usage.completion_tokens == len(lps.tokens)
    for token, value, top in zip(lps.tokens, lps.token_logprobs, lps.top_logprobs, strict=True):
        assert len(top) <= 6
        check_alternatives(token, value, top, greedy=True)
    shown = lps.tokens[:-1] if choice.finish_reason == "stop" else lps.tokens
    assert choice.finish_reason == "length" or lps.tokens[-1] == EOS_TEXT
    assert "".join(shown) == choice.text  # ASCII data: every token whole
    assert lps.text_offset[0] == len(PROMPT)  # OpenAI counts from the prompt's start
    for offset, token in zip(lps.text_offset, shown, strict=False):
        assert choice.text[offset - len(PROMPT) :].startswith(token)

    grpc_reply = stub.Generate(pb.GenerateRequest(prompt=PROMPT, max_new_tokens=12, logprobs=5))
    assert grpc_reply.text == choice.text
    assert len(grpc_reply.logprobs) == len(grpc_reply.token_ids)  # eos included here
    for entry, token, value in zip(
        grpc_reply.logprobs, lps.tokens, lps.token_logprobs, strict=False
    ):
        assert entry.token == token
        assert entry.logprob == pytest.approx(value, abs=FLOAT32)
        assert len(entry.alternatives) == 5
        assert entry.alternatives[0].token_id == entry.token_id  # greedy


def test_streamed_completion_logprobs_join_to_the_unary_ones(client, model):
    knobs = dict(model=model, prompt=PROMPT, max_tokens=12, temperature=0, logprobs=2)
    unary = client.completions.create(**knobs).choices[0].logprobs
    chunks = [c for c in client.completions.create(**knobs, stream=True) if c.choices]
    parts = [c.choices[0].logprobs for c in chunks if c.choices[0].logprobs]
    assert [t for p in parts for t in p.tokens] == unary.tokens
    assert [v for p in parts for v in p.token_logprobs] == unary.token_logprobs
    assert [o for p in parts for o in p.text_offset] == unary.text_offset
    assert [d for p in parts for d in p.top_logprobs] == unary.top_logprobs


def test_echo_with_zero_tokens_scores_the_prompt(client, stub, model):
    reply = client.completions.create(
        model=model, prompt=PROMPT, max_tokens=0, echo=True, logprobs=1
    )
    (choice,) = reply.choices
    lps = choice.logprobs
    assert choice.text == PROMPT and choice.finish_reason == "length"
    assert reply.usage.completion_tokens == 0 and len(lps.tokens) == reply.usage.prompt_tokens
    assert "".join(lps.tokens) == PROMPT
    assert lps.token_logprobs[0] is None and lps.top_logprobs[0] is None
    assert lps.text_offset[0] == 0
    for offset, token in zip(lps.text_offset, lps.tokens, strict=True):
        assert PROMPT[offset:].startswith(token)
    for token, value, top in zip(
        lps.tokens[1:], lps.token_logprobs[1:], lps.top_logprobs[1:], strict=True
    ):
        assert len(top) <= 2
        check_alternatives(token, value, top, greedy=False)

    scored = stub.Generate(pb.GenerateRequest(prompt=PROMPT, max_new_tokens=0, prompt_logprobs=1))
    assert len(scored.token_ids) == 0 and len(scored.prompt_logprobs) == len(lps.tokens)
    assert not scored.prompt_logprobs[0].HasField("logprob")
    for entry, value in zip(scored.prompt_logprobs[1:], lps.token_logprobs[1:], strict=True):
        assert entry.logprob == pytest.approx(value, abs=FLOAT32)

    streamed = [
        c
        for c in client.completions.create(
            model=model, prompt=PROMPT, max_tokens=0, echo=True, logprobs=1, stream=True
        )
        if c.choices
    ]
    assert "".join(c.choices[0].text for c in streamed) == PROMPT
    assert [v for c in streamed for v in c.choices[0].logprobs.token_logprobs] == (
        lps.token_logprobs
    )


def test_echo_with_an_answer_scores_the_prompt_then_the_answer(client, model):
    # what lm-evaluation-harness' loglikelihood requests send
    reply = client.completions.create(
        model=model, prompt=PROMPT, max_tokens=1, echo=True, logprobs=1, temperature=0
    )
    (choice,) = reply.choices
    lps = choice.logprobs
    assert choice.text.startswith(PROMPT)
    # the prompt's tokens, then the one generated (the harness reads [ctxlen:-1]), eos or not
    assert len(lps.tokens) == reply.usage.prompt_tokens + 1
    assert "".join(lps.tokens).removesuffix(EOS_TEXT) == choice.text
    scored = (
        client.completions.create(model=model, prompt=PROMPT, max_tokens=0, echo=True, logprobs=1)
        .choices[0]
        .logprobs
    )
    n = len(scored.tokens)
    assert lps.token_logprobs[:n] == pytest.approx(scored.token_logprobs[:n], abs=1e-6)


def test_a_prompt_of_token_ids_scores_as_its_text(client, model, tiny_artifact):
    ids = Tokenizer.from_file(str(tiny_artifact / "tokenizer.json")).encode(PROMPT).ids
    knobs = dict(model=model, max_tokens=0, echo=True, logprobs=1)
    by_text = client.completions.create(prompt=PROMPT, **knobs).choices[0]
    for prompt in (ids, [ids]):  # an array of tokens, or a list of one
        by_ids = client.completions.create(prompt=prompt, **knobs).choices[0]
        assert by_ids.text == PROMPT
        assert by_ids.logprobs.token_logprobs == by_text.logprobs.token_logprobs
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(prompt=[1, 10**6], **knobs)
    assert error.value.body["param"] == "prompt"


def test_a_batch_of_prompts_gives_each_prompts_own_choices_in_order(client, model, tiny_artifact):
    """What lm-evaluation-harness sends with --batch_size above 1: k token-id prompts, k * n
    choices, choice prompt_index * n + i, each the choice its prompt sent alone gives."""
    tokenizer = Tokenizer.from_file(str(tiny_artifact / "tokenizer.json"))
    questions = [PROMPT, "Question: How do I reset my password?\nAnswer:"]
    prompts = [tokenizer.encode(q).ids for q in questions]
    knobs = dict(model=model, max_tokens=6, temperature=1.0, seed=99, n=2)
    batch = client.completions.create(prompt=prompts, **knobs, echo=True, logprobs=1)
    alone = [client.completions.create(prompt=p, **knobs, echo=True, logprobs=1) for p in prompts]
    assert [c.index for c in batch.choices] == [0, 1, 2, 3]
    expected = [c for reply in alone for c in reply.choices]
    assert [c.text for c in batch.choices] == [c.text for c in expected]
    for got, want in zip(batch.choices, expected, strict=True):
        assert got.logprobs.token_logprobs == pytest.approx(want.logprobs.token_logprobs)
    for i, choice in enumerate(batch.choices):  # each echoes its own prompt
        assert choice.text.startswith(questions[i // 2])
    assert batch.usage.prompt_tokens == sum(len(p) for p in prompts)  # each prompt once
    assert batch.usage.completion_tokens == sum(r.usage.completion_tokens for r in alone)

    stream = client.completions.create(
        prompt=prompts, **knobs, stream=True, stream_options={"include_usage": True}
    )
    pieces: dict[int, str] = {}
    chunks = list(stream)
    for chunk in chunks:
        for c in chunk.choices:
            pieces[c.index] = pieces.get(c.index, "") + c.text
    unechoed = [c.text[len(questions[i // 2]) :] for i, c in enumerate(batch.choices)]
    assert [pieces[i] for i in range(4)] == unechoed
    assert chunks[-1].usage == batch.usage


def test_echo_without_logprobs_only_prepends_the_prompt(client, model):
    reply = client.completions.create(
        model=model, prompt=PROMPT, max_tokens=4, echo=True, temperature=0
    )
    plain = client.completions.create(model=model, prompt=PROMPT, max_tokens=4, temperature=0)
    assert reply.choices[0].text == PROMPT + plain.choices[0].text
    assert reply.choices[0].logprobs is None


# -- n choices -------------------------------------------------------------------------------
def test_n_choices_are_seeded_from_the_request_and_usage_counts_the_prompt_once(client, model):
    knobs = dict(model=model, prompt=PROMPT, max_tokens=10, temperature=1.0, seed=1234)
    four = client.completions.create(**knobs, n=4)
    again = client.completions.create(**knobs, n=4)
    one = client.completions.create(**knobs)
    assert [c.index for c in four.choices] == [0, 1, 2, 3]
    texts = [c.text for c in four.choices]
    assert texts == [c.text for c in again.choices]  # same request + seed: same choices
    assert texts[0] == one.choices[0].text  # choice 0 keeps the request's own seed
    assert len(set(texts)) > 1  # the others got seeds of their own
    assert four.usage.prompt_tokens == one.usage.prompt_tokens
    singles = [
        client.completions.create(**{**knobs, "seed": s}) for s in _seeds(1234, 4)
    ]  # each choice is the single answer its derived seed gives
    assert [c.choices[0].text for c in singles] == texts
    assert four.usage.completion_tokens == sum(c.usage.completion_tokens for c in singles)

    stream = client.completions.create(
        **knobs, n=4, stream=True, stream_options={"include_usage": True}
    )
    pieces: dict[int, str] = {}
    chunks = list(stream)
    for chunk in chunks:
        for c in chunk.choices:
            pieces[c.index] = pieces.get(c.index, "") + c.text
    assert [pieces[i] for i in range(4)] == texts
    assert chunks[-1].usage.completion_tokens == four.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == one.usage.prompt_tokens


def _seeds(seed: int, n: int) -> list[int]:
    """The documented derivation (server/generation.py choice_seed)."""
    return [(seed + i * 0x9E3779B97F4A7C15) % 2**64 for i in range(n)]


def test_chat_n_choices_each_with_logprobs_and_verdict(client, model):
    reply = client.chat.completions.create(
        model=model,
        messages=CHAT,
        max_tokens=12,
        temperature=1.0,
        seed=5,
        n=3,
        logprobs=True,
        top_logprobs=2,
        extra_body={"handover_threshold": 0},
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    for choice in reply.choices:
        assert choice.logprobs.content
        assert choice.model_extra["handed_over"] is False


# -- chat logprobs and the hand-over ---------------------------------------------------------
def confidence_of(content) -> float:
    """UNDER_A_HALF's curve over the answer's shown logprobs (no eos among them)."""
    mean = sum(entry.logprob for entry in content) / len(content)
    return 1 / (1 + math.exp(-mean))


def test_chat_logprobs_are_real_and_carry_bytes(client, stub, model):
    ask = dict(
        model=model,
        messages=CHAT,
        max_tokens=16,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        extra_body={"handover_threshold": 0},  # never hand over: the answer is shown
    )
    reply = client.chat.completions.create(**ask)
    (choice,) = reply.choices
    content = choice.logprobs.content
    assert bytes(b for entry in content for b in entry.bytes).decode() == choice.message.content
    for entry in content:
        top = {alt.token: alt.logprob for alt in entry.top_logprobs}
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].token == entry.token  # greedy
        check_alternatives(entry.token, entry.logprob, top, greedy=True)
    extra = choice.model_extra
    assert extra["handed_over"] is False
    assert extra["confidence"] == pytest.approx(confidence_of(content), abs=1e-6)
    assert 0 < extra["confidence"] < 0.5

    answer = stub.Answer(pb.AnswerRequest(question=QUESTION, max_new_tokens=16, logprobs=3))
    assert answer.confidence == pytest.approx(extra["confidence"], abs=1e-5)
    assert [x.token for x in answer.logprobs][: len(content)] == [e.token for e in content]

    stream = client.chat.completions.create(**ask, stream=True)
    chunks = list(stream)
    streamed = [e for c in chunks if c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, e.logprob, e.bytes) for e in streamed] == [
        (e.token, e.logprob, e.bytes) for e in content
    ]
    last = chunks[-1].choices[0]
    assert last.finish_reason is not None and last.model_extra["handed_over"] is False
    assert last.model_extra["confidence"] == pytest.approx(extra["confidence"], abs=1e-9)


def test_below_the_threshold_both_doors_hand_over(client, stub, server, model):
    before = metric(server.metrics_url, "kvserve_handovers_total")
    reply = client.chat.completions.create(
        model=model,
        messages=CHAT,
        max_tokens=16,
        temperature=0,
        extra_body={"handover_threshold": 0.5},  # every answer is under 0.5 here
    )
    (choice,) = reply.choices
    assert choice.message.content == DEFAULT_TEXT and choice.model_extra["handed_over"] is True
    assert choice.logprobs is None  # logprobs were asked for internally only
    assert 0 < choice.model_extra["confidence"] < 0.5

    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=CHAT,
            max_tokens=16,
            temperature=0,
            stream=True,
            extra_body={"handover_threshold": 0.5},
        )
    )
    last = chunks[-1].choices[0].model_extra
    assert last["handed_over"] is True and last["handover_text"] == DEFAULT_TEXT
    assert all(c.choices[0].logprobs is None for c in chunks)

    answer = stub.Answer(
        pb.AnswerRequest(question=QUESTION, max_new_tokens=16, handover_threshold=0.5)
    )
    assert answer.handed_over and answer.text == DEFAULT_TEXT
    assert answer.confidence == pytest.approx(choice.model_extra["confidence"], abs=1e-5)
    assert len(answer.logprobs) == 0
    kept = stub.Answer(pb.AnswerRequest(question=QUESTION, max_new_tokens=16, handover_threshold=0))
    assert not kept.handed_over and kept.text != DEFAULT_TEXT and kept.HasField("confidence")
    after = metric(server.metrics_url, "kvserve_handovers_total")
    assert after == before + 3


# -- bad values ------------------------------------------------------------------------------
BAD_HTTP = [  # (endpoint, fields, field named)
    ("completions", {"logprobs": 6}, "logprobs"),
    ("completions", {"logprobs": -1}, "logprobs"),
    ("completions", {"logprobs": True}, "logprobs"),
    ("completions", {"echo": "yes"}, "echo"),
    ("completions", {"max_tokens": 0}, "max_tokens"),
    ("completions", {"n": 9}, "n"),
    ("completions", {"n": 0}, "n"),
    ("chat", {"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
    ("chat", {"top_logprobs": 2}, "top_logprobs"),
    ("chat", {"logprobs": 1}, "logprobs"),
    ("chat", {"n": 9}, "n"),
    ("chat", {"handover_threshold": 1.5}, "handover_threshold"),
    ("chat", {"handover_threshold": -0.1}, "handover_threshold"),
]


@pytest.mark.parametrize(
    ("endpoint", "fields", "param"), BAD_HTTP, ids=[f"{e}-{p}" for e, _, p in BAD_HTTP]
)
def test_bad_values_are_400_naming_the_field(client, model, endpoint, fields, param):
    if endpoint == "completions":
        create, base = client.completions.create, {"prompt": PROMPT, "max_tokens": 2}
    else:
        create, base = client.chat.completions.create, {"messages": CHAT, "max_tokens": 2}
    with pytest.raises(openai.BadRequestError) as error:
        create(model=model, **base, extra_body=fields)
    body = error.value.body
    assert body["param"] == param and body["message"].startswith(f"{param}:"), body


BAD_GRPC = [
    ({"logprobs": 21}, "logprobs"),
    ({"prompt_logprobs": 21}, "prompt_logprobs"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": 0, "logprobs": 2}, "max_new_tokens"),
]


@pytest.mark.parametrize(("fields", "field"), BAD_GRPC, ids=[f for _, f in BAD_GRPC])
def test_bad_grpc_values_are_invalid_argument_naming_the_field(stub, fields, field):
    for call, request in (
        (stub.Generate, pb.GenerateRequest(prompt=PROMPT, **fields)),
        (stub.Answer, pb.AnswerRequest(question=QUESTION, **fields)),
    ):
        with pytest.raises(grpc.RpcError) as error:
            call(request)
        assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details().startswith(f"{field}:")


def test_a_bad_answer_threshold_is_invalid_argument(stub):
    with pytest.raises(grpc.RpcError) as error:
        stub.Answer(pb.AnswerRequest(question=QUESTION, handover_threshold=2.0))
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("handover_threshold:")


def test_an_artifact_that_cannot_score_refuses_echo_naming_it(tiny_fused_artifact, tmp_path):
    server = ServerProcess.start(tiny_fused_artifact, tmp_path / "server.log", [], http=True)
    try:
        client = openai.OpenAI(base_url=f"{server.http_url}/v1", api_key="x", max_retries=0)
        model = read_manifest(tiny_fused_artifact).model_name
        with pytest.raises(openai.BadRequestError) as error:
            client.completions.create(
                model=model, prompt=PROMPT, max_tokens=0, echo=True, logprobs=1
            )
        assert error.value.body["param"] == "echo"
        assert "--attention kernel" in error.value.body["message"]
        # nothing to score or generate: the prompt itself, answered by the door
        echoed = client.completions.create(model=model, prompt=PROMPT, max_tokens=0, echo=True)
        assert echoed.choices[0].text == PROMPT and echoed.choices[0].finish_reason == "length"
        assert echoed.usage.completion_tokens == 0 and echoed.usage.prompt_tokens > 0
        # sampled tokens' logprobs work on every runner
        reply = client.completions.create(
            model=model, prompt=PROMPT, max_tokens=4, temperature=0, logprobs=2
        )
        assert len(reply.choices[0].logprobs.tokens) >= 1
        assert all(v <= 0 for v in reply.choices[0].logprobs.token_logprobs)
    finally:
        assert server.stop() == 0
