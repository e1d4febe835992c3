"""loadtest: pure figures with fixed inputs, and whole runs against a fake Generation server.

The fake server (tests/support/fake_server.py, the `fake_server` fixture) streams on a
fixed clock (first token after 50 ms, then one every 10 ms), so what the load tester
measures can be checked against the truth.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.cli import parse_args
from loadtest.client import connect
from loadtest.config import DEFAULT_REQUESTS, LoadConfig
from loadtest.errors import TargetUnreachable
from loadtest.measure import token_latencies
from loadtest.prompts import Prompt, PromptsError, read_prompts_file
from loadtest.record import RequestRecord
from loadtest.run import LoadResult, run_load_sync
from loadtest.stats import Distribution, Figures, compute_figures
from tests.support.fake_server import FIRST_S, GAP_S, TOKENS, FakeServer
from tests.support.machine import OtherJobs

ROOT = Path(__file__).resolve().parents[1]


def config_for(target: str, tmp_path: Path, **overrides) -> LoadConfig:
    settings = dict(concurrency=4, requests=20, max_new_tokens=TOKENS, out_dir=tmp_path)
    return LoadConfig(targets=(target,), progress=False, **{**settings, **overrides})


# ---------------------------------------------------------------- pure figures


def test_distribution_of_fixed_values():
    d = Distribution.of([0.4, 0.1, 0.3, 0.2])
    assert d.count == 4
    assert d.mean == pytest.approx(0.25)
    assert d.p50 == pytest.approx(0.25)
    assert d.p90 == pytest.approx(0.37)  # linear interpolation, numpy's default
    assert d.p95 == pytest.approx(0.385)
    assert d.p99 == pytest.approx(0.397)
    assert d.max == pytest.approx(0.4)
    ms = d.scaled(1e3)
    assert (ms.count, ms.mean, ms.max) == (4, pytest.approx(250.0), pytest.approx(400.0))


def test_distribution_of_nothing_is_empty_not_nan():
    assert Distribution.of([]) == Distribution(0, None, None, None, None, None, None)
    assert Distribution.of([]).scaled(1e3).values() == (None,) * 6


def test_token_latencies_spread_a_gap_over_the_tokens_it_brought():
    arrivals = [(1.05, 1), (1.06, 1), (1.08, 2), (1.11, 3)]
    ttft, itl = token_latencies(1.0, arrivals)
    assert ttft == pytest.approx(0.05)
    assert itl == pytest.approx([0.01, 0.01, 0.01, 0.01, 0.01, 0.01])
    assert token_latencies(1.0, []) == (None, [])


def record(index: int, status: str = "OK", **kw) -> RequestRecord:
    base = dict(rpc="GenerateStream", start_s=0.0, e2e_s=1.0, ttft_s=0.1, output_tokens=10)
    return RequestRecord(index=index, status=status, **{**base, **kw})


def test_tpot_is_time_after_the_first_token_per_later_token():
    assert record(0, e2e_s=1.0, ttft_s=0.1, output_tokens=10).tpot_s == pytest.approx(0.1)
    assert record(0, output_tokens=1).tpot_s is None
    assert record(0, ttft_s=None).tpot_s is None


def test_figures_count_successes_for_latency_and_every_request_by_status():
    records = [
        record(0, e2e_s=1.0, ttft_s=0.1, itl_s=[0.1] * 9, output_tokens=10, prompt_tokens=5),
        record(1, e2e_s=2.0, ttft_s=0.2, itl_s=[0.2] * 9, output_tokens=10, prompt_tokens=5),
        record(2, rpc="Answer", e2e_s=3.0, ttft_s=None, output_tokens=4, prompt_tokens=6),
        record(3, "RESOURCE_EXHAUSTED", e2e_s=0.001, ttft_s=None, output_tokens=0),
        record(4, "DEADLINE_EXCEEDED", e2e_s=9.0, ttft_s=5.0, output_tokens=3),
        record(5, "RESOURCE_EXHAUSTED", e2e_s=0.002, ttft_s=None, output_tokens=0),
    ]
    f = compute_figures(records, wall_s=2.0)
    assert (f.requests, f.ok, f.errors) == (6, 3, 3)
    assert f.status_counts == {"OK": 3, "RESOURCE_EXHAUSTED": 2, "DEADLINE_EXCEEDED": 1}
    assert list(f.status_counts) == ["OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"]
    assert (f.ttft.count, f.ttft.mean, f.ttft.max) == (2, pytest.approx(0.15), 0.2)
    assert (f.itl.count, f.itl.p50) == (18, pytest.approx(0.15))
    assert f.tpot.count == 2 and f.tpot.mean == pytest.approx((0.1 + 0.2) / 2)
    assert (f.e2e.count, f.e2e.mean, f.e2e.max) == (3, pytest.approx(2.0), 3.0)
    assert f.request_throughput == pytest.approx(1.5)
    assert (f.output_tokens, f.prompt_tokens) == (24, 16)
    assert f.output_token_throughput == pytest.approx(12.0)


def test_figures_of_no_requests():
    f = compute_figures([], wall_s=0.0)
    assert (f.requests, f.ok, f.request_throughput, f.status_counts) == (0, 0, 0.0, {})
    assert f.e2e.count == 0


# ---------------------------------------------------------------- options and workload


def test_options_come_from_env_and_flags_win(monkeypatch):
    monkeypatch.setenv("KVSERVE_TARGET", "h:1,[::1]:2")
    monkeypatch.setenv("KVSERVE_CONCURRENCY", "7")
    monkeypatch.setenv("KVSERVE_IGNORE_EOS", "true")
    config = parse_args([])
    assert (config.targets, config.concurrency, config.ignore_eos) == (("h:1", "[::1]:2"), 7, True)
    assert parse_args(["--concurrency", "3", "--no-ignore-eos"]).concurrency == 3
    assert parse_args(["--no-ignore-eos"]).ignore_eos is False


def test_requests_default_only_without_duration():
    assert parse_args(["--target", "h:1"]).requests == DEFAULT_REQUESTS
    config = parse_args(["--target", "h:1", "--duration", "5"])
    assert (config.requests, config.duration_s) == (None, 5.0)


def test_prompts_file_lines(tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_text('{"prompt": "Hello"}\n\n{"question": "Why?", "context": "c"}\n')
    assert read_prompts_file(path) == [Prompt("Hello"), Prompt("Why?", question=True, context="c")]
    path.write_text('{"prompt": "ok"}\n{"text": "no"}\n')
    with pytest.raises(PromptsError, match="line 2: expected"):
        read_prompts_file(path)
    path.write_text("not json\n")
    with pytest.raises(PromptsError, match="line 1: not JSON"):
        read_prompts_file(path)


@pytest.mark.parametrize(
    "args, says",
    [
        (["--target", "localhost"], "expected HOST:PORT"),
        (["--target", "h:99999"], "port must be 1-65535"),
        (["--target", "127.0.0.1:1", "--concurrency", "0"], "--concurrency must be >= 1"),
        (["--target", "127.0.0.1:1", "--prompts-file", "/no/such.jsonl"], "no such file"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(args, says):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVSERVE_")}
    out = subprocess.run(
        [sys.executable, "-m", "loadtest", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], out.stderr


def test_cli_unreachable_target_is_exit_2(tmp_path, capsys):
    from loadtest.cli import main

    # port 1 on loopback: nothing listens there
    code = main(["--target", "127.0.0.1:1", "--connect-timeout", "0.3", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot connect to 127.0.0.1:1" in err[0]


# ---------------------------------------------------------------- against the fake server


def timed_runs(fake_server: FakeServer, tmp_path: Path) -> tuple[float, LoadResult]:
    """(the stack's own cost, the measured run).

    Client and server here are both Python on a small shared machine, so a token reaches the
    client 1-3 ms after the fake sends it. That cost is measured, not guessed: TTFT of
    streams whose first token comes after 5 ms, less 5 ms, under the same load."""
    short = run_load_sync(config_for(fake_server.target, tmp_path, prompt="first_ms=5", warmup=4))
    result = run_load_sync(config_for(fake_server.target, tmp_path, warmup=4))
    return short.figures.ttft.p50 - 0.005, result


def timing_within_5_percent(stack_s: float, f: Figures) -> bool:
    return (
        0 <= stack_s < 0.2 * FIRST_S
        and abs(f.ttft.p50 - stack_s - FIRST_S) <= 0.05 * FIRST_S
        and abs(f.itl.p50 - GAP_S) <= 0.05 * GAP_S
    )


def test_measures_what_the_fake_server_does(fake_server, tmp_path):
    for _ in range(3):  # retries: other jobs share the CPUs, now and then
        with OtherJobs(fake_server.process.pid) as others:
            stack_s, result = timed_runs(fake_server, tmp_path)
        if timing_within_5_percent(stack_s, result.figures):
            break
    else:
        if excuse := others.excuse():  # no verdict while other jobs hold the CPUs
            pytest.skip(f"timing off by over 5% in 3 runs (stack {stack_s:.4f} s): {excuse}")
    f = result.figures
    print(f"stack {stack_s * 1e3:.2f} ms, TTFT {f.ttft.scaled(1e3)}, ITL {f.itl.scaled(1e3)}")
    assert f.status_counts == {"OK": 20}
    assert [r.index for r in result.records] == list(range(20))
    assert all(r.output_tokens == TOKENS and len(r.itl_s) == TOKENS - 1 for r in result.records)
    assert all(r.finish_reason == "LENGTH" and r.prompt_tokens > 0 for r in result.records)
    assert f.output_tokens == 20 * TOKENS
    # The truth: first token 50 ms after the call reaches the fake, then one every 10 ms.
    assert 0 <= stack_s < 0.2 * FIRST_S, stack_s
    assert FIRST_S <= f.ttft.p50 < 1.2 * FIRST_S, f.ttft  # never early; no gross offset
    assert f.ttft.p50 - stack_s == pytest.approx(FIRST_S, rel=0.05), (f.ttft, stack_s)
    assert f.itl.p50 == pytest.approx(GAP_S, rel=0.05), f.itl
    assert f.itl.count == 20 * (TOKENS - 1)
    assert f.tpot.p50 == pytest.approx(GAP_S, rel=0.05), f.tpot
    e2e = FIRST_S + (TOKENS - 1) * GAP_S
    assert f.e2e.p50 - stack_s == pytest.approx(e2e, rel=0.05), f.e2e
    # 4 workers, one request per 140 ms each: about 28 req/s, less the client's own overhead
    assert 0.7 * 4 / e2e < f.request_throughput <= 4 / e2e
    assert f.output_token_throughput == pytest.approx(f.request_throughput * TOKENS)


def test_cli_run_writes_json_and_csv(fake_server, tmp_path, capsys):
    from loadtest.cli import main

    before = fake_server.calls()
    workload = tmp_path / "mixed.jsonl"
    workload.write_text('{"prompt": "Hello there"}\n{"question": "How?"}\n')
    args = [
        "--target",
        fake_server.target,
        "--concurrency",
        "2",
        "--requests",
        "6",
        "--warmup",
        "2",
        "--max-new-tokens",
        "10",
        "--prompts-file",
        str(workload),
        "--no-progress",
        "--out",
        str(tmp_path / "reports"),
    ]
    assert main(args) == 0
    stdout = capsys.readouterr().out.strip().splitlines()
    assert "TTFT" in "\n".join(stdout) and "status        OK 6" in stdout
    # the fake server answers every Answer (confidence 0.75 >= 0.5); streams are not judged
    handover = "hand-over     0 of 3 answers handed over (0.0%); confidence mean 0.75"
    assert any(line.startswith(handover) for line in stdout), stdout
    assert stdout[-1].startswith("report: ")
    json_path = Path(stdout[-1].removeprefix("report: "))
    assert json_path.parent == tmp_path / "reports" and json_path.suffix == ".json"

    report = json.loads(json_path.read_text())
    assert report["schema"] == "kvserve-loadtest/2"
    assert report["config"]["concurrency"] == 2 and report["config"]["requests"] == 6
    assert report["status_counts"] == {"OK": 6}
    assert report["requests"] == {"total": 6, "ok": 6, "errors": 0}
    assert report["warmup"] == {"requests": 2, "ok": 2}
    assert report["started_at"] <= report["finished_at"]
    figures = report["figures"]
    assert figures["ttft_ms"]["count"] == 3  # the streamed half; Answer has no TTFT
    assert figures["e2e_ms"]["count"] == 6
    # accuracy is test_measures_what_the_fake_server_does's job (it measures the client's own
    # overhead); 3 samples on a shared machine only show this is the streamed TTFT
    assert FIRST_S * 1e3 <= figures["ttft_ms"]["p50"] < 3 * FIRST_S * 1e3
    assert figures["output_tokens"] == 3 * TOKENS + 3 * 3
    assert figures["handover"]["answers"] == figures["handover"]["judged"] == 3
    assert figures["handover"]["handed_over"] == 0 and figures["handover"]["share"] == 0.0

    with (json_path.parent / report["csv"]).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["index"] for r in rows] == [str(i) for i in range(6)]
    assert [r["rpc"] for r in rows] == ["GenerateStream", "Answer"] * 3
    assert {r["status"] for r in rows} == {"OK"}
    assert rows[0]["ttft_ms"] and not rows[1]["ttft_ms"]
    assert [r["handed_over"] for r in rows[:2]] == ["", "0"]
    assert [r["confidence"] for r in rows[:2]] == ["", "0.7500"]
    assert 140 <= float(rows[0]["e2e_ms"]) < 3 * 140  # 50 ms + 9 x 10 ms, plus the stack
    assert fake_server.calls() - before == 6 + 2  # measured + warmup


def test_resource_exhausted_is_counted_not_fatal(tmp_path):
    server = FakeServer("--reject-every", "4")
    try:
        result = run_load_sync(config_for(server.target, tmp_path))
    finally:
        server.stop()
    f = result.figures
    assert f.status_counts == {"OK": 15, "RESOURCE_EXHAUSTED": 5}
    assert (f.requests, f.ok, f.errors) == (20, 15, 5)
    rejected = [r for r in result.records if not r.ok]
    assert {r.error for r in rejected} == {"queue full"}
    assert all(r.ttft_s is None and r.output_tokens == 0 for r in rejected)
    assert (f.ttft.count, f.e2e.count, f.output_tokens) == (15, 15, 15 * TOKENS)


def test_deadline_exceeded_everywhere_exits_1(fake_server, tmp_path, capsys):
    from loadtest.cli import main

    args = [
        "--target",
        fake_server.target,
        "--requests",
        "4",
        "--timeout",
        "0.08",
        "--no-progress",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 1
    out = capsys.readouterr()
    assert "no request succeeded" in out.err
    report = json.loads(Path(out.out.strip().splitlines()[-1].removeprefix("report: ")).read_text())
    assert report["status_counts"] == {"DEADLINE_EXCEEDED": 4}


def test_duration_bounds_the_run(fake_server, tmp_path):
    result = run_load_sync(config_for(fake_server.target, tmp_path, requests=None, duration_s=0.4))
    # 2 waves of 4 start before 0.28 s, a third before 0.4 s; in-flight ones finish
    assert 8 <= result.figures.requests <= 16
    assert result.wall_s < 0.4 + 1.0  # loose: a busy box; an unbounded run never ends
    assert result.figures.ok == result.figures.requests


def test_requests_go_round_robin_to_several_targets(fake_server, tmp_path):
    other = FakeServer()
    try:
        before = fake_server.calls()
        config = config_for(fake_server.target, tmp_path, requests=8, concurrency=4)
        result = run_load_sync(
            dataclasses.replace(config, targets=(fake_server.target, other.target))
        )
        assert result.figures.status_counts == {"OK": 8}
        assert (fake_server.calls() - before, other.calls()) == (4, 4)
    finally:
        other.stop()


def test_client_helper_answers_and_describes_the_model(fake_server):
    with connect(fake_server.target) as client:
        text, reply = client.answer("How do I reset?", max_new_tokens=8, temperature=0.0)
        assert text == "answer to How do I reset?"
        assert not reply.handed_over and reply.confidence == 0.75
        assert reply.usage.completion_tokens == 3
        text, reply = client.answer("How do I reset?", handover_threshold=1.0)  # always
        assert text == "a person will answer" and reply.handed_over
        assert client.model_info().model_name == "fake"
        assert "".join(client.stream("Hi", max_new_tokens=10)) == "".join(
            f" t{i}" for i in range(TOKENS)
        )
        with pytest.raises(ValueError):
            client.answer("q", no_such_knob=1)


def test_client_helper_unreachable():
    with pytest.raises(TargetUnreachable, match="127.0.0.1:1"):
        connect("127.0.0.1:1", ready_timeout_s=0.3)
