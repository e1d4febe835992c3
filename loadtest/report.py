"""What a run leaves behind: the summary table, the JSON report, the per-request CSV and the
HTML report (html_report.py).

The JSON carries a schema tag so later tools (compare, dashboards) can read old runs;
/2 added p95, goodput, send lag, workers, warnings, server figures and the time series.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from loadtest.record import RequestRecord
from loadtest.run import LoadResult
from loadtest.stats import Distribution
from loadtest.timeseries import time_series

SCHEMA = "kvserve-loadtest/2"
MS = 1e3
LATENCIES = (("TTFT", "ttft"), ("ITL", "itl"), ("TPOT", "tpot"), ("E2E", "e2e"))
SERVER_ROWS = (
    ("TTFT", "ttft"),
    ("ITL", "itl"),
    ("E2E", "e2e"),
    ("queue wait", "queue_wait"),
    ("engine step", "engine_step"),
)
CSV_FIELDS = (
    "index",
    "rpc",
    "target",
    "worker",
    "status",
    "scheduled_ms",
    "start_ms",
    "lag_ms",
    "ttft_ms",
    "e2e_ms",
    "tpot_ms",
    "itl_ms_mean",
    "itl_ms_max",
    "output_tokens",
    "prompt_tokens",
    "finish_reason",
    "good",
    "handed_over",
    "confidence",
    "error",
)


@dataclass(frozen=True)
class ReportFiles:
    json_path: Path
    csv_path: Path
    html_path: Path | None = None


def _cells(values: tuple[float | None, ...]) -> str:
    return "".join(f"{'-' if v is None else f'{v:.2f}':>10}" for v in values)


def format_summary(result: LoadResult) -> str:
    """The table printed at the end of a run: latencies in ms, then throughput and status."""
    f, c = result.figures, result.config
    head = f"{'latency (ms)':<16}{'count':>8}" + "".join(
        f"{h:>10}" for h in ("mean", "p50", "p90", "p95", "p99", "max")
    )
    lines = [
        f"kvserve-loadtest: {c.target}, {c.load_model}, {c.workers} worker(s): "
        f"{f.requests} requests in {f.wall_s:.2f} s",
        head,
        "-" * len(head),
    ]
    for label, name in LATENCIES:
        d: Distribution = getattr(f, name).scaled(MS)
        lines.append(f"{label:<16}{d.count:>8}{_cells(d.values())}")
    if c.open_loop and f.send_lag is not None:
        d = f.send_lag.scaled(MS)
        lines.append(f"{'send lag':<16}{d.count:>8}{_cells(d.values())}")
    lines += _server_rows(result)
    lines += ["-" * len(head), *_totals(result)]
    lines += [f"WARNING: {w}" for w in result.warnings]
    return "\n".join(lines)


def _server_rows(result: LoadResult) -> list[str]:
    if result.server is None:
        return []
    rows = []
    for label, name in SERVER_ROWS:
        h = result.server.histograms[name]
        if not h.count:
            continue  # a series this server does not export (or that did not move)
        values = [None if v is None else v * MS for v in (h.mean, h.p50, h.p90)]
        cells = _cells((values[0], values[1], values[2], None, h.p99 and h.p99 * MS, None))
        rows.append(f"{'srv ' + label:<16}{int(h.count):>8}{cells}")
    b = result.server.histograms["batch_size"]
    if not b.count:
        return rows
    cells = _cells((b.mean, b.p50, b.p90, None, b.p99, None))
    rows.append(f"{'srv batch size':<16}{int(b.count):>8}{cells}")
    return rows


def _totals(result: LoadResult) -> list[str]:
    f = result.figures
    statuses = ", ".join(f"{k} {v}" for k, v in f.status_counts.items()) or "-"
    lines = [f"{'requests':<14}{f.ok} ok of {f.requests}: {f.request_throughput:.2f} req/s"]
    if f.handover is not None:
        lines.append(f"{'hand-over':<14}{f.handover.summary()}")
    if f.offered_rate is not None and f.send_rate is not None:
        lines.append(
            f"{'send rate':<14}{f.send_rate:.2f} req/s sent, {f.offered_rate:.2f} scheduled"
        )
    lines.append(
        f"{'tokens':<14}{f.output_tokens} output, {f.prompt_tokens} prompt: "
        f"{f.output_token_throughput:.1f} output tok/s, {f.total_token_throughput:.1f} total"
    )
    if f.good is not None:
        lines.append(
            f"{'goodput':<14}{result.config.slo}: {f.good} of {f.requests} "
            f"({f.goodput_share:.1%}), {f.goodput_rate:.2f} req/s"
        )
    lines.append(f"{'status':<14}{statuses}")
    if result.server is not None:
        codes = ", ".join(f"{k} {v:g}" for k, v in result.server.requests_by_code.items()) or "-"
        lines.append(f"{'srv status':<14}{codes}")
    lines.append("(latency and throughput count successful requests only; srv = server /metrics)")
    return lines


def figures_dict(result: LoadResult) -> dict:
    f = result.figures
    goodput = None
    if f.good is not None:
        goodput = {
            "slo": result.config.slo.to_dict(),
            "good": f.good,
            "share": f.goodput_share,
            "rate_rps": f.goodput_rate,
        }
    return {
        **{f"{name}_ms": getattr(f, name).scaled(MS).to_dict() for _, name in LATENCIES},
        "request_throughput_rps": f.request_throughput,
        "output_token_throughput_tps": f.output_token_throughput,
        "total_token_throughput_tps": f.total_token_throughput,
        "output_tokens": f.output_tokens,
        "prompt_tokens": f.prompt_tokens,
        "error_rate": f.error_rate,
        "goodput": goodput,
        "handover": None if f.handover is None else f.handover.to_dict(),
        "send": {
            "lag_ms": None if f.send_lag is None else f.send_lag.scaled(MS).to_dict(),
            "send_rate_rps": f.send_rate,
            "offered_rate_rps": f.offered_rate,
        },
    }


def report_dict(result: LoadResult, csv_name: str = "", html_name: str = "") -> dict:
    f = result.figures
    return {
        "schema": SCHEMA,
        "config": result.config.to_dict(),
        "model": result.model_info,
        "started_at": result.started_at.isoformat(),
        "finished_at": result.finished_at.isoformat(),
        "wall_s": result.wall_s,
        "requests": {"total": f.requests, "ok": f.ok, "errors": f.errors},
        "status_counts": f.status_counts,
        "figures": figures_dict(result),
        "warnings": result.warnings,
        "warmup": {
            "requests": len(result.warmup_records),
            "ok": sum(r.ok for r in result.warmup_records),
        },
        "workers": [
            {"worker": w.worker, "cpu_s": w.cpu_s, "busy_s": w.busy_s, "cpu_share": w.cpu_share}
            for w in result.workers
        ],
        "server": None if result.server is None else result.server.to_dict(),
        "timeseries": (
            result.series or time_series(result.records, result.wall_s, result.warmup_records)
        ).to_dict(),
        "csv": csv_name,
        "html": html_name,
    }


def csv_row(r: RequestRecord, good: bool | None) -> dict:
    def ms(v: float | None) -> str:
        return "" if v is None else f"{v * MS:.3f}"

    return {
        "index": r.index,
        "rpc": r.rpc,
        "target": r.target,
        "worker": r.worker,
        "status": r.status,
        "scheduled_ms": ms(r.scheduled_s),
        "start_ms": ms(r.start_s),
        "lag_ms": ms(r.lag_s),
        "ttft_ms": ms(r.ttft_s),
        "e2e_ms": ms(r.e2e_s),
        "tpot_ms": ms(r.tpot_s),
        "itl_ms_mean": ms(sum(r.itl_s) / len(r.itl_s) if r.itl_s else None),
        "itl_ms_max": ms(max(r.itl_s) if r.itl_s else None),
        "output_tokens": r.output_tokens,
        "prompt_tokens": r.prompt_tokens,
        "finish_reason": r.finish_reason,
        "good": "" if good is None else int(good),
        "handed_over": "" if r.handed_over is None else int(r.handed_over),
        "confidence": "" if r.confidence is None else f"{r.confidence:.4f}",
        "error": r.error,
    }


def free_stem(out_dir: Path, result: LoadResult) -> str:
    """loadtest-<UTC timestamp>[-n]: a name no earlier run's files have."""
    base = stem = f"loadtest-{result.started_at:%Y%m%d-%H%M%S}"
    n = 1
    while any((out_dir / f"{stem}{ext}").exists() for ext in (".json", ".csv", ".html")):
        n += 1
        stem = f"{base}-{n}"
    return stem


def write_report(result: LoadResult, out_dir: Path) -> ReportFiles:
    """OUT/loadtest-<UTC timestamp>.json and the .csv and .html beside it (never overwrites)."""
    from loadtest.html_report import render_html  # the biggest module: only when writing
    from loadtest.stats import meets

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = free_stem(out_dir, result)
    html_path = out_dir / f"{stem}.html" if result.config.html else None
    files = ReportFiles(out_dir / f"{stem}.json", out_dir / f"{stem}.csv", html_path)
    slo = result.config.slo
    with files.csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(csv_row(r, meets(r, slo) if slo else None) for r in result.records)
    report = report_dict(result, files.csv_path.name, "" if html_path is None else html_path.name)
    files.json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if html_path is not None:
        html_path.write_text(render_html(result, report), encoding="utf-8")
    return files
