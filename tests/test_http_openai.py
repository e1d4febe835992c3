"""The HTTP door through the official `openai` client, against a real server on loopback.

The same process serves gRPC, so every answer is checked against what the gRPC door gives
for the same request (greedy): one engine behind two front doors.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from pathlib import Path

import grpc
import httpx
import openai
import pytest

from artifact import read_manifest
from proto import kvserve_pb2 as pb
from proto import kvserve_pb2_grpc as pb_grpc
from server.process import ServerProcess
from tests.support.reliability import counted, make_certs, metric, tls_channel, tls_token_flags

pytestmark = pytest.mark.slow
PROMPT = "Question: What does the red light mean?\nAnswer:"
TOKEN = "tok-http-5e1f"


@pytest.fixture(scope="module")
def server(tiny_artifact, tmp_path_factory):
    log = tmp_path_factory.mktemp("http") / "server.log"
    extra = ["--max-batch-size", "8", "--log-format", "json"]
    process = ServerProcess.start(tiny_artifact, log, extra, http=True)
    yield process
    assert process.stop() == 0, log.read_text()[-3000:]


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


def test_models_lists_the_served_artifact(client, tiny_artifact):
    manifest = read_manifest(tiny_artifact)
    (card,) = client.models.list().data
    assert card.id == manifest.model_name and card.owned_by == "kvserve"
    assert card.model_extra["max_model_len"] == manifest.architecture.max_positions


def test_completion_streamed_pieces_join_to_the_unary_text_and_to_grpc(client, stub, model):
    knobs = dict(model=model, prompt=PROMPT, max_tokens=24, temperature=0)
    extra = {"ignore_eos": True}
    unary = client.completions.create(**knobs, extra_body=extra)
    stream = client.completions.create(
        **knobs, extra_body=extra, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    pieces = [c.choices[0].text for c in chunks if c.choices]
    grpc_reply = stub.Generate(
        pb.GenerateRequest(prompt=PROMPT, max_new_tokens=24, ignore_eos=True)
    )
    assert "".join(pieces) == unary.choices[0].text == grpc_reply.text
    assert len([p for p in pieces if p]) > 1  # it streamed
    assert unary.choices[0].finish_reason == "length"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert unary.usage.completion_tokens == 24
    assert unary.usage.prompt_tokens == grpc_reply.usage.prompt_tokens
    assert unary.usage.total_tokens == unary.usage.prompt_tokens + 24
    assert chunks[-1].choices == [] and chunks[-1].usage == unary.usage  # include_usage
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_gets_what_the_answer_rpc_gives(client, stub, model):
    question, context = "How do I reset my password?", "Accounts are managed in Settings."
    messages = [{"role": "system", "content": context}, {"role": "user", "content": question}]
    unary = client.chat.completions.create(
        model=model, messages=messages, max_tokens=20, temperature=0
    )
    stream = client.chat.completions.create(
        model=model, messages=messages, max_tokens=20, temperature=0, stream=True
    )
    chunks = list(stream)
    answer = stub.Answer(pb.AnswerRequest(question=question, context=context, max_new_tokens=20))
    text = unary.choices[0].message.content
    assert text == answer.text and text.strip()
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert unary.choices[0].message.role == "assistant"
    assert unary.usage.prompt_tokens == answer.usage.prompt_tokens
    assert unary.usage.completion_tokens == answer.usage.completion_tokens
    finish = {pb.FINISH_REASON_STOP: "stop", pb.FINISH_REASON_LENGTH: "length"}
    assert unary.choices[0].finish_reason == finish[answer.finish_reason]
    assert unary.id.startswith("chatcmpl-") and unary.object == "chat.completion"


def test_a_seeded_sample_is_the_same_on_both_doors(client, stub, model):
    knobs = dict(max_tokens=16, temperature=1.0, top_p=0.9, seed=7)
    reply = client.completions.create(model=model, prompt=PROMPT, extra_body={"top_k": 20}, **knobs)
    again = client.completions.create(model=model, prompt=PROMPT, extra_body={"top_k": 20}, **knobs)
    grpc_reply = stub.Generate(
        pb.GenerateRequest(
            prompt=PROMPT, max_new_tokens=16, temperature=1.0, top_p=0.9, seed=7, top_k=20
        )
    )
    assert reply.choices[0].text == again.choices[0].text == grpc_reply.text


BAD = [  # (endpoint, request fields, field named in the error)
    ("completions", {"prompt": ""}, "prompt"),
    ("completions", {"prompt": "hi", "max_tokens": 10**6}, "max_tokens"),
    ("completions", {"prompt": "hi", "max_tokens": 0}, "max_tokens"),
    ("completions", {"prompt": "hi", "temperature": -1}, "temperature"),
    ("completions", {"prompt": "hi", "top_p": 1.5}, "top_p"),
    ("completions", {"prompt": "hi", "stop": [""]}, "stop"),
    ("completions", {"prompt": "hi", "n": 9}, "n"),
    ("completions", {"prompt": "hi", "logprobs": 6}, "logprobs"),
    ("completions", {"prompt": "hi", "echo": 1}, "echo"),
    ("completions", {"prompt": "hi", "best_of": 3}, "best_of"),
    ("completions", {"prompt": "hi", "presence_penalty": 0.5}, "presence_penalty"),
    ("completions", {"prompt": ["a"] * 17}, "prompt"),  # a batch of 16 prompts at most
    ("completions", {"prompt": ["hi", "word " * 300]}, "prompt[1]"),  # the batch's bad one
    ("completions", {"prompt": "word " * 300}, "prompt"),  # beyond the model's context
    ("completions", {"prompt": "hi", "bogus_knob": 1}, "bogus_knob"),
    ("chat", {"messages": []}, "messages"),
    ("chat", {"messages": [{"role": "user", "content": "  "}]}, "messages[0].content"),
    (
        "chat",
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
            ]
        },
        "messages[1].role",
    ),
    ("chat", {"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    (
        "chat",
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
            ]
        },
        "messages[0].content[0].type",
    ),
    (
        "chat",
        {
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
        },
        "tools",
    ),
    (
        "chat",
        {"messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 21},
        "top_logprobs",
    ),
    (
        "chat",
        {
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_object"},
        },
        "response_format",
    ),
    (
        "chat",
        {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 10**6},
        "max_completion_tokens",
    ),
]


@pytest.mark.parametrize(("endpoint", "fields", "param"), BAD, ids=[f"{e}-{p}" for e, _, p in BAD])
def test_bad_requests_raise_bad_request_error_naming_the_field(
    client, model, endpoint, fields, param
):
    create = (
        client.completions.create if endpoint == "completions" else client.chat.completions.create
    )
    known = {k: v for k, v in fields.items() if k != "bogus_knob"}
    extra = {k: v for k, v in fields.items() if k == "bogus_knob"}
    with pytest.raises(openai.BadRequestError) as error:
        create(model=model, **known, extra_body=extra or None)
    body = error.value.body
    assert error.value.status_code == 400
    assert body["param"] == param and body["message"].startswith(f"{param}:"), body
    assert body["type"] == "invalid_request_error" and body["code"] == "INVALID_ARGUMENT"


def test_an_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as error:
        client.completions.create(model="gpt-4o", prompt="hi", max_tokens=2)
    assert error.value.body["param"] == "model"


def test_health_and_request_ids_and_metrics(server, model):
    with urllib.request.urlopen(f"{server.http_url}/health", timeout=5) as reply:
        assert reply.status == 200 and json.load(reply) == {"status": "SERVING"}
    before = metric(server.metrics_url, "kvserve_requests_total", rpc="/v1/completions", code="OK")
    body = json.dumps({"model": model, "prompt": PROMPT, "max_tokens": 3}).encode()
    request = urllib.request.Request(
        f"{server.http_url}/v1/completions",
        data=body,
        headers={"content-type": "application/json", "x-request-id": "http-rid-1"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.headers["x-request-id"] == "http-rid-1"
        assert json.load(reply)["id"] == "cmpl-http-rid-1"
    name = "kvserve_requests_total"
    after = counted(server.metrics_url, before + 1, name, rpc="/v1/completions", code="OK")
    assert after == before + 1
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(x) for x in server.log_path.read_text().splitlines() if x[:1] == "{"]
        access = [
            x
            for x in lines
            if x.get("request_id") == "http-rid-1" and x["logger"] == "kvserve.access"
        ]
        if access:
            break
        time.sleep(0.05)
    (line,) = access
    assert (line["rpc"], line["code"], line["http_status"]) == ("/v1/completions", "OK", 200)
    assert line["generated_tokens"] == 3 and line["prompt_tokens"] > 0


# -- bearer tokens and TLS: the same flags as gRPC --------------------------------------------
@pytest.fixture(scope="module")
def secure_server(tiny_artifact, tmp_path_factory):
    directory = tmp_path_factory.mktemp("http-tls")
    certs = make_certs(directory / "certs")
    tokens = directory / "tokens.txt"
    tokens.write_text(f"{TOKEN}\n")
    extra = tls_token_flags(certs, tokens)
    process = ServerProcess.start(
        tiny_artifact,
        directory / "server.log",
        extra,
        http=True,
        channel=lambda t: tls_channel(t, certs.ca),
    )
    yield process, certs.ca
    assert process.stop() == 0
    assert TOKEN not in (directory / "server.log").read_text()


def tls_client(server: ServerProcess, ca: Path, key: str) -> openai.OpenAI:
    url = f"https://localhost:{server.http_port}/v1"
    http = httpx.Client(verify=ssl.create_default_context(cafile=ca))
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, http_client=http)


def test_with_auth_on_only_a_listed_token_gets_through_over_tls(secure_server, model):
    server, ca = secure_server
    reply = tls_client(server, ca, TOKEN).completions.create(
        model=model, prompt=PROMPT, max_tokens=4
    )
    assert reply.usage.completion_tokens >= 1
    with pytest.raises(openai.AuthenticationError) as error:
        tls_client(server, ca, "wrong-token").models.list()
    assert error.value.status_code == 401 and error.value.body["code"] == "UNAUTHENTICATED"
    missing = httpx.get(
        f"https://localhost:{server.http_port}/v1/models",
        verify=ssl.create_default_context(cafile=ca),
    )
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["message"].startswith("missing bearer token")
    # health is left open for probes (--auth-exempt-health), as on gRPC
    health = httpx.get(
        f"https://localhost:{server.http_port}/health", verify=ssl.create_default_context(cafile=ca)
    )
    assert health.status_code == 200
    refused = counted(
        server.metrics_url, 2, "kvserve_requests_total", rpc="/v1/models", code="UNAUTHENTICATED"
    )
    assert refused == 2


def test_plain_http_cannot_reach_a_tls_server(secure_server):
    server, _ = secure_server
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{server.http_port}/health", timeout=5)
