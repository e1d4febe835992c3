"""Whole CLI runs against the fake server, read back from what they leave: the JSON (model
info, every figure, goodput, server /metrics beside), the per-request CSV, the HTML file,
loud warnings, the workloads (bundled data through the model's template, synthetic lengths,
sampling knobs) and `kvserve-loadtest compare` on two real runs."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from loadtest.cli import main
from loadtest.config import LoadConfig
from loadtest.prompts import WORDS, synthetic_workload
from loadtest.specs import parse_length
from tests.support.fake_server import FIRST_S, TOKENS, FakeServer

TEMPLATE = "Question: {question}\nAnswer:"


@pytest.fixture(scope="module")
def fake():
    with FakeServer("--metrics", "--template", TEMPLATE) as server:
        yield server


def run_cli(capsys, *args: str) -> tuple[int, dict | None, str, str]:
    """(exit code, the JSON report, stdout, stderr)."""
    code = main([*args, "--no-progress"] if "--progress" not in args else list(args))
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    report = None
    if lines and lines[-1].startswith("report: "):
        report = json.loads(Path(lines[-1].removeprefix("report: ")).read_text())
        report["_path"] = lines[-1].removeprefix("report: ")
    return code, report, out, err


def read_csv(report: dict) -> list[dict]:
    path = Path(report["_path"]).parent / report["csv"]
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_open_loop_bundled_questions_with_slo_and_server_metrics(fake, tmp_path, capsys):
    code, r, out, err = run_cli(
        capsys,
        "--target",
        fake.target,
        "--rate",
        "100",
        "--requests",
        "40",
        "--warmup",
        "10",
        "--bundled",
        "--slo",
        "ttft=60ms,e2e=1s",
        "--metrics-url",
        fake.metrics_url,
        "--out",
        str(tmp_path),
    )
    assert code == 0, err
    # a CLIENT LAG warning speaks of this machine's client (a stall of a few ms in a 40-request
    # run is enough), not of the report: the self-check has its own tests; nothing else warns
    assert r["schema"] == "kvserve-loadtest/2"
    assert [w for w in r["warnings"] if not w.startswith("CLIENT LAG")] == []
    assert r["model"]["model_name"] == "fake" and r["model"]["prompt_template"] == TEMPLATE
    assert r["config"]["load_model"] == "open loop, poisson arrivals at 100 req/s"
    assert r["requests"] == {"total": 40, "ok": 40, "errors": 0}
    assert r["warmup"] == {"requests": 10, "ok": 10}
    f = r["figures"]
    assert set(f["ttft_ms"]) == {"count", "mean", "p50", "p90", "p95", "p99", "max"}
    assert f["ttft_ms"]["count"] == 40  # questions streamed through the template: TTFT too
    assert FIRST_S * 1e3 <= f["ttft_ms"]["p50"] < 3 * FIRST_S * 1e3  # (accuracy: test_loadtest)
    assert f["goodput"]["slo"] == {"ttft_s": 0.06, "e2e_s": 1.0}
    assert 0 < f["goodput"]["good"] <= 40 and f["goodput"]["rate_rps"] > 0
    assert f["send"]["send_rate_rps"] == pytest.approx(100, rel=0.15)  # 40 Poisson gaps
    assert f["send"]["lag_ms"]["count"] == 40
    assert f["total_token_throughput_tps"] > f["output_token_throughput_tps"]
    server = r["server"]
    assert server["requests_by_code"] == {"GenerateStream OK": 50}  # warmup included
    assert server["counters"]["generated_tokens"] == 50 * TOKENS
    assert server["histograms"]["ttft"]["count"] == 50
    assert 0.04 <= server["histograms"]["ttft"]["p50"] <= 0.06  # buckets (0.04, 0.06]
    assert "srv TTFT" in out and "goodput" in out and "send lag" in out
    rows = read_csv(r)
    assert [row["rpc"] for row in rows] == ["GenerateStream"] * 40
    assert all(int(row["prompt_tokens"]) > 3 for row in rows)  # "Question: ... Answer:"
    assert {row["good"] for row in rows} <= {"0", "1"} and rows[0]["lag_ms"] != ""
    assert {row["target"] for row in rows} == {fake.target}
    assert r["timeseries"]["bucket_s"] > 0 and sum(r["timeseries"]["in_flight_max"]) > 0
    html = (Path(r["_path"]).parent / r["html"]).read_text()
    assert html.count("<svg") == 8 and "CDF of ITL" in html and "Server (/metrics" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", html)  # nothing to fetch


def test_unary_synthetic_lengths_and_sampling_knobs(fake, tmp_path, capsys):
    code, r, _, err = run_cli(
        capsys,
        "--target",
        fake.target,
        "--target",
        fake.target,
        "--rpc",
        "unary",
        "--requests",
        "20",
        "--synthetic-input",
        "12",
        "--synthetic-output",
        "uniform:3:9",
        "--top-k",
        "7",
        "--top-p",
        "0.5",
        "--repetition-penalty",
        "1.2",
        "--stop",
        "END",
        "--sampling-seed",
        "100",
        "--temperature",
        "0.7",
        "--out",
        str(tmp_path),
        "--progress",
    )
    assert code == 0, err
    assert "loadtest" in err and "in_flight" in err  # the live progress line
    rows = read_csv(r)
    assert {row["rpc"] for row in rows} == {"Generate"}
    assert all(3 <= int(row["output_tokens"]) <= 9 for row in rows)
    assert len({row["output_tokens"] for row in rows}) > 1
    assert {row["prompt_tokens"] for row in rows} == {"12"}  # 12 words
    assert r["figures"]["ttft_ms"]["count"] == 0 and r["figures"]["e2e_ms"]["count"] == 20
    knobs = json.loads(fake.facts()["knobs"])
    assert knobs["top_k"] == 7 and knobs["stop"] == ["END"] and knobs["ignore_eos"] is True
    assert knobs["top_p"] == pytest.approx(0.5) and knobs["temperature"] == pytest.approx(0.7)
    assert knobs["repetition_penalty"] == pytest.approx(1.2)
    index = int(knobs["request_id"].rsplit("-", 1)[1])
    assert knobs["seed"] == 100 + index  # per-request seed
    assert r["config"]["targets"] == [fake.target, fake.target]


def test_synthetic_prompts_are_exact_with_the_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([" ".join(WORDS[:40])] * 50, trainer)
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    config = LoadConfig(
        targets=("h:1",), requests=30, synthetic_input=parse_length("uniform:5:40"), tokenizer=path
    )
    prompts = synthetic_workload(config)
    counts = [len(tok.encode(p.text).ids) for p in prompts]
    wanted = parse_length("uniform:5:40").sample(__import__("numpy").random.default_rng(0), 30)
    assert counts == wanted.tolist()


def test_a_lagging_client_says_so_loudly(fake, tmp_path, capsys):
    code, r, out, err = run_cli(
        capsys,
        "--target",
        fake.target,
        "--rate",
        "200",
        "--requests",
        "20",
        "--rpc",
        "unary",
        "--lag-warn-ms",
        "0.0001",
        "--out",
        str(tmp_path),
    )
    assert code == 0
    assert len(r["warnings"]) == 1 and r["warnings"][0].startswith("CLIENT LAG")
    assert "WARNING: CLIENT LAG" in out and "!!! CLIENT LAG" in err
    html = (Path(r["_path"]).parent / r["html"]).read_text()
    assert 'class="warn"' in html and "CLIENT LAG" in html


def test_compare_two_real_runs(fake, tmp_path, capsys):
    args = [
        "--requests",
        "30",
        "--concurrency",
        "2",
        "--rpc",
        "unary",
        "--prompt",
        "first_ms=5",
        "--no-html",
    ]
    _, a, _, _ = run_cli(capsys, "--target", fake.target, *args, "--out", str(tmp_path / "a"))
    with FakeServer("--serial-ms", "30") as slow:  # the "new release": 6x slower
        _, b, _, _ = run_cli(capsys, "--target", slow.target, *args, "--out", str(tmp_path / "b"))
    assert main(["compare", a["_path"], a["_path"]]) == 0
    assert "no regression" in capsys.readouterr().out
    assert main(["compare", a["_path"], b["_path"], "--threshold", "e2e.p50=50%"]) == 1
    out, err = capsys.readouterr()
    assert re.search(r"e2e\.p50 .* REGRESSED", out) and "B regressed: e2e.p50" in err
    assert main(["compare", b["_path"], a["_path"], "--threshold", "e2e.p50=50%"]) == 0
    assert "better" in capsys.readouterr().out
