"""loadtest's pure parts with fixed inputs: option languages, schedules, goodput, server
metrics, time series, charts and run comparison. No server, no sockets, no sleeping."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from loadtest import server_metrics
from loadtest.cli import parse_args
from loadtest.compare import flatten, parse_threshold
from loadtest.compare import main as compare_main
from loadtest.config import LoadConfig
from loadtest.openai_api import Reading
from loadtest.record import RequestRecord
from loadtest.report import format_summary, write_report
from loadtest.run import LoadResult
from loadtest.schedule import arrival_offsets, build_plan, offered_rate
from loadtest.server_metrics import parse, quantile, server_figures, settled
from loadtest.specs import (
    LengthDist,
    Slo,
    SpecError,
    Stage,
    Warmup,
    parse_duration,
    parse_length,
    parse_schedule,
    parse_slos,
    parse_warmup,
)
from loadtest.stats import compute_figures, meets
from loadtest.svg import Axis, Series, chart, ticks
from loadtest.timeseries import in_flight, time_series


def record(index: int, status: str = "OK", **kw) -> RequestRecord:
    base = dict(rpc="GenerateStream", start_s=0.0, e2e_s=1.0, ttft_s=0.1, output_tokens=10)
    return RequestRecord(index=index, status=status, **{**base, **kw})


# ---------------------------------------------------------------- option languages


def test_durations_and_warmup():
    assert [parse_duration(t) for t in ("30s", "500ms", "2m", "1.5", "1h")] == [
        30.0,
        0.5,
        120.0,
        1.5,
        3600.0,
    ]
    with pytest.raises(SpecError, match="duration"):
        parse_duration("soon")
    assert parse_warmup("20") == Warmup(requests=20)
    assert parse_warmup("5s") == Warmup(seconds=5.0)
    with pytest.raises(SpecError, match="request count"):
        parse_warmup("-3")


def test_schedule_steps_and_ramps():
    stages = parse_schedule("10:30s,20:30s, 5-45:1m")
    assert stages == (Stage(10, 10, 30), Stage(20, 20, 30), Stage(5, 45, 60))
    assert [s.expected for s in stages] == [300, 600, 1500]
    assert str(stages[2]) == "5-45:60s"
    for bad, says in [
        ("10", "RATE:DURATION"),
        ("x:3s", "rate"),
        ("10:0s", "> 0 s"),
        ("0:10s", "sends no request"),
    ]:
        with pytest.raises(SpecError, match=says):
            parse_schedule(bad)


def test_length_distributions():
    rng = np.random.default_rng(0)
    assert parse_length("128") == LengthDist("fixed", 128)
    assert set(parse_length("128").sample(rng, 5)) == {128}
    u = parse_length("uniform:4:8").sample(rng, 2000)
    assert u.min() == 4 and u.max() == 8
    n = parse_length("normal:100:10").sample(rng, 4000)
    assert abs(n.mean() - 100) < 1 and abs(n.std() - 10) < 1 and n.min() >= 1
    for bad in ("0", "uniform:9:3", "zipf:2", "normal:5"):
        with pytest.raises(SpecError):
            parse_length(bad)


def test_slos_parse_and_goodput():
    slo = parse_slos(["ttft=0.5,tpot=50ms", "e2e=2s"])
    assert slo == Slo(ttft_s=0.5, tpot_s=0.05, e2e_s=2.0)
    assert str(slo) == "ttft<=500ms tpot<=50ms e2e<=2000ms"
    with pytest.raises(SpecError, match="NAME=LIMIT"):
        parse_slos(["itl=3"])
    slo = Slo(ttft_s=0.2, tpot_s=0.1)
    assert meets(record(0, ttft_s=0.1, e2e_s=1.0, output_tokens=10), slo)  # tpot 0.1
    assert not meets(record(0, ttft_s=0.3), slo)
    assert not meets(record(0, ttft_s=0.1, e2e_s=2.0), slo)  # tpot 0.21
    assert not meets(record(0, "UNAVAILABLE", ttft_s=0.01, e2e_s=0.01), slo)
    unary = record(0, rpc="Answer", ttft_s=None, e2e_s=0.15, output_tokens=3)
    assert meets(unary, slo) and not meets(unary, Slo(ttft_s=0.1))  # TTFT of unary = e2e
    records = [record(i, ttft_s=0.1 * i) for i in range(4)] + [record(9, "UNAVAILABLE")]
    f = compute_figures(records, wall_s=2.0, slo=Slo(ttft_s=0.15))
    assert (f.good, f.goodput_share, f.goodput_rate) == (2, 0.4, 1.0)
    assert compute_figures(records, wall_s=2.0).good is None


def test_options_for_every_feature(tmp_path, monkeypatch):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    c = parse_args(
        [
            "--target",
            "a:1",
            "--target",
            "b:2,c:3",
            "--rate",
            "50",
            "--arrival",
            "constant",
            "--duration",
            "1m",
            "--warmup",
            "5s",
            "--workers",
            "2",
            "--rpc",
            "unary",
            "--top-k",
            "5",
            "--top-p",
            "0.9",
            "--repetition-penalty",
            "1.1",
            "--stop",
            "\n",
            "--stop",
            "END",
            "--sampling-seed",
            "7",
            "--slo",
            "ttft=0.5,e2e=2",
            "--slo",
            "tpot=20ms",
            "--auth-token-file",
            str(token),
            "--synthetic-input",
            "uniform:10:20",
            "--synthetic-output",
            "32",
            "--metrics-url",
            "http://127.0.0.1:8000/metrics",
        ]
    )
    assert c.targets == ("a:1", "b:2", "c:3") and c.open_loop and c.workers == 2
    assert (c.rate, c.arrival, c.duration_s, c.requests, c.warmup_s) == (
        50,
        "constant",
        60,
        None,
        5,
    )
    assert (c.top_k, c.top_p, c.stop, c.sampling_seed) == (5, 0.9, ("\n", "END"), 7)
    assert c.slo == Slo(0.5, 0.02, 2.0)
    assert c.security.token == "s3cret" and c.security.metadata() == (
        ("authorization", "Bearer s3cret"),
    )
    assert c.ignore_eos  # synthetic output lengths need it
    assert "s3cret" not in json.dumps(c.to_dict()) and "s3cret" not in repr(c)
    assert "closed loop" in parse_args(["--target", "a:1"]).load_model
    monkeypatch.setenv("KVSERVE_SCHEDULE", "10:1s,20-40:2s")
    monkeypatch.setenv("KVSERVE_AUTH_TOKEN", "from-env")
    monkeypatch.setenv("KVSERVE_SLO", "e2e=1")
    c = parse_args(["--target", "a:1"])
    assert c.schedule == (Stage(10, 10, 1), Stage(20, 40, 2)) and c.requests is None
    assert c.security.token == "from-env" and c.slo == Slo(e2e_s=1.0)


@pytest.mark.parametrize(
    "args, says",
    [
        (["--rate", "5", "--concurrency", "3"], "give one"),
        (["--rate", "5", "--schedule", "1:1s"], "--rate and --schedule"),
        (["--schedule", "nope"], "RATE:DURATION"),
        (["--rate", "0"], "--rate must be > 0"),
        (["--warmup", "3", "--warmup", "forever"], "request count"),
        (["--tls-cert", "/x.pem"], "--tls-cert and --tls-key go together"),
        (["--tls-ca", "/no/such.pem"], "no such file"),
        (["--auth-token-file", "/no/such"], "cannot read"),
        (["--synthetic-output", "8"], "needs --synthetic-input"),
        (["--concurrency", "2", "--workers", "3"], "--workers (3) must be <="),
        (["--slo", "ttft"], "NAME=LIMIT"),
        (["--metrics-url", "127.0.0.1:8000"], "http://"),
        (["--top-p", "2"], "--top-p must be <= 1"),
    ],
)
def test_bad_options_are_one_line(args, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--target", "127.0.0.1:1", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and says in err[0], err


# ---------------------------------------------------------------- schedules


def open_config(**kw) -> LoadConfig:
    return LoadConfig(targets=("h:1",), **kw)


def test_constant_arrivals_are_evenly_spaced():
    plan = build_plan(open_config(rate=100, arrival="constant", requests=500))
    assert len(plan.offsets) == 500 and plan.warmup == 0
    assert np.allclose(np.diff(plan.offsets), 0.01)
    assert offered_rate(plan.offsets) == pytest.approx(100)


def test_poisson_arrivals_have_the_rate_and_exponential_gaps():
    plan = build_plan(open_config(rate=200, requests=2000, seed=3))
    gaps = np.diff(plan.offsets)
    assert len(plan.offsets) == 2000
    assert offered_rate(plan.offsets) == pytest.approx(200, rel=0.01)
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(1.0, abs=0.08)  # exponential: CV 1
    # memoryless: P(gap > mean) = 1/e
    assert np.mean(gaps > np.mean(gaps)) == pytest.approx(np.exp(-1), abs=0.04)
    other = build_plan(open_config(rate=200, requests=2000, seed=4))
    assert not np.allclose(plan.offsets, other.offsets)  # the seed matters


def test_schedule_stages_send_their_share():
    stages = parse_schedule("100:1s,300:1s,0-200:2s")
    for arrival in ("constant", "poisson"):
        t = arrival_offsets(stages, arrival, np.random.default_rng(0))
        counts = np.histogram(t, bins=[0, 1, 2, 3, 4])[0]
        assert counts.tolist() == pytest.approx(
            [100, 300, 50, 150], abs=1 if arrival == "constant" else 25
        )
        assert counts[:2].sum() == pytest.approx(400, abs=1)  # steps get their exact count


def test_requests_cut_a_schedule_and_warmup_leads_it():
    plan = build_plan(open_config(schedule=parse_schedule("10:10s"), requests=30, warmup=5))
    assert (len(plan.offsets), plan.warmup, plan.measured) == (35, 5, 30)
    assert plan.origin_s == pytest.approx(0.5)  # 5 warmup requests at 10 req/s
    assert (plan.offsets[:5] < 0.5).all() and (plan.offsets[5:] >= 0.5).all()
    cut = build_plan(open_config(schedule=parse_schedule("10:10s"), duration_s=2.0, requests=None))
    assert len(cut.offsets) == pytest.approx(20, abs=1) and cut.offsets.max() < 2.0
    plan = build_plan(open_config(rate=20, duration_s=2.0, warmup_s=1.0, arrival="constant"))
    assert (plan.warmup, plan.measured, plan.origin_s) == (20, 40, 1.0)


# ---------------------------------------------------------------- server metrics

BEFORE = """
# TYPE kvserve_requests counter
kvserve_requests_total{rpc="GenerateStream",code="OK"} 10
# TYPE kvserve_time_to_first_token_seconds histogram
kvserve_time_to_first_token_seconds_bucket{le="0.01"} 0
kvserve_time_to_first_token_seconds_bucket{le="0.1"} 10
kvserve_time_to_first_token_seconds_bucket{le="+Inf"} 10
kvserve_time_to_first_token_seconds_sum 0.5
kvserve_time_to_first_token_seconds_count 10
# TYPE kvserve_requests_running gauge
kvserve_requests_running 3
"""
AFTER = """
# TYPE kvserve_requests counter
kvserve_requests_total{rpc="GenerateStream",code="OK"} 110
kvserve_requests_total{rpc="GenerateStream",code="RESOURCE_EXHAUSTED"} 4
# TYPE kvserve_time_to_first_token_seconds histogram
kvserve_time_to_first_token_seconds_bucket{le="0.01"} 50
kvserve_time_to_first_token_seconds_bucket{le="0.1"} 110
kvserve_time_to_first_token_seconds_bucket{le="+Inf"} 110
kvserve_time_to_first_token_seconds_sum 3.5
kvserve_time_to_first_token_seconds_count 110
# TYPE kvserve_requests_running gauge
kvserve_requests_running 0
"""


def test_server_figures_are_the_runs_difference():
    s = server_figures(["u"], parse(BEFORE), parse(AFTER))
    assert s.requests_by_code == {"GenerateStream OK": 100, "GenerateStream RESOURCE_EXHAUSTED": 4}
    ttft = s.histograms["ttft"]
    assert (ttft.count, ttft.mean) == (100, pytest.approx(0.03))
    assert ttft.p50 == pytest.approx(0.01)  # 50 of 100 in the first bucket: its top
    assert ttft.p90 == pytest.approx(0.01 + 0.09 * 40 / 50)  # linear within (0.01, 0.1]
    assert s.histograms["itl"].count == 0 and s.histograms["itl"].p50 is None
    assert s.gauges_after["requests_running"] == 0


def test_the_last_scrape_waits_until_the_server_has_accounted_for_the_run(monkeypatch):
    before, after = parse(BEFORE), parse(AFTER)  # AFTER: 104 more counted, nothing running
    assert settled(before, after, answered=104) and not settled(before, after, answered=105)
    busy = {**after, ("kvserve_requests_running", ()): 1.0}  # the last step not yet published
    assert not settled(before, busy, answered=104)
    scrapes = iter([busy, busy, after, after])
    monkeypatch.setattr(server_metrics, "scrape", lambda urls: (next(scrapes), []))
    monkeypatch.setattr(server_metrics.time, "sleep", lambda s: None)
    assert server_metrics.scrape_settled(["u"], before, answered=104) == (after, [])
    assert next(scrapes) == after  # the third scrape was the one returned
    # other traffic may keep a server from settling: the last scrape after the timeout
    monkeypatch.setattr(server_metrics, "scrape", lambda urls: (busy, []))
    assert server_metrics.scrape_settled(["u"], before, 104, timeout_s=0.05) == (busy, [])
    assert server_metrics.scrape_settled([], before, 104, timeout_s=60) == (busy, [])  # no URL


def test_histogram_quantile_edges():
    assert quantile(0.5, []) is None
    assert quantile(0.99, [(1.0, 0), (float("inf"), 4)]) == 1.0  # +Inf answers the last bound


# ---------------------------------------------------------------- time series and charts


def test_in_flight_counts_overlaps():
    starts, ends = np.array([0.0, 0.5, 0.5]), np.array([1.0, 1.5, 0.75])
    mean, peak = in_flight(starts, ends, np.array([0.0, 1.0, 2.0]))
    assert mean == pytest.approx([1.75, 0.5]) and peak == [3, 1]


def test_time_series_buckets():
    records = [
        record(i, start_s=i * 0.1, e2e_s=0.2, ttft_s=0.05, itl_s=[0.01] * 9) for i in range(50)
    ]
    s = time_series(records, wall_s=5.1)
    assert s.bucket_s == 0.1 and len(s.t) == 51
    assert sum(v * s.bucket_s for v in s.sent_rps) == pytest.approx(50)
    assert sum(v * s.bucket_s for v in s.output_tps) == pytest.approx(500)
    assert s.ttft_p50[0] == pytest.approx(0.05) and s.e2e_p99[-1] is None


def test_svg_chart_draws_series_and_ticks():
    assert ticks(0, 97, log=False)[2] == [0, 20, 40, 60, 80, 100]
    assert ticks(0.3, 700, log=True)[2] == [0.1, 1, 10, 100, 1000]
    series = [Series("a", [0, 1, 2], [1, None, 3]), Series("b", [0, 2], [2, 2], "points")]
    svg = chart("Demo <1>", series, Axis("x"), Axis("y"))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "Demo &lt;1&gt;" in svg and svg.count('class="line"') == 1 and "h0" in svg
    assert "no data" in chart("Empty", [Series("a", [], [])], Axis("x"), Axis("y"))


# ---------------------------------------------------------------- compare


def fake_report(ttft_p99: float, rps: float, errors: int = 0, schema: str = "kvserve-loadtest/2"):
    dist = {
        "count": 10,
        "mean": 10.0,
        "p50": 10.0,
        "p90": 12.0,
        "p95": 13.0,
        "p99": ttft_p99,
        "max": 20.0,
    }
    return {
        "schema": schema,
        "config": {"load_model": "closed loop, concurrency 4", "max_new_tokens": 16},
        "requests": {"total": 100, "ok": 100 - errors, "errors": errors},
        "figures": {
            "ttft_ms": dist,
            "itl_ms": dist,
            "tpot_ms": dist,
            "e2e_ms": dist,
            "request_throughput_rps": rps,
            "output_token_throughput_tps": rps * 16,
        },
        "warnings": [],
    }


def test_compare_flags_regressions_only_past_thresholds(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(fake_report(14.0, 100.0)))
    b.write_text(json.dumps(fake_report(15.0, 97.0)))  # p99 +7%, throughput -3%
    assert compare_main([str(a), str(b)]) == 0
    assert "no regression" in capsys.readouterr().out
    assert compare_main([str(a), str(b), "--threshold", "ttft.p99=5%"]) == 1
    captured = capsys.readouterr()
    assert "REGRESSED" in captured.out and "ttft.p99" in captured.err
    assert compare_main([str(a), str(b), "--threshold", "*_throughput=2%"]) == 1
    assert compare_main([str(a), str(b), "--threshold", "ttft.p99=1.5"]) == 0  # absolute ms
    b.write_text(json.dumps(fake_report(10.0, 120.0, errors=5)))  # faster, but 5% errors
    assert compare_main([str(a), str(b)]) == 1
    assert "error_rate" in capsys.readouterr().err


def test_compare_reads_schema_1_and_rejects_junk(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(fake_report(14.0, 100.0, schema="kvserve-loadtest/1")))
    b.write_text("{}")
    with pytest.raises(SystemExit) as exit_:
        compare_main([str(a), str(b)])
    assert exit_.value.code == 2 and "not a kvserve-loadtest report" in capsys.readouterr().err
    b.write_text(json.dumps(fake_report(14.0, 100.0)))
    assert compare_main([str(a), str(b)]) == 0
    with pytest.raises(SystemExit):
        compare_main([str(a), str(b), "--threshold", "nope.p99=5%"])
    assert "no figure matches" in capsys.readouterr().err
    assert flatten(fake_report(1, 2))["request_throughput"] == (2, True)
    assert parse_threshold("e2e.*=10%").relative and not parse_threshold("error_rate=0.01").relative


def test_config_dict_is_json_ready():
    c = open_config(rate=5.0, requests=10, tokenizer=Path("t.json"), schedule=())
    out = json.loads(json.dumps(c.to_dict()))
    assert out["load_model"] == "open loop, poisson arrivals at 5 req/s"
    assert out["security"] == {
        "tls": False,
        "ca": None,
        "client_cert": None,
        "server_name": None,
        "auth": None,
    }


@pytest.mark.parametrize("argv", [["--help"], ["compare", "--help"]])
def test_help_explains_itself(argv, capsys):
    from loadtest.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "usage: kvserve-loadtest" in out
    assert ("--threshold" in out) if argv[0] == "compare" else ("--schedule" in out)


def test_loadtest_imports_no_training_stack_and_no_server_internals():
    import subprocess
    import sys

    code = (
        "import importlib, pkgutil, sys, loadtest\n"
        "for m in pkgutil.iter_modules(loadtest.__path__):\n"
        "    if m.name != '__main__':\n"
        "        importlib.import_module('loadtest.' + m.name)\n"
        "bad = ('torch', 'transformers', 'optimum', 'server', 'training', 'export')\n"
        "print(sorted({n.split('.')[0] for n in sys.modules} & set(bad)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# ---------------------------------------------------------------- hand-over share


def answer(index: int, handed_over: bool | None, confidence: float | None, **kw) -> RequestRecord:
    kw = {"rpc": "Answer", **kw}
    return record(index, handed_over=handed_over, confidence=confidence, **kw)


def test_handover_share_counts_successful_answers_only():
    records = [
        answer(0, True, 0.1),
        answer(1, False, 0.9),
        answer(2, False, 0.7),
        answer(3, True, 0.2, rpc="/v1/chat/completions"),
        answer(4, None, None, status="DEADLINE_EXCEEDED"),  # no reply, no verdict
        record(5),  # a raw generation is no answer
    ]
    h = compute_figures(records, wall_s=1.0).handover
    assert h is not None
    assert (h.answers, h.judged, h.handed_over, h.share) == (4, 4, 2, 0.5)
    assert h.confidence.count == 4 and h.confidence.mean == pytest.approx(0.475)
    assert h.to_dict()["share"] == 0.5 and h.to_dict()["confidence"]["p50"] == pytest.approx(0.45)
    assert compute_figures([record(0), record(1)], wall_s=1.0).handover is None  # no questions


def test_answers_without_a_confidence_have_no_share():
    # a server whose artifact has no calibration says handed_over false, confidence unset;
    # a plain OpenAI server says nothing: neither is a 0% hand-over share
    for records in ([answer(0, False, None)], [answer(0, None, None, rpc="/v1/chat/completions")]):
        h = compute_figures(records, wall_s=1.0).handover
        assert h is not None and (h.answers, h.judged, h.share) == (1, 0, None)
    assert h.summary() == "- of 1 answers (the replies carry no confidence)"


def test_the_summary_json_csv_and_html_report_the_handover_share(tmp_path):
    records = [answer(i, i % 4 == 0, 0.2 if i % 4 == 0 else 0.8) for i in range(8)]
    config = LoadConfig(targets=("h:1",), requests=8, out_dir=tmp_path, progress=False)
    figures = compute_figures(records, wall_s=2.0)
    now = datetime.now(timezone.utc)
    result = LoadResult(config, records, figures, now, now, 2.0)
    line = "hand-over     2 of 8 answers handed over (25.0%); confidence mean 0.65, p50 0.80"
    assert line in format_summary(result)
    files = write_report(result, tmp_path)
    report = json.loads(files.json_path.read_text())
    assert report["figures"]["handover"]["handed_over"] == 2
    assert report["figures"]["handover"]["share"] == 0.25
    assert flatten(report)["handover_share"] == (0.25, False)  # compare: lower is better
    rows = list(csv.DictReader(files.csv_path.open()))
    assert [r["handed_over"] for r in rows[:4]] == ["1", "0", "0", "0"]
    assert rows[0]["confidence"] == "0.2000"
    page = files.html_path.read_text()
    assert "hand-over (answers given to a person)" in page and "2 of 8 answers" in page
    assert "CDF of answer confidence" in page


def test_chat_replies_carry_the_verdict_on_the_last_chunk():
    reading = Reading([])
    reading.take({"choices": [{"index": 0, "delta": {"content": "Guess"}}]}, now=1.0)
    assert (reading.handed_over, reading.confidence) == (None, None)
    last = {"index": 0, "delta": {}, "finish_reason": "stop", "confidence": 0.12}
    reading.take({"choices": [{**last, "handed_over": True, "handover_text": "Ask Ana."}]}, 2.0)
    assert (reading.handed_over, reading.confidence) == (True, 0.12)
    whole = Reading([])
    message = {"role": "assistant", "content": "It ships daily."}
    choice = {"message": message, "confidence": None, "handed_over": False}
    whole.take({"choices": [choice]}, None)
    assert (whole.handed_over, whole.confidence) == (False, None)
