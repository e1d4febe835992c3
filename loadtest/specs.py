"""The small languages inside option values: durations, schedules, length distributions, SLOs.

Each parser takes the option's text and returns a frozen dataclass, or raises SpecError with
a message that names what was wrong (the option parser adds the flag's name). SpecError is an
argparse.ArgumentTypeError, so each parser is an argparse `type` as it stands.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

import numpy as np

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_DURATION = re.compile(rf"^{_NUMBER}\s*(ms|s|m|h)?$")
_UNIT_S = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class SpecError(argparse.ArgumentTypeError, ValueError):
    """An option value that does not parse; the message says what was expected (argparse
    prints it as it is, after the flag's name)."""


def parse_duration(text: str) -> float:
    """ "30s", "500ms", "2m", "1h" or a plain number of seconds -> seconds."""
    m = _DURATION.match(text.strip())
    if m is None:
        raise SpecError(f"expected a duration like 30s, 500ms or 2m, got {text!r}")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def parse_positive(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SpecError(f"expected a number for {what}, got {text!r}") from None
    if not value > 0:  # `not >` also catches NaN
        raise SpecError(f"{what} must be > 0, got {text!r}")
    return value


# ---------------------------------------------------------------- open-loop schedules


@dataclass(frozen=True)
class Stage:
    """One piece of an open-loop schedule: the send rate (req/s) moves linearly from
    `start_rate` to `end_rate` over `duration_s` (equal rates: a step)."""

    start_rate: float
    end_rate: float
    duration_s: float

    @property
    def expected(self) -> float:
        """Requests this stage sends: the integral of its rate."""
        return (self.start_rate + self.end_rate) / 2 * self.duration_s

    def __str__(self) -> str:
        rate = f"{self.start_rate:g}"
        if self.end_rate != self.start_rate:
            rate += f"-{self.end_rate:g}"
        return f"{rate}:{self.duration_s:g}s"


def parse_schedule(text: str) -> tuple[Stage, ...]:
    """ "10:30s,20:30s,40:30s" (steps) and "10-40:60s" (a ramp) -> stages, in order."""
    stages = tuple(_parse_stage(part) for part in text.split(",") if part.strip())
    if not stages:
        raise SpecError("expected RATE:DURATION[,RATE:DURATION...], e.g. 10:30s,20:30s")
    if sum(s.expected for s in stages) < 1:
        raise SpecError(f"the schedule {text!r} sends no request")
    return stages


def _parse_stage(part: str) -> Stage:
    rate, sep, duration = part.strip().partition(":")
    if not sep:
        raise SpecError(f"expected RATE:DURATION or FROM-TO:DURATION, got {part.strip()!r}")
    low, _, high = rate.partition("-")
    try:
        start, end = float(low), float(high or low)
    except ValueError:
        raise SpecError(f"expected a rate in req/s, got {rate!r}") from None
    if start < 0 or end < 0 or start != start or end != end:
        raise SpecError(f"rates must be >= 0, got {rate!r}")
    seconds = parse_duration(duration)
    if seconds <= 0:
        raise SpecError(f"a stage must last > 0 s, got {duration!r}")
    return Stage(start, end, seconds)


# ---------------------------------------------------------------- synthetic lengths

_KINDS = {"uniform": 2, "normal": 2}


@dataclass(frozen=True)
class LengthDist:
    """A token-length distribution: fixed N, uniform:LO:HI (inclusive) or normal:MEAN:STD
    (rounded, at least 1)."""

    kind: str
    a: float
    b: float = 0.0

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "fixed":
            values = np.full(n, self.a)
        elif self.kind == "uniform":
            values = rng.integers(int(self.a), int(self.b) + 1, size=n)
        else:
            values = np.rint(rng.normal(self.a, self.b, size=n))
        return np.maximum(values, 1).astype(np.int64)

    @property
    def mean(self) -> float:
        return self.a if self.kind != "uniform" else (self.a + self.b) / 2

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"{self.a:g}"
        return f"{self.kind}:{self.a:g}:{self.b:g}"


def parse_length(text: str) -> LengthDist:
    """ "128", "uniform:64:256" or "normal:128:32" -> LengthDist."""
    kind, *args = text.strip().split(":")
    try:
        if not args:
            dist = LengthDist("fixed", float(int(kind)))
        elif kind in _KINDS and len(args) == _KINDS[kind]:
            dist = LengthDist(kind, *(float(a) for a in args))
        else:
            raise ValueError
    except ValueError:
        raise SpecError(
            f"expected N, uniform:LO:HI or normal:MEAN:STD (tokens), got {text!r}"
        ) from None
    if dist.a < 1 or dist.b < 0 or (dist.kind == "uniform" and dist.b < dist.a):
        raise SpecError(f"token lengths must be >= 1 (and LO <= HI), got {text!r}")
    return dist


# ---------------------------------------------------------------- service-level objectives

SLO_NAMES = ("ttft", "tpot", "e2e")


@dataclass(frozen=True)
class Slo:
    """Service-level objectives in seconds; a request is "good" when it meets all set ones."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.ttft_s, self.tpot_s, self.e2e_s))

    def items(self) -> list[tuple[str, float]]:
        """(name, seconds) of the objectives that are set."""
        values = (self.ttft_s, self.tpot_s, self.e2e_s)
        return [(n, v) for n, v in zip(SLO_NAMES, values, strict=True) if v is not None]

    def to_dict(self) -> dict[str, float]:
        return {f"{name}_s": value for name, value in self.items()}

    def __str__(self) -> str:
        return " ".join(f"{n}<={v * 1e3:g}ms" for n, v in self.items()) or "none"


def parse_slos(values: list[str]) -> Slo:
    """["ttft=0.5,tpot=50ms", "e2e=2s"] -> Slo (plain numbers are seconds)."""
    found: dict[str, float] = {}
    for value in values:
        for part in filter(None, (p.strip() for p in value.split(","))):
            name, sep, limit = part.partition("=")
            if not sep or name.strip() not in SLO_NAMES:
                raise SpecError(f"expected NAME=LIMIT with NAME in ttft, tpot, e2e; got {part!r}")
            seconds = parse_duration(limit)
            if seconds <= 0:
                raise SpecError(f"an SLO must be > 0, got {part!r}")
            found[f"{name.strip()}_s"] = seconds
    return Slo(**found)


# ---------------------------------------------------------------- warmup


@dataclass(frozen=True)
class Warmup:
    """Requests (closed loop: sent first; open loop: the schedule's start) kept out of the
    figures: a count, or a time span."""

    requests: int = 0
    seconds: float = 0.0


def parse_warmup(text: str) -> Warmup:
    """ "20" (requests) or "5s" / "500ms" (seconds) -> Warmup."""
    text = text.strip()
    if text.isdigit():
        return Warmup(requests=int(text))
    try:
        return Warmup(seconds=parse_duration(text))
    except SpecError:
        raise SpecError(f"expected a request count (20) or a duration (5s), got {text!r}") from None
