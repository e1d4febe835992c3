"""Observability without a model: deploy/ files (promtool, dashboard shape), structured logs,
the metrics HTTP path, and the new flags. The real-Prometheus run is test_observability.py."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import re
import urllib.error
import urllib.request

import pytest
import yaml

from server import logs
from server.cli import parse_args
from server.metrics import Metrics
from server.request import FinishReason, StreamEvent, Timing
from tests.support import tools
from tests.support.prom_server import (
    ALERTS_TEST_YML,
    ALERTS_YML,
    DASHBOARD,
    DEPLOY,
    PROMETHEUS_YML,
    alert_expressions,
    dashboard_expressions,
    promtool,
)

needs_promtool = tools.requires("promtool")
DESIGN_SERIES = [  # DESIGN.md, "Metrics": every one has a panel
    "kvserve_requests_total",
    "kvserve_request_duration_seconds",
    "kvserve_time_to_first_token_seconds",
    "kvserve_inter_token_latency_seconds",
    "kvserve_queue_wait_seconds",
    "kvserve_batch_size",
    "kvserve_engine_step_seconds",
    "kvserve_requests_running",
    "kvserve_requests_waiting",
    "kvserve_prompt_tokens_total",
    "kvserve_generated_tokens_total",
    "kvserve_kv_cache_bytes",
    "kvserve_model_info",
]


# -- deploy/ ---------------------------------------------------------------------------------
@needs_promtool
@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", PROMETHEUS_YML),
        ("check", "rules", ALERTS_YML),
        ("test", "rules", ALERTS_TEST_YML),
    ],
    ids=["check-config", "check-rules", "test-rules"],
)
def test_promtool_accepts_the_shipped_files(args):
    result = promtool(*map(str, args))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def exported_series() -> set[str]:
    """Every sample name the server exports (histogram and counter suffixes included)."""
    metrics = Metrics()
    metrics.set_model("m", "none", "cpu")
    metrics.observe_rpc("Generate", "OK", 0.1)
    return {s.name for family in metrics.registry.collect() for s in family.samples}


def test_dashboard_has_the_issues_panels_and_uses_every_design_series():
    titles = {p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]}
    assert {
        "Request rate by status code",
        "Error ratio",
        "Time to first token",
        "Inter-token latency",
        "End-to-end latency p99",
        "Queue wait p99",
        "Batch size",
        "Running / waiting requests",
        "Tokens per second",
        "KV cache bytes",
        "Model",
        "Requests by front door",
        "Hand-over rate",
        "Answer confidence",
    } <= titles
    exprs = " ".join(e.expr for e in dashboard_expressions())
    assert all(series in exprs for series in DESIGN_SERIES)
    legends = {e.name for e in dashboard_expressions()}
    for panel, quantiles in [
        ("Time to first token", ("p50", "p90", "p99")),
        ("Inter-token latency", ("p50", "p99")),
        ("Answer confidence", ("p10", "p50", "p90")),
    ]:
        assert {f"{panel} / {q}" for q in quantiles} <= legends


def test_the_hand_over_panels_query_the_hand_over_series():
    """Issue 21: hand-overs per judged answer, and quantiles of the answers' confidence."""
    panels = {p["title"]: p for p in json.loads(DASHBOARD.read_text())["panels"]}
    (rate, judged) = (t["expr"] for t in panels["Hand-over rate"]["targets"])
    assert "rate(kvserve_handovers_total[" in rate.split("/")[0]
    assert "rate(kvserve_answer_confidence_count[" in rate.split("/")[1]
    assert "kvserve_answer_confidence_count" in judged
    quantiles = [t["expr"] for t in panels["Answer confidence"]["targets"]]
    assert all("kvserve_answer_confidence_bucket" in q for q in quantiles)
    assert [q.split(",")[0] for q in quantiles] == [
        f"histogram_quantile({q}" for q in ("0.1", "0.5", "0.9")
    ]


def test_every_queried_series_is_one_the_server_exports():
    exported = exported_series() | {"up"}
    for e in dashboard_expressions() + alert_expressions():
        for name in re.findall(r"\b(kvserve_[a-z_]+|up)\b", e.expr):
            assert name in exported, f"{e.name}: {name} is not exported"


def test_dashboard_panels_are_well_formed():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"


def test_alerts_cover_the_issues_four_conditions():
    names = {e.name for e in alert_expressions()}
    assert {
        "KvserveDown",
        "KvserveTTFTP99High",
        "KvserveErrorRatioHigh",
        "KvserveQueueSaturated",
    } <= names
    rules = [r for g in yaml.safe_load(ALERTS_YML.read_text())["groups"] for r in g["rules"]]
    assert all(r["labels"]["severity"] in ("page", "warning") for r in rules)
    assert all(r["annotations"]["summary"] for r in rules)


