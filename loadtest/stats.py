"""Figures from records: latency distributions, throughput, status counts. Pure numpy.

Latencies count successful requests only (a fast error is not a fast answer); every request
is counted by status. Times are seconds here; reports convert to ms.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from loadtest.record import OK, RequestRecord

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Distribution:
    """Summary of one latency; every value None when there were no samples."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> Distribution:
        a = np.fromiter(values, dtype=np.float64)
        if a.size == 0:
            return cls(0, None, None, None, None, None)
        p50, p90, p99 = (float(v) for v in np.percentile(a, PERCENTILES))
        return cls(int(a.size), float(a.mean()), p50, p90, p99, float(a.max()))

    def scaled(self, factor: float) -> Distribution:
        """Same distribution in other units, e.g. scaled(1e3) for ms."""
        values = [None if v is None else v * factor for v in self.values()]
        return Distribution(self.count, *values)

    def values(self) -> tuple[float | None, ...]:
        return (self.mean, self.p50, self.p90, self.p99, self.max)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Figures:
    """The headline numbers of a run (times in seconds, throughputs per second)."""

    requests: int
    ok: int
    wall_s: float
    ttft: Distribution
    itl: Distribution  # one sample per token after the first, pooled over requests
    tpot: Distribution  # one sample per request: (e2e - ttft) / (output_tokens - 1)
    e2e: Distribution
    request_throughput: float  # successful requests / wall time
    output_token_throughput: float  # output tokens of successful requests / wall time
    prompt_tokens: int  # of successful requests
    output_tokens: int  # of successful requests
    status_counts: dict[str, int]  # OK first, then by count

    @property
    def errors(self) -> int:
        return self.requests - self.ok


def compute_figures(records: Sequence[RequestRecord], wall_s: float) -> Figures:
    good = [r for r in records if r.ok]
    output_tokens = sum(r.output_tokens for r in good)
    per_s = 1.0 / wall_s if wall_s > 0 else 0.0
    return Figures(
        requests=len(records),
        ok=len(good),
        wall_s=wall_s,
        ttft=Distribution.of(r.ttft_s for r in good if r.ttft_s is not None),
        itl=Distribution.of(x for r in good for x in r.itl_s),
        tpot=Distribution.of(t for r in good if (t := r.tpot_s) is not None),
        e2e=Distribution.of(r.e2e_s for r in good),
        request_throughput=len(good) * per_s,
        output_token_throughput=output_tokens * per_s,
        prompt_tokens=sum(r.prompt_tokens for r in good),
        output_tokens=output_tokens,
        status_counts=status_counts(records),
    )


def status_counts(records: Iterable[RequestRecord]) -> dict[str, int]:
    counts = Counter(r.status for r in records)
    return dict(sorted(counts.items(), key=lambda kv: (kv[0] != OK, -kv[1], kv[0])))
