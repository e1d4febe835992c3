"""The server's own view: scrape Prometheus /metrics before and after the run, and turn the
difference into figures to put beside the client's (--metrics-url).

Counters and histograms are differenced, so only this run's traffic counts (plus anything
else the server served meanwhile, and an open loop's warmup). Histogram percentiles are
estimated from the bucket counts the way PromQL's histogram_quantile does.
"""

from __future__ import annotations

import time
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

Snapshot = dict[tuple[str, tuple[tuple[str, str], ...]], float]  # (sample, labels) -> value

HISTOGRAMS = {  # report name -> series (DESIGN.md's names)
    "ttft": "kvserve_time_to_first_token_seconds",
    "itl": "kvserve_inter_token_latency_seconds",
    "e2e": "kvserve_request_duration_seconds",
    "queue_wait": "kvserve_queue_wait_seconds",
    "engine_step": "kvserve_engine_step_seconds",
    "batch_size": "kvserve_batch_size",
}
COUNTERS = {
    "generated_tokens": "kvserve_generated_tokens_total",
    "prompt_tokens": "kvserve_prompt_tokens_total",
    "handovers": "kvserve_handovers_total",  # answers handed over to a person
}
GAUGES = {
    "requests_running": "kvserve_requests_running",
    "requests_waiting": "kvserve_requests_waiting",
    "kv_cache_bytes": "kvserve_kv_cache_bytes",
}


@dataclass(frozen=True)
class HistogramFigures:
    count: float
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None


@dataclass(frozen=True)
class ServerFigures:
    """What the server's metrics moved by during the run (seconds, counts)."""

    urls: list[str]
    histograms: dict[str, HistogramFigures]
    counters: dict[str, float]
    requests_by_code: dict[str, float]  # "rpc code" -> requests
    gauges_after: dict[str, float]
    errors: list[str] = field(default_factory=list)  # scrapes that failed

    def to_dict(self) -> dict:
        return asdict(self)


def fetch(url: str, timeout_s: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as reply:  # noqa: S310 - user's URL
        return reply.read().decode("utf-8")


def parse(text: str) -> Snapshot:
    """Every sample of a Prometheus text exposition, keyed by name and sorted labels."""
    from prometheus_client.parser import text_string_to_metric_families  # only when asked

    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(urls: Sequence[str]) -> tuple[Snapshot, list[str]]:
    """All URLs' samples summed (replicas), and one line per URL that failed."""
    total: Snapshot = defaultdict(float)
    errors = []
    for url in urls:
        try:
            for key, value in parse(fetch(url)).items():
                total[key] += value
        except Exception as e:  # network or format: the run goes on without these figures
            errors.append(f"{url}: {type(e).__name__}: {e}")
    return dict(total), errors


def settled(before: Snapshot, after: Snapshot, answered: int) -> bool:
    """The server has accounted for the run: each request the client had answered is counted,
    and the engine has published its last step (nothing running or queued). A server records
    a request as its handler ends and a step's figures just after the step delivered its
    tokens, so a scrape at the client's last reply may be a moment early."""
    counted = sum_of(after, "kvserve_requests_total") - sum_of(before, "kvserve_requests_total")
    busy = sum_of(after, "kvserve_requests_running") + sum_of(after, "kvserve_requests_waiting")
    return counted >= answered and busy == 0


def scrape_settled(
    urls: Sequence[str], before: Snapshot, answered: int, timeout_s: float = 1.0
) -> tuple[Snapshot, list[str]]:
    """`scrape(urls)` again until `settled` (other traffic on the server may keep it from
    ever settling: then what the last scrape saw, after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        after, errors = scrape(urls)
        done = not urls or errors or settled(before, after, answered)
        if done or time.monotonic() >= deadline:
            return after, errors
        time.sleep(0.02)


def server_figures(
    urls: Sequence[str], before: Snapshot, after: Snapshot, errors: Sequence[str] = ()
) -> ServerFigures:
    delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
    by_code: dict[str, float] = {}
    for (name, labels), value in delta.items():
        if name == "kvserve_requests_total" and value:
            tags = dict(labels)
            by_code[f"{tags.get('rpc', '')} {tags.get('code', '')}".strip()] = value
    return ServerFigures(
        urls=list(urls),
        histograms={k: histogram(delta, series) for k, series in HISTOGRAMS.items()},
        counters={k: sum_of(delta, series) for k, series in COUNTERS.items()},
        requests_by_code=dict(sorted(by_code.items())),
        gauges_after={k: sum_of(after, series) for k, series in GAUGES.items()},
        errors=list(errors),
    )


def sum_of(samples: Snapshot, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def histogram(delta: Snapshot, name: str) -> HistogramFigures:
    """count, mean and estimated percentiles of a histogram's increase (all label sets)."""
    count, total = sum_of(delta, f"{name}_count"), sum_of(delta, f"{name}_sum")
    buckets: dict[float, float] = defaultdict(float)
    for (n, labels), value in delta.items():
        if n == f"{name}_bucket":
            buckets[float(dict(labels)["le"])] += value
    edges = sorted(buckets.items())
    q = lambda p: quantile(p, edges)  # noqa: E731
    mean = total / count if count > 0 else None
    return HistogramFigures(count, mean, q(0.5), q(0.9), q(0.99))


def quantile(p: float, edges: list[tuple[float, float]]) -> float | None:
    """histogram_quantile: linear within the bucket holding rank p * count (cumulative
    buckets); the +Inf bucket answers with the highest finite bound."""
    if not edges or edges[-1][1] <= 0:
        return None
    rank = p * edges[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, cumulative in edges:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower_bound
            width = cumulative - lower_count
            frac = (rank - lower_count) / width if width > 0 else 0.0
            return lower_bound + (bound - lower_bound) * frac
        lower_bound, lower_count = bound, cumulative
    return lower_bound