def test_grafana_provisioning_points_at_the_dashboard_and_a_prometheus():
    provisioning = DEPLOY / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["url"].startswith("http")
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "kvserve.yml").read_text())[
        "providers"
    ]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    # the job name the dashboard and alerts select is the one prometheus.yml scrapes
    (job,) = yaml.safe_load(PROMETHEUS_YML.read_text())["scrape_configs"]
    selected = [e for e in dashboard_expressions() + alert_expressions() if "job=" in e.expr]
    assert selected and all('job="kvserve"' in e.expr for e in selected)
    assert job["job_name"] == "kvserve"


# -- structured logs -------------------------------------------------------------------------
def logged(fmt: str, body) -> list[str]:
    """Run body() in a fresh context (as grpc.aio runs each RPC in its own task)."""
    stream, root = io.StringIO(), logging.getLogger()
    saved = root.handlers[:], root.level  # setup() replaces the root's handlers (pytest's too)
    logs.setup("INFO", fmt, stream)
    try:
        contextvars.copy_context().run(body)
    finally:
        root.handlers[:], root.level = saved
    return stream.getvalue().splitlines()


def one_request() -> None:
    record = logs.begin("Generate")
    logs.annotate(request_id="req-1", prompt_tokens=7)
    logging.getLogger("kvserve.test").warning("something about the request")
    logs.on_event(StreamEvent("a", [1], "req-1"))
    logs.on_event(
        StreamEvent("b", [2, 3], "req-1", FinishReason.LENGTH, 7, 3, Timing(0.001, 0.02, 0.05))
    )
    logs.access(record, "OK", 0.06)


def test_json_lines_carry_the_request_id_and_the_access_fields():
    lines = [json.loads(line) for line in logged("json", one_request)]
    assert [line["request_id"] for line in lines] == ["req-1", "req-1"]
    assert lines[0]["msg"] == "something about the request" and lines[0]["level"] == "WARNING"
    access = lines[1]
    assert access["logger"] == "kvserve.access"
    assert {
        k: access[k]
        for k in (
            "rpc",
            "code",
            "prompt_tokens",
            "generated_tokens",
            "finish_reason",
            "queue_s",
            "ttft_s",
            "total_s",
        )
    } == {
        "rpc": "Generate",
        "code": "OK",
        "prompt_tokens": 7,
        "generated_tokens": 3,
        "finish_reason": "length",
        "queue_s": 0.001,
        "ttft_s": 0.02,
        "total_s": 0.06,
    }
    assert access["ts"].endswith("+00:00")


def test_text_lines_end_with_the_request_id():
    lines = logged("text", one_request)
    assert lines[0].endswith("kvserve.test: something about the request request_id=req-1")
    assert "Generate OK prompt_tokens=7 generated_tokens=3 ttft=0.0200s total=0.0600s" in lines[1]


def test_lines_outside_a_request_have_no_request_id():
    (line,) = logged("json", lambda: logging.getLogger("kvserve.x").info("started"))
    assert "request_id" not in json.loads(line)
    (line,) = logged("text", lambda: logging.getLogger("kvserve.x").info("started"))
    assert "request_id" not in line


def test_a_failed_request_logs_why():
    def body() -> None:
        record = logs.begin("Answer")
        logs.access(record, "INVALID_ARGUMENT", 0.001, "question: must not be empty")

    (line,) = logged("json", body)
    fields = json.loads(line)
    assert fields["code"] == "INVALID_ARGUMENT" and fields["detail"].startswith("question")
    assert "ttft_s" not in fields  # no token, no time to first token


# -- flags and the metrics endpoint ----------------------------------------------------------
def test_log_format_and_metrics_path_flags(monkeypatch):
    config = parse_args(["--model", "m"])
    assert (config.log_format, config.metrics_path) == ("text", "/metrics")
    config = parse_args(["--model", "m", "--log-format", "json", "--metrics-path", "/x/m"])
    assert (config.log_format, config.metrics_path) == ("json", "/x/m")
    monkeypatch.setenv("KVSERVE_LOG_FORMAT", "json")
    monkeypatch.setenv("KVSERVE_METRICS_PATH", "/prom")
    assert parse_args(["--model", "m"]).log_format == "json"
    assert parse_args(["--model", "m"]).metrics_path == "/prom"


@pytest.mark.parametrize("argv", [["--log-format", "xml"], ["--metrics-path", "metrics"]])
def test_bad_flags_exit_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--model", "m", *argv])
    assert exit_.value.code == 2
    assert argv[0] in capsys.readouterr().err.strip().splitlines()[-1]


def test_metrics_are_served_on_the_configured_path_only():
    metrics = Metrics()
    metrics.set_model("tiny", "none", "CPUExecutionProvider")
    server = metrics.serve("127.0.0.1", 0, "/internal/metrics")
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(f"{base}/internal/metrics", timeout=5) as reply:
            assert reply.status == 200
            assert 'kvserve_model_info{model="tiny"' in reply.read().decode()
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"{base}/metrics", timeout=5)
        assert error.value.code == 404
    finally:
        server.shutdown()
        server.server_close()
