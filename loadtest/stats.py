"""Figures from records: latency distributions, throughput, goodput, status counts, send lag.

Pure numpy. Latencies count successful requests only (a fast error is not a fast answer);
every request is counted by status. Times are seconds here; reports convert to ms.
Definitions: loadtest/README.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from loadtest.record import OK, RequestRecord
from loadtest.specs import Slo

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class Distribution:
    """Summary of one latency; every value None when there were no samples."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> Distribution:
        a = np.fromiter(values, dtype=np.float64)
        if a.size == 0:
            return cls(0, None, None, None, None, None, None)
        p50, p90, p95, p99 = (float(v) for v in np.percentile(a, PERCENTILES))
        return cls(int(a.size), float(a.mean()), p50, p90, p95, p99, float(a.max()))

    def scaled(self, factor: float) -> Distribution:
        """Same distribution in other units, e.g. scaled(1e3) for ms."""
        values = [None if v is None else v * factor for v in self.values()]
        return Distribution(self.count, *values)

    def values(self) -> tuple[float | None, ...]:
        return (self.mean, self.p50, self.p90, self.p95, self.p99, self.max)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class HandOverFigures:
    """Questions the server answered (Answer RPC, chat completions) and how many of them it
    handed over to a person instead (issue 21's hand-over)."""

    answers: int  # successful replies to a question
    judged: int  # of those, the ones that carried a confidence
    handed_over: int
    confidence: Distribution  # of the judged answers

    @property
    def share(self) -> float | None:
        """Hand-overs per answer; None when no answer carried a verdict (a server without
        a calibration, or not kvserve)."""
        return self.handed_over / self.answers if self.answers and self.judged else None

    def to_dict(self) -> dict:
        return {**asdict(self), "share": self.share}

    def summary(self) -> str:
        """One line: the share of answers handed over to a person, and their confidence."""
        if self.share is None:
            return f"- of {self.answers} answers (the replies carry no confidence)"
        c = self.confidence
        judged = "" if self.judged == self.answers else f" ({self.judged} with a confidence)"
        return (
            f"{self.handed_over} of {self.answers} answers handed over ({self.share:.1%}); "
            f"confidence mean {c.mean:.2f}, p50 {c.p50:.2f}, p90 {c.p90:.2f}{judged}"
        )

    @classmethod
    def of(cls, records: Iterable[RequestRecord]) -> HandOverFigures | None:
        """From the successful records; None when the run asked no question."""
        answers = [r for r in records if r.ok and r.answers_a_question]
        if not answers:
            return None
        confidences = [r.confidence for r in answers if r.confidence is not None]
        return cls(
            answers=len(answers),
            judged=len(confidences),
            handed_over=sum(bool(r.handed_over) for r in answers),
            confidence=Distribution.of(confidences),
        )


@dataclass(frozen=True)
class Figures:
    """The headline numbers of a run (times in seconds, throughputs per second)."""

    requests: int
    ok: int
    wall_s: float  # first send -> last reply of the measured requests
    ttft: Distribution
    itl: Distribution  # one sample per token after the first, pooled over requests
    tpot: Distribution  # one sample per request: (e2e - ttft) / (output_tokens - 1)
    e2e: Distribution
    request_throughput: float  # successful requests / wall time
    output_token_throughput: float  # output tokens of successful requests / wall time
    total_token_throughput: float  # prompt + output tokens of successful requests / wall time
    prompt_tokens: int  # of successful requests
    output_tokens: int  # of successful requests
    status_counts: dict[str, int]  # OK first, then by count
    good: int | None = None  # requests meeting every SLO (None: no SLO given)
    send_lag: Distribution | None = None  # actual - scheduled send time, every request
    send_rate: float | None = None  # achieved: (n - 1) / (last send - first send)
    offered_rate: float | None = None  # the schedule's: same over scheduled times (open loop)
    handover: HandOverFigures | None = None  # None: the run asked no question

    @property
    def errors(self) -> int:
        return self.requests - self.ok

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def goodput_share(self) -> float | None:
        """Share of all measured requests (failures included) that met every SLO."""
        if self.good is None:
            return None
        return self.good / self.requests if self.requests else 0.0

    @property
    def goodput_rate(self) -> float | None:
        """Requests per second that met every SLO."""
        if self.good is None:
            return None
        return self.good / self.wall_s if self.wall_s > 0 else 0.0


def compute_figures(
    records: Sequence[RequestRecord],
    wall_s: float,
    slo: Slo | None = None,
    open_loop: bool = False,
) -> Figures:
    good = [r for r in records if r.ok]
    output_tokens = sum(r.output_tokens for r in good)
    prompt_tokens = sum(r.prompt_tokens for r in good)
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
        total_token_throughput=(output_tokens + prompt_tokens) * per_s,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        status_counts=status_counts(records),
        good=sum(meets(r, slo) for r in records) if slo else None,
        send_lag=Distribution.of(r.lag_s for r in records),
        send_rate=rate_of(r.start_s for r in records),
        offered_rate=rate_of(r.scheduled_s or 0.0 for r in records) if open_loop else None,
        handover=HandOverFigures.of(records),
    )


def meets(record: RequestRecord, slo: Slo) -> bool:
    """A successful request within every objective. TTFT of a unary reply is its e2e (the
    first token comes with the last); TPOT of a one-token reply is 0."""
    if not record.ok:
        return False
    checks = {"ttft": record.first_token_s, "tpot": record.tpot_s or 0.0, "e2e": record.e2e_s}
    return all(checks[name] <= limit for name, limit in slo.items())


def rate_of(times: Iterable[float]) -> float | None:
    """Events per second over their span: (n - 1) / (last - first); None under 2 events."""
    a = np.fromiter(times, dtype=np.float64)
    if a.size < 2:
        return None
    span = float(a.max() - a.min())
    return (a.size - 1) / span if span > 0 else None


def status_counts(records: Iterable[RequestRecord]) -> dict[str, int]:
    counts = Counter(r.status for r in records)
    return dict(sorted(counts.items(), key=lambda kv: (kv[0] != OK, -kv[1], kv[0])))
