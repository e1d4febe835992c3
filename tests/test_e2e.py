"""End to end: train -> export -> real server on loopback -> real gRPC clients."""

from __future__ import annotations

import json
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from artifact import piece_file, read_manifest
from proto import kvserve_pb2 as pb
from proto import kvserve_pb2_grpc as pb_grpc
from tests.support.servers import serving

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stub(served):
    with grpc.insecure_channel(served.target) as channel:
        yield pb_grpc.GenerationStub(channel)


def test_answer_returns_text(stub):
    reply = stub.Answer(pb.AnswerRequest(question="How do I reset my password?", max_new_tokens=16))
    assert reply.text.strip()
    assert reply.finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH)
    assert 0 < reply.usage.completion_tokens <= 16
    assert reply.usage.prompt_tokens > 0
    assert 0 < reply.timing.time_to_first_token_seconds <= reply.timing.total_seconds
    assert reply.request_id


def test_stream_pieces_join_to_unary_text(stub):
    request = pb.GenerateRequest(
        prompt="Question: What does the red light mean?\nAnswer:",
        max_new_tokens=24,
        ignore_eos=True,
    )
    unary = stub.Generate(request)
    pieces = list(stub.GenerateStream(request))
    assert "".join(p.text for p in pieces) == unary.text
    assert [t for p in pieces for t in p.token_ids] == list(unary.token_ids)
    assert len(unary.token_ids) == 24 and unary.finish_reason == pb.FINISH_REASON_LENGTH
    assert pieces[-1].finish_reason == pb.FINISH_REASON_LENGTH
    assert pieces[-1].usage.completion_tokens == 24
    assert all(p.finish_reason == pb.FINISH_REASON_UNSPECIFIED for p in pieces[:-1])


def test_concurrent_greedy_requests_match_sequential(stub):
    prompts = [f"Question: question number {i} about shipping?\nAnswer:" for i in range(6)]
    requests = [pb.GenerateRequest(prompt=p, max_new_tokens=12, ignore_eos=True) for p in prompts]
    alone = [stub.Generate(r).token_ids for r in requests]
    futures = [stub.Generate.future(r) for r in requests]
    together = [f.result().token_ids for f in futures]
    assert together == alone


def test_seeded_sampling_is_reproducible(stub):
    request = pb.GenerateRequest(
        prompt="Question: hi\nAnswer:",
        max_new_tokens=12,
        temperature=1.0,
        top_k=20,
        seed=1234,
        ignore_eos=True,
    )
    assert stub.Generate(request).token_ids == stub.Generate(request).token_ids


def test_model_info_matches_manifest(stub, tiny_artifact):
    manifest = read_manifest(tiny_artifact)
    info = stub.GetModelInfo(pb.ModelInfoRequest())
    assert info.model_name == manifest.model_name
    assert info.num_layers == manifest.architecture.num_layers
    assert info.vocab_size == manifest.architecture.vocab_size
    assert info.max_positions == manifest.architecture.max_positions
    assert info.quantization == manifest.quantization
    assert info.eos_token_id == manifest.eos_token_id
    assert info.prompt_template == manifest.prompt_template.question
    assert dict(info.files_sha256) == manifest.files
    assert info.provider == "CPUExecutionProvider"


def test_health_is_serving(served):
    with grpc.insecure_channel(served.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "kvserve.v1.Generation"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_service(served):
    with grpc.insecure_channel(served.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        reply = next(iter(stub.ServerReflectionInfo(iter([request]))))
        names = {s.name for s in reply.list_services_response.service}
    assert {"kvserve.v1.Generation", "grpc.health.v1.Health"} <= names


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.GenerateRequest(prompt=""), "prompt"),
        (pb.GenerateRequest(prompt="hi", temperature=-0.5), "temperature"),
        (pb.GenerateRequest(prompt="hi", top_p=1.5), "top_p"),
        (pb.GenerateRequest(prompt="hi", max_new_tokens=10**6), "max_new_tokens"),
        (pb.GenerateRequest(prompt="hi", request_id="bad id!"), "request_id"),
        (pb.GenerateRequest(prompt="hi", stop=[""]), "stop"),
    ],
)
def test_bad_requests_get_invalid_argument_naming_the_field(stub, request_, field):
    with pytest.raises(grpc.RpcError) as error:
        stub.Generate(request_)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith(field)


def test_answer_with_empty_question_is_invalid(stub):
    with pytest.raises(grpc.RpcError) as error:
        stub.Answer(pb.AnswerRequest(question="  "))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "question" in error.value.details()


def test_metrics_endpoint_counts_requests(served, stub):
    import urllib.request

    stub.Generate(pb.GenerateRequest(prompt="count me", max_new_tokens=3, ignore_eos=True))
    text = urllib.request.urlopen(served.metrics_url, timeout=5).read().decode()
    assert 'kvserve_requests_total{code="OK",rpc="Generate"}' in text
    assert "kvserve_generated_tokens_total" in text
    assert 'kvserve_model_info{model="' in text


def test_serve_refuses_a_broken_artifact_with_one_line(tiny_artifact, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_artifact, broken)
    graph = piece_file(0)  # the CPU artifact's first graph file
    (broken / graph).write_bytes(b"not a graph")
    result = subprocess.run(
        [sys.executable, "-m", "server", "--model", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and graph in lines[0] and "sha256" in lines[0]
    assert "Traceback" not in result.stderr
    assert json.loads((broken / "manifest.json").read_text())["files"]


@pytest.fixture(scope="module")
def int8_kv_served(tiny_checkpoint, tmp_path_factory):
    """The tiny model exported with the opt-in int8 KV cache (fp32 weights: dynamic int8
    weights quantize activations over the whole batch, so only the cache is tested here)."""
    out = tmp_path_factory.mktemp("export-kv8") / "artifact"
    # the tiny test-preset model's answers move with any quantization: check mechanics here
    command = [
        sys.executable,
        "-m",
        "export",
        str(tiny_checkpoint),
        str(out),
        "--precision",
        "fp32",
        "--kv-cache",
        "int8",
        "--min-answer-match",
        "0",
        "--min-token-agreement",
        "0",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    with serving(out, out.parent / "server.log", ["--max-batch-size", "8"]) as server:
        yield out, server


def test_int8_kv_cache_server_batches_exactly(int8_kv_served):
    """Each row's int8 cache is its own bytes (quantized per element, fixed scales): batched
    greedy decoding, rows joining and leaving (slot moves), gives each request's tokens alone."""
    artifact, server = int8_kv_served
    assert read_manifest(artifact).graph["kv_cache"] == "int8"
    prompts = [f"Question: where is order {i} now?\nAnswer:" for i in range(6)]
    requests = [
        pb.GenerateRequest(prompt=p, max_new_tokens=4 + 3 * i, ignore_eos=True)
        for i, p in enumerate(prompts)
    ]
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.GenerationStub(channel)
        alone = [stub.Generate(r).token_ids for r in requests]
        together = [f.result().token_ids for f in [stub.Generate.future(r) for r in requests]]
    assert together == alone
    assert [len(t) for t in alone] == [4 + 3 * i for i in range(6)]
