"""Open-loop send times, computed before the run so a slow server cannot slow the senders.

A schedule is a list of stages (constant rates and linear ramps). Its cumulative expected
count L(t) (the integral of the rate) maps "the k-th request" to a time:
- constant arrivals: request k goes at L(t) = k, i.e. evenly spaced in expected count;
- Poisson arrivals: each stage sends round(its expected count) requests at L(t) = uniform
  draws. That is a Poisson process conditioned on its count (gaps stay exponential), so the
  offered rate over the run is the asked rate, not the asked rate +- sqrt(n) noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loadtest.config import LoadConfig
from loadtest.specs import Stage


@dataclass(frozen=True)
class Plan:
    """Send offsets in seconds from the run's start; the first `warmup` are warmup requests
    and the measured run starts `origin_s` seconds in."""

    offsets: np.ndarray  # [N] float64, sorted
    warmup: int
    origin_s: float

    @property
    def measured(self) -> int:
        return len(self.offsets) - self.warmup


def measured_stages(config: LoadConfig) -> tuple[Stage, ...]:
    """The measured run as stages: --schedule, or --rate for --duration / --requests."""
    if config.schedule:
        return config.schedule
    assert config.rate is not None
    duration = config.duration_s
    if config.requests is not None:  # the request count may end it first
        by_count = config.requests / config.rate
        duration = by_count if duration is None else min(duration, by_count)
    assert duration is not None
    return (Stage(config.rate, config.rate, duration),)


def warmup_stage(config: LoadConfig, first: Stage) -> Stage | None:
    """The warmup, at the first stage's starting rate (its end rate when that is 0)."""
    rate = first.start_rate or first.end_rate
    if config.warmup:
        return Stage(rate, rate, config.warmup / rate)
    if config.warmup_s:
        return Stage(rate, rate, config.warmup_s)
    return None


def build_plan(config: LoadConfig) -> Plan:
    rng = np.random.default_rng(config.seed)
    stages = measured_stages(config)
    measured = arrival_offsets(stages, config.arrival, rng)
    if config.duration_s is not None:  # a --duration shorter than the --schedule ends it
        measured = measured[measured < config.duration_s]
    if config.requests is not None:
        measured = measured[: config.requests]
    warm = warmup_stage(config, stages[0])
    if warm is None:
        return Plan(measured, 0, 0.0)
    warm_offsets = arrival_offsets((warm,), config.arrival, rng)
    offsets = np.concatenate([warm_offsets, measured + warm.duration_s])
    return Plan(offsets, len(warm_offsets), warm.duration_s)


def arrival_offsets(
    stages: tuple[Stage, ...], arrival: str, rng: np.random.Generator
) -> np.ndarray:
    """Send times (seconds from the start of the first stage), sorted."""
    parts, t0, level = [], 0.0, 0.0  # level: expected count before the stage
    for stage in stages:
        lo, hi = round(level), round(level + stage.expected)  # this stage's requests: [lo, hi)
        if arrival == "constant":
            counts = np.arange(lo, hi, dtype=np.float64) - level
        else:
            counts = np.sort(rng.uniform(0.0, stage.expected, size=hi - lo))
        parts.append(t0 + invert(stage, np.maximum(counts, 0.0)))
        t0, level = t0 + stage.duration_s, level + stage.expected
    return np.concatenate(parts) if parts else np.empty(0)


def invert(stage: Stage, counts: np.ndarray) -> np.ndarray:
    """Times within `stage` at which its expected count reaches `counts`.

    L(t) = r0 t + (r1 - r0) t^2 / (2 d): solve the quadratic (linear for a step)."""
    r0, r1, d = stage.start_rate, stage.end_rate, stage.duration_s
    if r0 == r1:
        return counts / r0 if r0 > 0 else np.zeros_like(counts)
    a = (r1 - r0) / (2 * d)
    return (-r0 + np.sqrt(np.maximum(r0 * r0 + 4 * a * counts, 0.0))) / (2 * a)


def offered_rate(offsets: np.ndarray) -> float | None:
    """Requests per second the offsets ask for: (n - 1) / (last - first)."""
    if len(offsets) < 2 or offsets[-1] <= offsets[0]:
        return None
    return (len(offsets) - 1) / float(offsets[-1] - offsets[0])
