"""Observability end to end: a real server (JSON logs, a custom metrics path), real clients,
the real load tester, and a real Prometheus scraping the server and evaluating the alerts.

Set KVSERVE_QUERY_LOG=FILE to keep every query with the value Prometheus returned (JSON).
"""

from __future__ import annotations

import json
import math
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from loadtest.cli import main as loadtest_main
from loadtest.server_metrics import Snapshot, fetch, parse, scrape_settled
from proto import kvserve_pb2 as pb
from proto import kvserve_pb2_grpc as pb_grpc
from tests.support import tools
from tests.support.handover import UNDER_A_HALF, calibrated_copy
from tests.support.prom_server import (
    Expression,
    Prometheus,
    alert_expressions,
    config_for,
    dashboard_expressions,
    without_threshold,
)
from tests.support.servers import serving

pytestmark = pytest.mark.slow
METRICS_PATH = "/kvserve/metrics"  # not the default, so the flag is exercised
# read at import: the autouse fixture clears KVSERVE_* variables before each test runs
QUERY_LOG = os.environ.get("KVSERVE_QUERY_LOG")


@pytest.fixture(scope="module")
def server(tiny_artifact, tmp_path_factory):
    """The tiny model with a known calibration (every answer's confidence under 0.5, the
    default threshold 0.25), so answers are judged and the hand-over panels have data."""
    folder = tmp_path_factory.mktemp("obs")
    log = folder / "server.log"
    artifact = calibrated_copy(tiny_artifact, folder / "artifact", UNDER_A_HALF)
    extra = ["--log-format", "json", "--metrics-path", METRICS_PATH, "--max-batch-size", "8"]
    with serving(artifact, log, extra, http=True) as process:
        yield process


@pytest.fixture(scope="module")
def metrics_url(server) -> str:
    return f"http://127.0.0.1:{server.metrics_port}{METRICS_PATH}"


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.target) as channel:
        yield pb_grpc.GenerationStub(channel)


@pytest.fixture(scope="module")
def prometheus(server, tmp_path_factory):
    if (reason := tools.missing("prometheus", "promtool")) is not None:
        pytest.skip(reason)
    config = config_for(f"127.0.0.1:{server.metrics_port}", METRICS_PATH)
    prom = Prometheus.start(config, tmp_path_factory.mktemp("prometheus"))
    try:
        prom.wait_until('up{job="kvserve"}', lambda up: up == 1)
        yield prom
    finally:
        prom.stop()


def generate(stub, n: int, tokens: int, prefix: str) -> list[pb.GenerateResponse]:
    """n concurrent greedy requests of exactly `tokens` tokens each."""
    requests = [
        pb.GenerateRequest(
            prompt=f"Question: item {i} of {prefix}?\nAnswer:",
            max_new_tokens=tokens,
            ignore_eos=True,
            request_id=f"{prefix}-{i}",
        )
        for i in range(n)
    ]
    return [f.result() for f in [stub.Generate.future(r) for r in requests]]


def delta(before: Snapshot, after: Snapshot, name: str, **labels: str) -> float:
    """How much the samples called `name` (with at least these labels) moved."""

    def total(snapshot: Snapshot) -> float:
        wanted = set(labels.items())
        return sum(v for (n, tags), v in snapshot.items() if n == name and wanted <= set(tags))

    return total(after) - total(before)


def test_counters_and_histograms_move_by_exact_amounts(stub, metrics_url):
    before = parse(fetch(metrics_url))
    replies = generate(stub, 10, 5, "exact")
    with pytest.raises(grpc.RpcError):
        stub.Generate(pb.GenerateRequest(prompt="hi", temperature=-1.0))
    # the last step's figures are published just after it delivered its tokens
    after, _ = scrape_settled([metrics_url], before, answered=11, timeout_s=5)

    assert all(len(r.token_ids) == 5 for r in replies)
    moved = lambda name, **labels: delta(before, after, name, **labels)  # noqa: E731
    assert moved("kvserve_generated_tokens_total") == 50
    assert moved("kvserve_prompt_tokens_total") == sum(r.usage.prompt_tokens for r in replies)
    assert moved("kvserve_requests_total", rpc="Generate", code="OK") == 10
    assert moved("kvserve_requests_total", rpc="Generate", code="INVALID_ARGUMENT") == 1
    assert moved("kvserve_request_duration_seconds_count", rpc="Generate") == 11
    assert moved("kvserve_time_to_first_token_seconds_count") == 10
    assert moved("kvserve_queue_wait_seconds_count") == 10
    assert moved("kvserve_inter_token_latency_seconds_count") == 40  # 4 gaps in 5 tokens
    assert moved("kvserve_batch_size_sum") == 50  # every token came out of some step
    steps = moved("kvserve_batch_size_count")
    assert 5 <= steps <= 50 and moved("kvserve_engine_step_seconds_count") == steps
    assert moved("kvserve_time_to_first_token_seconds_bucket", le="+Inf") == 10
    gauge = lambda name: delta({}, after, name)  # noqa: E731
    assert gauge("kvserve_requests_running") == 0 and gauge("kvserve_requests_waiting") == 0
    # the paged cache holds memory for tokens held: every finished sequence gave its blocks back
    blocks = lambda state: delta({}, after, "kvserve_kv_cache_blocks", state=state)  # noqa: E731
    assert gauge("kvserve_kv_cache_bytes") == 0 and blocks("used") == 0 and blocks("free") > 0
    queried = moved("kvserve_prefix_cache_queried_tokens_total")  # every prompt looked up once
    assert queried == moved("kvserve_prompt_tokens_total")
    assert 0 <= moved("kvserve_prefix_cache_hit_tokens_total") <= queried
    assert delta({}, after, "kvserve_model_info", provider="CPUExecutionProvider") == 1


