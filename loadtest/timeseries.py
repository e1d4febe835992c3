"""A run over time, in fixed buckets: sends, completions, tokens, in-flight, latency.

Feeds the HTML charts and the JSON report (so a later tool can redraw them). Times are
seconds from the measured run's start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from loadtest.record import RequestRecord

STEPS = (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600)
MAX_BUCKETS = 60  # enough to see a trend; finer buckets of a short run are noise


@dataclass(frozen=True)
class TimeSeries:
    bucket_s: float
    t: list[float]  # bucket starts
    sent_rps: list[float]
    ok_rps: list[float]  # successful completions per second
    error_rps: list[float]
    output_tps: list[float]  # output tokens per second, by arrival time of each token
    in_flight_mean: list[float]  # time-weighted
    in_flight_max: list[int]
    ttft_p50: list[float | None]  # of requests sent in the bucket
    ttft_p99: list[float | None]
    e2e_p50: list[float | None]
    e2e_p99: list[float | None]
    lag_p99: list[float | None]

    def to_dict(self) -> dict:
        return asdict(self)


def bucket_size(span_s: float) -> float:
    return next((s for s in STEPS if span_s / s <= MAX_BUCKETS), STEPS[-1])


def time_series(
    records: Sequence[RequestRecord], wall_s: float, warmup: Sequence[RequestRecord] = ()
) -> TimeSeries:
    """Buckets over the measured run; `warmup` requests count only as in flight (an open
    loop's warmup can overlap the measured run's start)."""
    span = max(wall_s, max((r.end_s for r in records), default=0.0), 1e-3)
    size = bucket_size(span)
    n = int(np.ceil(span / size))
    edges = np.arange(n + 1) * size
    starts = np.array([r.start_s for r in records], dtype=np.float64)
    ends = np.array([r.end_s for r in records], dtype=np.float64)
    ok = np.array([r.ok for r in records], dtype=bool)
    per_s = lambda times: (count_in(times, edges) / size).tolist()  # noqa: E731
    everyone = [*records, *warmup]
    mean_in_flight, max_in_flight = in_flight(
        np.array([r.start_s for r in everyone]), np.array([r.end_s for r in everyone]), edges
    )
    return TimeSeries(
        bucket_s=size,
        t=edges[:-1].tolist(),
        sent_rps=per_s(starts),
        ok_rps=per_s(ends[ok]),
        error_rps=per_s(ends[~ok]),
        output_tps=per_s(token_times(records)),
        in_flight_mean=mean_in_flight,
        in_flight_max=max_in_flight,
        ttft_p50=by_bucket(records, edges, lambda r: r.ttft_s, 50),
        ttft_p99=by_bucket(records, edges, lambda r: r.ttft_s, 99),
        e2e_p50=by_bucket(records, edges, lambda r: r.e2e_s, 50),
        e2e_p99=by_bucket(records, edges, lambda r: r.e2e_s, 99),
        lag_p99=by_bucket(records, edges, lambda r: r.lag_s, 99, only_ok=False),
    )


def count_in(times: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts, _ = np.histogram(np.clip(times, edges[0], edges[-1]), bins=edges)
    return counts.astype(np.float64)


def token_times(records: Sequence[RequestRecord]) -> np.ndarray:
    """When each output token of a successful request arrived (a unary reply's all at its end)."""
    parts = []
    for r in records:
        if not r.ok or not r.output_tokens:
            continue
        if r.ttft_s is None:
            parts.append(np.full(r.output_tokens, r.end_s))
        else:
            first = r.start_s + r.ttft_s
            parts.append(first + np.concatenate([[0.0], np.cumsum(r.itl_s)]))
    return np.concatenate(parts) if parts else np.empty(0)


def in_flight(starts: np.ndarray, ends: np.ndarray, edges: np.ndarray) -> tuple[list, list]:
    """Per bucket: time-weighted mean and maximum of requests in flight."""
    lo, hi = edges[:-1], edges[1:]
    if starts.size == 0:
        return [0.0] * len(lo), [0] * len(lo)
    # [R, B] overlaps; chunked so a big run does not build a huge matrix at once
    mean = np.zeros(len(lo))
    for at in range(0, starts.size, 4096):
        s, e = starts[at : at + 4096, None], ends[at : at + 4096, None]
        mean += np.clip(np.minimum(e, hi) - np.maximum(s, lo), 0, None).sum(axis=0)
    mean /= hi - lo
    times = np.concatenate([starts, ends])
    steps = np.concatenate([np.ones_like(starts), -np.ones_like(ends)])
    order = np.lexsort((steps, times))  # at equal times, ends (-1) first
    level = np.cumsum(steps[order])
    times = times[order]
    peak = []
    for a, b in zip(lo, hi, strict=True):
        before = np.searchsorted(times, a, side="right")
        inside = level[before : np.searchsorted(times, b, side="right")]
        start_level = level[before - 1] if before > 0 else 0
        peak.append(int(max(start_level, inside.max() if inside.size else 0)))
    return mean.tolist(), peak


def by_bucket(records, edges, value, q: float, only_ok: bool = True) -> list[float | None]:
    """Percentile q of value(r) over requests sent in each bucket (None when none)."""
    groups: list[list[float]] = [[] for _ in range(len(edges) - 1)]
    for r in records:
        v = value(r)
        if v is None or (only_ok and not r.ok):
            continue
        i = min(max(int(np.searchsorted(edges, r.start_s, side="right")) - 1, 0), len(groups) - 1)
        groups[i].append(v)
    return [float(np.percentile(g, q)) if g else None for g in groups]
