"""TLS, mutual TLS and bearer tokens on the real server, with certificates made in the test.

Server "tls": TLS + tokens, health left open for probes. Server "mtls": client certificates
required + tokens, health closed too. Every RPC of every service (Generation, Health,
reflection) is checked without credentials.
"""

from __future__ import annotations

import signal
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from proto import kvserve_pb2 as pb
from proto import kvserve_pb2_grpc as pb_grpc
from server.auth import BearerAuthInterceptor, TokenFileError, TokenStore, bearer_token
from tests.support.reliability import (
    Certs,
    make_certs,
    metric,
    tls_channel,
    tls_token_flags,
    wait_until,
)
from tests.support.servers import serving

TOKENS = ("tok-alpha-3f9c2e", "tok-beta-77d1a0")
NEW_TOKEN = "tok-gamma-c0ffee"


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def token_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "tokens.txt"
    path.write_text(f"# kvserve clients\n{TOKENS[0]}\n\n  {TOKENS[1]}  \n")
    return path


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="module")
def tls_server(tiny_artifact, certs, token_file, tmp_path_factory):
    log = tmp_path_factory.mktemp("tls") / "server.log"
    extra = [*tls_token_flags(certs, token_file), "--log-level", "DEBUG"]
    with serving(tiny_artifact, log, extra, channel=lambda t: tls_channel(t, certs.ca)) as server:
        yield server
    text = log.read_text()
    assert "security: TLS, bearer tokens (2), health open" in text
    for secret in (*TOKENS, NEW_TOKEN):  # secrets never reach the log, even at DEBUG
        assert secret not in text


@pytest.fixture(scope="module")
def mtls_server(tiny_artifact, certs, token_file, tmp_path_factory):
    log = tmp_path_factory.mktemp("mtls") / "server.log"
    extra = [
        "--tls-cert",
        str(certs.server_cert),
        "--tls-key",
        str(certs.server_key),
        "--tls-client-ca",
        str(certs.ca),
        "--auth-token-file",
        str(token_file),
    ]
    client = lambda t: tls_channel(t, certs.ca, certs.client_cert, certs.client_key)  # noqa: E731
    with serving(tiny_artifact, log, extra, channel=client, metadata=auth(TOKENS[0])) as server:
        yield server
    assert all(t not in log.read_text() for t in TOKENS)


def every_rpc(channel: grpc.Channel, metadata=()) -> dict[str, grpc.StatusCode]:
    """Call each RPC of each service once; the status code of each."""
    gen = pb_grpc.GenerationStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = pb.GenerateRequest(prompt="Question: hi?\nAnswer:", max_new_tokens=2)
    calls = {
        "Generate": lambda: gen.Generate(request, metadata=metadata, timeout=10),
        "GenerateStream": lambda: list(gen.GenerateStream(request, metadata=metadata, timeout=10)),
        "Answer": lambda: gen.Answer(
            pb.AnswerRequest(question="hi?", max_new_tokens=2), metadata=metadata, timeout=10
        ),
        "GetModelInfo": lambda: gen.GetModelInfo(
            pb.ModelInfoRequest(), metadata=metadata, timeout=10
        ),
        "Health.Check": lambda: health.Check(
            health_pb2.HealthCheckRequest(), metadata=metadata, timeout=10
        ),
        "Health.Watch": lambda: next(
            iter(health.Watch(health_pb2.HealthCheckRequest(), metadata=metadata, timeout=10))
        ),
        "Reflection": lambda: next(
            iter(
                reflection.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                    metadata=metadata,
                    timeout=10,
                )
            )
        ),
    }
    codes = {}
    for name, rpc in calls.items():
        try:
            rpc()
            codes[name] = grpc.StatusCode.OK
        except grpc.RpcError as error:
            codes[name] = error.code()
    return codes


@pytest.mark.slow
@pytest.mark.parametrize(
    "metadata",
    [
        (),
        auth("wrong-token"),
        (("authorization", f"Basic {TOKENS[0]}"),),
        auth(""),
        (("authorization", TOKENS[0]),),
    ],
    ids=["none", "wrong", "basic-scheme", "empty", "no-scheme"],
)
def test_without_a_valid_token_every_rpc_is_unauthenticated(tls_server, certs, metadata):
    with tls_channel(tls_server.target, certs.ca) as channel:
        codes = every_rpc(channel, metadata)
    health = {k: codes.pop(k) for k in ("Health.Check", "Health.Watch")}
    assert set(codes.values()) == {grpc.StatusCode.UNAUTHENTICATED}, codes
    assert set(health.values()) == {grpc.StatusCode.OK}  # left open by --auth-exempt-health


@pytest.mark.slow
@pytest.mark.parametrize("token", TOKENS)
def test_each_listed_token_is_accepted_over_tls(tls_server, certs, token):
    with tls_channel(tls_server.target, certs.ca) as channel:
        codes = every_rpc(channel, auth(token))
    assert set(codes.values()) == {grpc.StatusCode.OK}, codes