def test_each_judged_answer_is_counted_once_on_both_doors(stub, server, metrics_url):
    """Answer RPC and chat completions observe every answer's confidence; hand-overs count
    the answers replaced by the hand-over text (threshold 1: all, 0: none)."""
    before = parse(fetch(metrics_url))
    replies = [
        stub.Answer(pb.AnswerRequest(question=q, max_new_tokens=6, handover_threshold=t))
        for q, t in (("How do I pair it?", 1.0), ("Where is my order?", 0.0))
    ]
    chat = {"messages": [{"role": "user", "content": "Is it waterproof?"}], "max_tokens": 6}
    data = json.dumps({**chat, "n": 2, "handover_threshold": 1}).encode()
    request = urllib.request.Request(
        f"{server.http_url}/v1/chat/completions",
        data=data,
        headers={"content-type": "application/json"},
    )
    choices = json.load(urllib.request.urlopen(request, timeout=30))["choices"]
    after, _ = scrape_settled([metrics_url], before, answered=3, timeout_s=5)

    assert [r.handed_over for r in replies] == [True, False]
    assert [c["handed_over"] for c in choices] == [True, True]
    confidences = [r.confidence for r in replies] + [c["confidence"] for c in choices]
    assert all(0 < c < 0.5 for c in confidences)  # sigmoid of a mean logprob < 0
    moved = lambda name, **labels: delta(before, after, name, **labels)  # noqa: E731
    assert moved("kvserve_handovers_total") == 3
    assert moved("kvserve_answer_confidence_count") == 4
    assert moved("kvserve_answer_confidence_sum") == pytest.approx(sum(confidences), abs=1e-6)
    assert moved("kvserve_answer_confidence_bucket", le="0.5") == 4


def test_metrics_only_on_the_configured_path(server, metrics_url):
    assert "kvserve_requests_total" in fetch(metrics_url)
    with pytest.raises(urllib.error.HTTPError) as error:
        fetch(f"http://127.0.0.1:{server.metrics_port}/metrics")
    assert error.value.code == 404


