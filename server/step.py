"""The plain data one engine step hands from stage to stage (vLLM v1's SchedulerOutput and
ModelRunnerOutput, smaller).

    plan = scheduler.schedule(now)           StepPlan      server/scheduler.py
    output = execute(runner, plan, cache)    ModelOutput   server/engine.py over server/runner.py
    result = updater.update(plan, output)    StepResult    server/update.py
    deliver(result.events)                                 server/engine.py
    on_step(result.stats)                    StepStats     server/metrics.py observe_step

Requests are shared, mutable objects (server/request.py); these hold them, they do not copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from server.request import FinishReason, Request, StreamEvent


@dataclass(frozen=True)
class StepPlan:
    """What one step does, decided before any model work."""

    dropped: tuple[tuple[Request, FinishReason], ...] = ()  # cancelled or expired: leave now
    # admitted requests by prompt length, one prefill each; rows appended in this order
    prefill_groups: tuple[tuple[Request, ...], ...] = ()
    decode: tuple[Request, ...] = ()  # the running rows 0..n-1, one new token each

    @property
    def admitted(self) -> list[Request]:
        return [request for group in self.prefill_groups for request in group]


@dataclass(frozen=True)
class Batch:
    """One model call of a step: its requests in row order and their next-token logits."""

    requests: tuple[Request, ...]
    logits: np.ndarray | None = None  # [n, V]; None when the call failed
    error: Exception | None = None  # why the call failed


@dataclass(frozen=True)
class ModelOutput:
    """What the runner made of a plan: one batch per prefill group, then the decode step."""

    prefills: tuple[Batch, ...] = ()
    decode: Batch | None = None  # None when no row was decoding

    @property
    def prefilled(self) -> list[Request]:
        """Requests whose prefill ran: they own the rows after the decoding ones, in order."""
        return [r for batch in self.prefills if batch.error is None for r in batch.requests]


@dataclass
class StepStats:
    """What one step did; the metrics observer turns this into Prometheus series."""

    batch_size: int = 0  # rows that got a token this step
    prefill_requests: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    running: int = 0
    waiting: int = 0
    kv_cache_bytes: int = 0
    queue_seconds: list[float] = field(default_factory=list)
    ttft_seconds: list[float] = field(default_factory=list)
    itl_seconds: list[float] = field(default_factory=list)
    finished: list[FinishReason] = field(default_factory=list)


@dataclass
class StepResult:
    """The update stage's output: events to deliver, in order, and the step's stats."""

    events: list[tuple[Request, StreamEvent]] = field(default_factory=list)
    stats: StepStats = field(default_factory=StepStats)
