"""`kvserve-loadtest --api openai`: the same load models and report through an OpenAI HTTP
server, checked against a stand-in server on a known clock (first chunk after 50 ms, then
one every 10 ms) and against kvserve's own HTTP door."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest.channels import Security
from loadtest.cli import main as loadtest_main
from loadtest.config import LoadConfig
from loadtest.run import run_load_sync
from server.process import ServerProcess
from tests.support.fake_openai import FIRST_S, GAP_S, MODEL, TOKENS, FakeOpenAI
from tests.support.handover import UNDER_A_HALF, calibrated_copy
from tests.support.machine import OtherJobs


@pytest.fixture(scope="module")
def fake():
    server = FakeOpenAI()
    yield server
    server.stop()


def config_for(url: str, tmp_path: Path, **overrides) -> LoadConfig:
    settings = dict(
        api="openai",
        concurrency=4,
        requests=20,
        max_new_tokens=TOKENS,
        out_dir=tmp_path,
        progress=False,
    )
    return LoadConfig(targets=(url,), **{**settings, **overrides})


def within_the_clock(result) -> bool:
    f = result.figures
    return FIRST_S <= f.ttft.p50 < 1.25 * FIRST_S and abs(f.itl.p50 - GAP_S) <= 0.1 * GAP_S


def test_ttft_and_itl_are_what_the_stand_in_server_does(fake, tmp_path):
    config = config_for(fake.url, tmp_path, warmup=4, security=Security(token="sk-test"))
    for _ in range(3):  # retries: other jobs share the CPUs, now and then
        with OtherJobs(fake.process.pid) as others:
            result = run_load_sync(config)
        if within_the_clock(result):
            break
    else:
        if excuse := others.excuse():  # no verdict while other jobs hold the CPUs
            pytest.skip(f"timing off in 3 runs ({result.figures.ttft.p50:.4f} s): {excuse}")
    f = result.figures
    print(f"\nstand-in OpenAI server: TTFT {f.ttft.scaled(1e3)}, ITL {f.itl.scaled(1e3)}")
    assert f.status_counts == {"OK": 20}
    assert all(r.rpc == "/v1/completions" and r.finish_reason == "LENGTH" for r in result.records)
    assert all(r.output_tokens == TOKENS and len(r.itl_s) == TOKENS - 1 for r in result.records)
    assert f.prompt_tokens == 20 * 7  # from the usage chunk
    assert FIRST_S <= f.ttft.p50 < 1.25 * FIRST_S, f.ttft  # never early; no gross offset
    assert f.itl.p50 == pytest.approx(GAP_S, rel=0.1), f.itl
    assert f.e2e.p50 == pytest.approx(FIRST_S + (TOKENS - 1) * GAP_S, rel=0.2), f.e2e
    assert result.model_info["model_name"] == MODEL
    seen = fake.seen()
    assert seen["authorization"] == "Bearer sk-test"
    body = seen["body"]
    assert body["model"] == MODEL and body["stream"] and body["max_tokens"] == TOKENS
    assert body["stream_options"] == {"include_usage": True}
    assert not {"top_k", "repetition_penalty", "ignore_eos"} & set(body)  # plain OpenAI only


def test_questions_go_to_chat_and_unary_has_no_ttft(fake, tmp_path):
    workload = tmp_path / "qa.jsonl"
    workload.write_text('{"question": "Where is it?", "context": "Orders ship daily."}\n')
    result = run_load_sync(
        config_for(fake.url, tmp_path, prompts_file=workload, requests=4, ignore_eos=True)
    )
    assert result.figures.status_counts == {"OK": 4}
    assert {r.rpc for r in result.records} == {"/v1/chat/completions"}
    body = fake.seen()["body"]
    assert body["messages"] == [
        {"role": "system", "content": "Orders ship daily."},
        {"role": "user", "content": "Where is it?"},
    ]
    assert body["ignore_eos"] is True  # a kvserve knob goes along when it is set
    unary = run_load_sync(config_for(fake.url, tmp_path, rpc="unary", requests=4))
    assert unary.figures.status_counts == {"OK": 4}
    assert all(r.ttft_s is None and r.output_tokens == TOKENS for r in unary.records)
    assert fake.seen()["body"]["stream"] is False


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--api", "openai", "--target", "127.0.0.1:8000"], "expected http://HOST:PORT"),
        (["--target", "http://127.0.0.1:8000"], "add --api openai"),
        (["--api", "rest", "--target", "http://127.0.0.1:8000"], "--api"),
    ],
)
def test_a_target_of_the_wrong_kind_is_one_line(args, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        loadtest_main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and says in err[0], err


def test_an_unreachable_http_target_is_exit_2(tmp_path, capsys):
    code = loadtest_main(
        [
            "--api",
            "openai",
            "--target",
            "http://127.0.0.1:1",
            "--requests",
            "1",
            "--connect-timeout",
            "2",
            "--no-progress",
            "--out",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "cannot list the models of http://127.0.0.1:1" in err


@pytest.mark.slow
def test_cli_against_kvserves_http_door(tiny_artifact, tmp_path):
    server = ServerProcess.start(
        tiny_artifact, tmp_path / "server.log", ["--max-batch-size", "8"], http=True
    )
    try:
        code = loadtest_main(
            [
                "--api",
                "openai",
                "--target",
                server.http_url,
                "--concurrency",
                "4",
                "--requests",
                "12",
                "--max-new-tokens",
                "5",
                "--ignore-eos",
                "--metrics-url",
                server.metrics_url,
                "--no-progress",
                "--no-html",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        assert code == 0
        report = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
        assert report["requests"]["ok"] == 12 and report["status_counts"] == {"OK": 12}
        assert report["figures"]["output_tokens"] == 60
        figures = report["server"]
        assert figures["requests_by_code"] == {"/v1/completions OK": 12}
        assert figures["counters"]["generated_tokens"] == 60
        assert report["model"]["model_name"] == report["model"]["id"]
        assert report["config"]["api"] == "openai"
    finally:
        assert server.stop() == 0


@pytest.mark.slow
def test_the_handover_share_through_both_doors_of_kvserve(tiny_artifact, tmp_path):
    """Questions to a real kvserve (a known calibration): chat completions over HTTP and the
    Answer RPC over gRPC each report the share handed over, as the server counted it."""
    artifact = calibrated_copy(tiny_artifact, tmp_path / "artifact", UNDER_A_HALF)
    server = ServerProcess.start(artifact, tmp_path / "server.log", [], http=True)
    questions = tmp_path / "questions.jsonl"
    asked = ["How do I reset my password?", "Where is my order?", "Is it waterproof?"]
    questions.write_text("".join(json.dumps({"question": q}) + "\n" for q in asked))
    try:
        for n, door in enumerate(
            (
                ["--api", "openai", "--target", server.http_url],
                ["--rpc", "unary", "--target", server.target],
            )
        ):
            out = tmp_path / f"out{n}"
            code = loadtest_main(
                [
                    *door,
                    "--prompts-file",
                    str(questions),
                    "--concurrency",
                    "3",
                    "--requests",
                    "9",
                    "--max-new-tokens",
                    "8",
                    "--metrics-url",
                    server.metrics_url,
                    "--no-progress",
                    "--out",
                    str(out),
                ]
            )
            assert code == 0
            report = json.loads(next(out.glob("*.json")).read_text())
            rpc = "/v1/chat/completions" if n == 0 else "Answer"
            assert report["server"]["requests_by_code"] == {f"{rpc} OK": 9}
            handover = report["figures"]["handover"]
            assert handover["answers"] == handover["judged"] == 9
            assert handover["handed_over"] == report["server"]["counters"]["handovers"]
            assert handover["share"] == handover["handed_over"] / 9
            assert 0 < handover["confidence"]["mean"] < 0.5  # sigmoid of a mean logprob
            html = next(out.glob("*.html")).read_text()
            assert "hand-over (answers given to a person)" in html
    finally:
        assert server.stop() == 0