def access_lines(server, request_ids: set[str], timeout: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        lines = [json.loads(x) for x in server.log_path.read_text().splitlines() if x[:1] == "{"]
        found = [x for x in lines if x["logger"] == "kvserve.access"]
        if request_ids <= {x.get("request_id") for x in found} or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_json_logs_one_access_line_per_request_with_its_id(server, stub):
    stub.Generate(
        pb.GenerateRequest(
            prompt="Question: hi\nAnswer:",
            max_new_tokens=5,
            ignore_eos=True,
            request_id="log-unary",
        )
    )
    stream = pb.GenerateRequest(
        prompt="Question: hi\nAnswer:", max_new_tokens=3, ignore_eos=True, request_id="log-stream"
    )
    assert list(stub.GenerateStream(stream))
    with pytest.raises(grpc.RpcError):
        stub.Generate(pb.GenerateRequest(prompt="hi", top_p=7.0, request_id="log-bad"))
    lines = access_lines(server, {"log-unary", "log-stream", "log-bad"})

    others = [x for x in server.log_path.read_text().splitlines() if x[:1] != "{"]
    assert all(x.startswith("kvserve-serve: listening on") for x in others), others
    assert all({"ts", "level", "logger", "msg"} <= set(x) for x in lines)
    by_id = {
        rid: [x for x in lines if x.get("request_id") == rid]
        for rid in ("log-unary", "log-stream", "log-bad")
    }
    assert all(len(found) == 1 for found in by_id.values()), by_id
    unary, stream, bad = (found[0] for found in by_id.values())
    for line, rpc, tokens in [(unary, "Generate", 5), (stream, "GenerateStream", 3)]:
        assert (line["logger"], line["rpc"], line["code"]) == ("kvserve.access", rpc, "OK")
        assert line["generated_tokens"] == tokens and line["prompt_tokens"] > 0
        assert line["finish_reason"] == "length"
        assert 0 < line["queue_s"] <= line["ttft_s"] <= line["total_s"]
    assert (bad["rpc"], bad["code"]) == ("Generate", "INVALID_ARGUMENT")
    assert bad["detail"].startswith("top_p") and bad["generated_tokens"] == 0


def test_loadtest_reports_the_servers_figures_beside_its_own(server, metrics_url, tmp_path):
    code = loadtest_main(
        [
            "--target",
            server.target,
            "--concurrency",
            "4",
            "--requests",
            "12",
            "--max-new-tokens",
            "5",
            "--ignore-eos",
            "--metrics-url",
            metrics_url,
            "--no-progress",
            "--no-html",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    figures = report["server"]
    assert figures["errors"] == [] and report["requests"]["ok"] == 12
    assert figures["requests_by_code"] == {"GenerateStream OK": 12}
    assert figures["counters"]["generated_tokens"] == 60
    assert figures["histograms"]["ttft"]["count"] == 12
    assert figures["histograms"]["itl"]["count"] == 48
    assert 0 < figures["histograms"]["ttft"]["p50"] <= figures["histograms"]["e2e"]["p99"]


def traffic(stub, prefix: str, http_url: str) -> int:
    """A little of everything the dashboard shows: unary, streams, an Answer, a bad request,
    on both doors."""
    n = len(generate(stub, 4, 5, prefix)) + http_traffic(http_url, prefix)
    for i in range(2):
        request = pb.GenerateRequest(
            prompt=f"Question: {prefix} {i}\nAnswer:", max_new_tokens=6, ignore_eos=True
        )
        n += len(list(stub.GenerateStream(request))) > 0
    n += bool(stub.Answer(pb.AnswerRequest(question="How do I reset it?", max_new_tokens=4)))
    with pytest.raises(grpc.RpcError):
        stub.Generate(pb.GenerateRequest(prompt=""))
    return n + 1


def http_traffic(url: str, prefix: str) -> int:
    """Two completions and a bad request through the HTTP door."""
    bodies = [
        {"prompt": f"{prefix} http", "max_tokens": 3},
        {"prompt": f"{prefix} http", "max_tokens": 3, "stream": True},
        {"prompt": ""},
    ]
    for body in bodies:
        data, headers = json.dumps(body).encode(), {"content-type": "application/json"}
        request = urllib.request.Request(f"{url}/v1/completions", data=data, headers=headers)
        try:
            urllib.request.urlopen(request, timeout=10).read()
        except urllib.error.HTTPError as error:
            assert error.code == 400
    return 3


def requests_served(metrics_url: str) -> float:
    return delta({}, parse(fetch(metrics_url)), "kvserve_requests_total")


def is_number(sample: dict) -> bool:
    return math.isfinite(float(sample["value"][1]))


def test_every_dashboard_and_alert_expression_runs_on_a_real_prometheus(
    prometheus, stub, metrics_url, server
):
    # Two rounds with a scrape between them, so every rate() has an increase to see.
    for round_ in ("before", "after"):
        traffic(stub, f"prom-{round_}", server.http_url)
        served = requests_served(metrics_url)
        prometheus.wait_until("sum(kvserve_requests_total)", lambda v, s=served: v >= s)

    results: list[dict] = []
    for e in dashboard_expressions():
        samples = prometheus.query(e.concrete)
        results.append(record(e, samples))
        assert samples, f"dashboard panel {e.name} returned no data: {e.concrete}"
        # NaN is a series with no traffic in the window (e.g. e2e p99 of an RPC not called)
        assert any(map(is_number, samples)), f"{e.name}: {samples}"
    for e in alert_expressions():
        samples = prometheus.query(e.concrete)  # raises on any error; firing is not expected
        compared = prometheus.query(without_threshold(e.concrete))  # the value it is judged on
        results.append(record(e, samples, compared))
        if "histogram_quantile" in e.expr:  # the latency alert sees the latency
            assert any(map(is_number, compared)), results[-1]
    down = next(r for r in results if r["name"] == "KvserveDown")
    assert down["value"] == [] and down["compared"][0]["value"] == "1"

    # Prometheus itself evaluated every rule in alerts.yml without an error.
    rules = prometheus.api("rules")["groups"][0]["rules"]
    assert {r["name"] for r in rules} == {e.name for e in alert_expressions()}
    assert all(r["health"] == "ok" for r in rules), [r.get("lastError") for r in rules]
    if QUERY_LOG:
        Path(QUERY_LOG).write_text(json.dumps(results, indent=2))


def record(e: Expression, samples: list[dict], compared: list[dict] | None = None) -> dict:
    values = [{**s["metric"], "value": s["value"][1]} for s in samples]
    out = {"source": e.source, "name": e.name, "expr": e.concrete, "value": values}
    if compared is not None:
        out["compared"] = [{**s["metric"], "value": s["value"][1]} for s in compared]
    return out