@pytest.mark.slow
def test_plaintext_cannot_reach_a_tls_server(tls_server):
    with grpc.insecure_channel(tls_server.target) as channel, pytest.raises(grpc.RpcError) as error:
        pb_grpc.GenerationStub(channel).GetModelInfo(
            pb.ModelInfoRequest(), metadata=auth(TOKENS[0]), timeout=2
        )
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.slow
def test_sighup_reloads_the_token_file(tls_server, certs, token_file):
    original = token_file.read_text()

    def code(token: str) -> grpc.StatusCode:
        with tls_channel(tls_server.target, certs.ca) as channel:
            try:
                pb_grpc.GenerationStub(channel).GetModelInfo(
                    pb.ModelInfoRequest(), metadata=auth(token), timeout=5
                )
                return grpc.StatusCode.OK
            except grpc.RpcError as error:
                return error.code()

    try:
        assert code(NEW_TOKEN) == grpc.StatusCode.UNAUTHENTICATED
        token_file.write_text(f"{TOKENS[1]}\n{NEW_TOKEN}\n")  # alpha revoked, gamma added
        tls_server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: code(NEW_TOKEN) == grpc.StatusCode.OK, timeout=5)
        assert code(TOKENS[0]) == grpc.StatusCode.UNAUTHENTICATED
        assert code(TOKENS[1]) == grpc.StatusCode.OK
        token_file.write_text("# emptied by mistake\n")  # a bad reload keeps the last tokens
        tls_server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "token reload failed" in tls_server.log_path.read_text(), timeout=5)
        assert code(NEW_TOKEN) == grpc.StatusCode.OK
    finally:
        token_file.write_text(original)
        tls_server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: code(TOKENS[0]) == grpc.StatusCode.OK, timeout=5)
    assert tls_server.process.poll() is None


@pytest.mark.slow
def test_refused_calls_are_counted_and_access_logged(tls_server, certs):
    def refused() -> float:
        return metric(
            tls_server.metrics_url,
            "kvserve_requests_total",
            code="UNAUTHENTICATED",
            rpc="GetModelInfo",
        )

    before = refused()
    with tls_channel(tls_server.target, certs.ca) as channel:
        stub = pb_grpc.GenerationStub(channel)
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as error:
                stub.GetModelInfo(pb.ModelInfoRequest(), metadata=auth("wrong-token"), timeout=5)
            assert error.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert refused() == before + 3
    wait_until(lambda: "GetModelInfo UNAUTHENTICATED" in tls_server.log_path.read_text(), 5)


@pytest.mark.slow
def test_mtls_with_a_client_certificate_and_token(mtls_server, certs):
    with tls_channel(mtls_server.target, certs.ca, certs.client_cert, certs.client_key) as ch:
        assert set(every_rpc(ch, auth(TOKENS[1])).values()) == {grpc.StatusCode.OK}
        codes = every_rpc(ch)  # the certificate alone is not enough, health included
    assert set(codes.values()) == {grpc.StatusCode.UNAUTHENTICATED}, codes


@pytest.mark.slow
@pytest.mark.parametrize("client", ["no_certificate", "other_ca"])
def test_mtls_refuses_clients_without_a_trusted_certificate(mtls_server, certs, client):
    cert, key = (
        (None, None) if client == "no_certificate" else (certs.stranger_cert, certs.stranger_key)
    )
    channel = tls_channel(mtls_server.target, certs.ca, cert, key)
    with channel, pytest.raises(grpc.RpcError) as error:
        pb_grpc.GenerationStub(channel).GetModelInfo(
            pb.ModelInfoRequest(), metadata=auth(TOKENS[0]), timeout=3
        )
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake fails


# -- units: the token file and the header ------------------------------------------------------
def test_token_file_allows_several_tokens_and_comments(tmp_path):
    path = tmp_path / "t"
    path.write_text("# comment\none\n\n two \n")
    store = TokenStore(path)
    assert len(store) == 2 and store.accepts("one") and store.accepts("two")
    assert not store.accepts("three") and not store.accepts("") and not store.accepts("on")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "two words\n"])
def test_unusable_token_files_are_refused_without_echoing_them(tmp_path, text):
    path = tmp_path / "t"
    path.write_text(text)
    with pytest.raises(TokenFileError) as error:
        TokenStore(path)
    assert str(path) in str(error.value) and "words" not in str(error.value)


def test_bearer_header_parsing():
    assert bearer_token([("authorization", "Bearer abc")]) == "abc"
    assert bearer_token([("authorization", "bearer  abc ")]) == "abc"
    assert bearer_token([("x-other", "Bearer abc")]) is None
    assert bearer_token([("authorization", "Basic abc")]) is None
    assert bearer_token([("authorization", "Bearer ")]) is None
    assert bearer_token(None) is None


def test_interceptor_is_a_grpc_aio_server_interceptor(tmp_path):
    path = tmp_path / "t"
    path.write_text("x\n")
    assert isinstance(BearerAuthInterceptor(TokenStore(path)), grpc.aio.ServerInterceptor)
