"""The self-contained HTML report: figures, warnings and charts in one file, no network.

Charts (inline SVG from svg.py): latency over time, CDFs of TTFT / ITL / e2e (and of the
answers' confidence, when the server judged them), throughput over time, in-flight requests
over time, and (open loop) send lag over time.
"""

from __future__ import annotations

import json
from html import escape

import numpy as np

from loadtest.record import RequestRecord
from loadtest.run import LoadResult
from loadtest.svg import Axis, Series, chart
from loadtest.timeseries import time_series

MS = 1e3
MAX_POINTS = 2500  # per scatter series; more adds bytes, not information
CDF_POINTS = 200
E2E, E2E_DARK, TTFT, TTFT_DARK = "#6baed6", "#08519c", "#fdae6b", "#a63603"  # dots, p99 lines

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px;
       color: #222; max-width: 1300px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.sub { color: #666; margin-bottom: 16px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { padding: 3px 10px; border-bottom: 1px solid #e3e3e3; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f4f4f4; }
.warn { background: #fdecea; border: 2px solid #d62728; color: #8a1c1c; padding: 10px 14px;
        margin: 12px 0; font-weight: 600; }
.grid-charts { display: flex; flex-wrap: wrap; gap: 16px; }
svg.chart { background: #fff; border: 1px solid #ddd; }
svg .title { font-weight: 600; font-size: 13px; }
svg .tick, svg .legend, svg .label { font-size: 11px; fill: #444; }
svg .grid { stroke: #eee; } svg .frame { fill: none; stroke: #bbb; }
svg .line { fill: none; stroke-width: 1.8; }
svg .points { fill: none; stroke-width: 3; stroke-linecap: round; stroke-opacity: 0.55; }
svg .empty { font-size: 13px; fill: #999; text-anchor: middle; }
pre { background: #f7f7f7; padding: 10px; overflow: auto; font-size: 12px; }
"""


def render_html(result: LoadResult, report: dict) -> str:
    c = result.config
    title = f"kvserve-loadtest: {c.target}"
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<div class="sub">{escape(c.load_model)}, {c.workers} worker(s), '
        f"{result.figures.requests} requests in {result.wall_s:.2f} s, started "
        f"{escape(result.started_at.isoformat(timespec='seconds'))}</div>",
        *[f'<div class="warn">WARNING: {escape(w)}</div>' for w in result.warnings],
        "<h2>Figures</h2>",
        latency_table(report),
        totals_table(result, report),
        server_table(report),
        "<h2>Over time</h2>",
        '<div class="grid-charts">',
        *time_charts(result),
        "</div>",
        "<h2>Distributions</h2>",
        '<div class="grid-charts">',
        *cdf_charts(result.records),
        "</div>",
        "<h2>Run</h2>",
        facts_table(result),
        "<details><summary>config (JSON)</summary><pre>"
        + escape(json.dumps(report["config"], indent=2))
        + "</pre></details>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _num(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def table(head: list[str] | None, rows: list[list[str]]) -> str:
    th = "" if head is None else "".join(f"<th>{escape(h)}</th>" for h in head)
    thead = f"<thead><tr>{th}</tr></thead>" if th else ""
    trs = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>{thead}<tbody>{trs}</tbody></table>"


def latency_table(report: dict) -> str:
    f = report["figures"]
    keys = ("mean", "p50", "p90", "p95", "p99", "max")
    rows = [
        [label, str(f[key]["count"]), *(_num(f[key][k]) for k in keys)]
        for label, key in (
            ("TTFT", "ttft_ms"),
            ("ITL", "itl_ms"),
            ("TPOT", "tpot_ms"),
            ("E2E", "e2e_ms"),
        )
    ]
    lag = f["send"]["lag_ms"]
    if report["config"]["rate"] is not None or report["config"]["schedule"]:
        rows.append(["send lag", str(lag["count"]), *(_num(lag[k]) for k in keys)])
    return table(["latency (ms)", "count", *keys], rows)


def totals_table(result: LoadResult, report: dict) -> str:
    f, figs = result.figures, report["figures"]
    rows = [
        ["requests", f"{f.ok} ok of {f.requests} ({f.error_rate:.1%} errors)"],
        ["request throughput", f"{f.request_throughput:.2f} req/s"],
        ["output token throughput", f"{f.output_token_throughput:.1f} tok/s"],
        ["total token throughput", f"{f.total_token_throughput:.1f} tok/s"],
        ["tokens", f"{f.output_tokens} output, {f.prompt_tokens} prompt"],
    ]
    if f.offered_rate is not None:
        rows.append(
            ["send rate", f"{_num(f.send_rate)} req/s sent, {f.offered_rate:.2f} scheduled"]
        )
    if figs["goodput"] is not None:
        rows.append(
            [
                f"goodput ({result.config.slo})",
                f"{f.good} of {f.requests} ({f.goodput_share:.1%}), {f.goodput_rate:.2f} req/s",
            ]
        )
    if f.handover is not None:
        rows.append(["hand-over (answers given to a person)", f.handover.summary()])
    statuses = ", ".join(f"{k} {v}" for k, v in f.status_counts.items()) or "-"
    rows.append(["status codes", statuses])
    return table(["figure", "value"], rows)


def server_table(report: dict) -> str:
    server = report["server"]
    if server is None:
        return ""
    rows = []
    for name, h in server["histograms"].items():
        if not h["count"]:
            continue  # a series this server does not export (or that did not move)
        scale = 1 if name == "batch_size" else MS
        unit = "" if name == "batch_size" else " (ms)"
        values = [None if h[k] is None else h[k] * scale for k in ("mean", "p50", "p90", "p99")]
        rows.append([f"{name}{unit}", f"{h['count']:g}", *(_num(v) for v in values)])
    codes = ", ".join(f"{k} {v:g}" for k, v in server["requests_by_code"].items()) or "-"
    counters = ", ".join(f"{k} {v:g}" for k, v in server["counters"].items())
    return (
        f"<h2>Server (/metrics, {escape(', '.join(server['urls']))})</h2>"
        + table(["histogram", "count", "mean", "p50", "p90", "p99"], rows)
        + table(None, [["requests", codes], ["counters", counters]])
    )


def facts_table(result: LoadResult) -> str:
    rows = [["targets", result.config.target], ["load", result.config.load_model]]
    info = result.model_info or {}
    for key in ("model_name", "quantization", "dtype", "provider", "max_batch_size"):
        if key in info:
            rows.append([key.replace("_", " "), str(info[key])])
    for w in result.workers:
        rows.append(
            [f"worker {w.worker}", f"CPU {w.cpu_share:.0%} of a core over {w.busy_s:.2f} s"]
        )
    return table(None, rows)


def sample(records: list[RequestRecord], limit: int = MAX_POINTS) -> list[RequestRecord]:
    """At most `limit` records, evenly spread over the run (deterministic)."""
    if len(records) <= limit:
        return records
    picks = np.linspace(0, len(records) - 1, limit).astype(int)
    return [records[i] for i in picks]


def time_charts(result: LoadResult) -> list[str]:
    s = result.series or time_series(result.records, result.wall_s, result.warmup_records)
    ok = [r for r in result.records if r.ok]
    t = Axis("time since start (s)", lo=0.0)
    mid = [x + s.bucket_s / 2 for x in s.t]  # bucket values drawn at their middle
    edges = [*s.t, s.t[-1] + s.bucket_s]  # a step series holds each value to the bucket's end

    def step(name: str, values: list) -> Series:
        return Series(name, edges, [*values, values[-1]], "step")

    def ms(values: list) -> list:
        return [None if v is None else v * MS for v in values]

    pts = sample(ok)
    ttft = [r for r in pts if r.ttft_s is not None]
    latency = [
        Series("e2e", [r.start_s for r in pts], [r.e2e_s * MS for r in pts], "points", E2E),
        Series("TTFT", [r.start_s for r in ttft], [r.ttft_s * MS for r in ttft], "points", TTFT),
        Series("e2e p99", mid, ms(s.e2e_p99), color=E2E_DARK),
        Series("TTFT p99", mid, ms(s.ttft_p99), color=TTFT_DARK),
    ]
    out = [
        chart("Latency over time", latency, t, Axis("latency (ms)")),
        chart(
            "Throughput over time",
            [
                step("sent req/s", s.sent_rps),
                step("ok req/s", s.ok_rps),
                step("errors/s", s.error_rps),
            ],
            t,
            Axis("requests per second"),
        ),
        chart("Output tokens over time", [step("output tok/s", s.output_tps)], t, Axis("tokens/s")),
        chart(
            "In-flight requests over time",
            [step("max", s.in_flight_max), step("mean", s.in_flight_mean)],
            t,
            Axis("requests in flight"),
        ),
    ]
    if result.config.open_loop:
        lag = [Series("lag p99", mid, ms(s.lag_p99))]
        out.append(chart("Send lag over time", lag, t, Axis("send lag (ms)")))
    return out


def cdf(values: list[float]) -> tuple[list[float], list[float]]:
    """(value, share <= value) at up to CDF_POINTS quantiles."""
    if not values:
        return [], []
    a = np.sort(np.asarray(values, dtype=np.float64))
    shares = np.linspace(0, 1, min(CDF_POINTS, a.size))
    return np.quantile(a, shares).tolist(), shares.tolist()


def cdf_charts(records: list[RequestRecord]) -> list[str]:
    ok = [r for r in records if r.ok]
    picks = {
        "TTFT": [r.ttft_s * MS for r in ok if r.ttft_s is not None],
        "ITL": [x * MS for r in ok for x in r.itl_s],
        "E2E": [r.e2e_s * MS for r in ok],
    }
    out = []
    for name, values in picks.items():
        xs, ys = cdf(values)
        positive = [v for v in xs if v > 0]
        log = bool(positive) and max(positive) / min(positive) > 50
        out.append(
            chart(
                f"CDF of {name}",
                [Series(name, xs, ys)],
                Axis(f"{name} (ms)", log=log),
                Axis("share of samples <= x", lo=0.0, hi=1.0),
                width=420,
                height=280,
            )
        )
    confidences = [r.confidence for r in ok if r.confidence is not None]
    if confidences:  # kvserve's verdicts on answers: what the hand-over threshold cuts
        xs, ys = cdf(confidences)
        out.append(
            chart(
                "CDF of answer confidence",
                [Series("confidence", xs, ys)],
                Axis("confidence (calibrated P(right))", lo=0.0, hi=1.0),
                Axis("share of answers <= x", lo=0.0, hi=1.0),
                width=420,
                height=280,
            )
        )
    return out
