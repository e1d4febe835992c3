"""What a run leaves behind: the summary table, the JSON report and the per-request CSV.

The JSON carries a schema tag so later tools (HTML report, compare) can read old runs.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from loadtest.record import RequestRecord
from loadtest.run import LoadResult
from loadtest.stats import Distribution

SCHEMA = "kvserve-loadtest/1"
MS = 1e3
LATENCIES = (("TTFT", "ttft"), ("ITL", "itl"), ("TPOT", "tpot"), ("E2E", "e2e"))
CSV_FIELDS = (
    "index", "rpc", "status", "start_ms", "ttft_ms", "e2e_ms", "tpot_ms", "itl_ms_mean",
    "itl_ms_max", "output_tokens", "prompt_tokens", "finish_reason", "error",
)  # fmt: skip


@dataclass(frozen=True)
class ReportFiles:
    json_path: Path
    csv_path: Path


def format_summary(result: LoadResult) -> str:
    """The table printed at the end of a run: latencies in ms, then throughput and status."""
    f, c = result.figures, result.config
    head = f"{'latency (ms)':<14}{'count':>8}" + "".join(
        f"{h:>10}" for h in ("mean", "p50", "p90", "p99", "max")
    )
    lines = [
        f"kvserve-loadtest: {c.target}, concurrency {c.concurrency}, "
        f"{f.requests} requests in {f.wall_s:.2f} s",
        head,
        "-" * len(head),
    ]
    for label, name in LATENCIES:
        d: Distribution = getattr(f, name).scaled(MS)
        cells = "".join(f"{'-' if v is None else f'{v:.2f}':>10}" for v in d.values())
        lines.append(f"{label:<14}{d.count:>8}{cells}")
    statuses = ", ".join(f"{k} {v}" for k, v in f.status_counts.items()) or "-"
    lines += [
        "-" * len(head),
        f"{'requests':<14}{f.ok} ok of {f.requests}: {f.request_throughput:.2f} req/s",
        f"{'tokens':<14}{f.output_tokens} output, {f.prompt_tokens} prompt: "
        f"{f.output_token_throughput:.1f} output tok/s",
        f"{'status':<14}{statuses}",
        "(latency and throughput count successful requests only)",
    ]
    return "\n".join(lines)


def report_dict(result: LoadResult, csv_name: str = "") -> dict:
    f = result.figures
    return {
        "schema": SCHEMA,
        "config": result.config.to_dict(),
        "started_at": result.started_at.isoformat(),
        "finished_at": result.finished_at.isoformat(),
        "wall_s": result.wall_s,
        "requests": {"total": f.requests, "ok": f.ok, "errors": f.errors},
        "status_counts": f.status_counts,
        "figures": {
            **{f"{name}_ms": getattr(f, name).scaled(MS).to_dict() for _, name in LATENCIES},
            "request_throughput_rps": f.request_throughput,
            "output_token_throughput_tps": f.output_token_throughput,
            "output_tokens": f.output_tokens,
            "prompt_tokens": f.prompt_tokens,
        },
        "warmup": {
            "requests": len(result.warmup_records),
            "ok": sum(r.ok for r in result.warmup_records),
        },
        "csv": csv_name,
    }


def csv_row(r: RequestRecord) -> dict:
    def ms(v: float | None) -> str:
        return "" if v is None else f"{v * MS:.3f}"

    return {
        "index": r.index,
        "rpc": r.rpc,
        "status": r.status,
        "start_ms": ms(r.start_s),
        "ttft_ms": ms(r.ttft_s),
        "e2e_ms": ms(r.e2e_s),
        "tpot_ms": ms(r.tpot_s),
        "itl_ms_mean": ms(sum(r.itl_s) / len(r.itl_s) if r.itl_s else None),
        "itl_ms_max": ms(max(r.itl_s) if r.itl_s else None),
        "output_tokens": r.output_tokens,
        "prompt_tokens": r.prompt_tokens,
        "finish_reason": r.finish_reason,
        "error": r.error,
    }


def write_report(result: LoadResult, out_dir: Path) -> ReportFiles:
    """OUT/loadtest-<UTC timestamp>.json and the .csv beside it (never overwrites a run)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"loadtest-{result.started_at:%Y%m%d-%H%M%S}"
    n = 1
    while (out_dir / f"{stem}.json").exists() or (out_dir / f"{stem}.csv").exists():
        n += 1
        stem = f"loadtest-{result.started_at:%Y%m%d-%H%M%S}-{n}"
    files = ReportFiles(out_dir / f"{stem}.json", out_dir / f"{stem}.csv")
    with files.csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(csv_row(r) for r in result.records)
    text = json.dumps(report_dict(result, files.csv_path.name), indent=2)
    files.json_path.write_text(text + "\n", encoding="utf-8")
    return files
