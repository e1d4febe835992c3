"""The plain data one engine step hands from stage to stage (vLLM v1's SchedulerOutput and
ModelRunnerOutput, smaller).

    plan = scheduler.schedule(now)           StepPlan      server/scheduler.py
    output = execute(runner, plan, cache)    ModelOutput   server/engine.py execute_chunks over
                                                           server/paged_runner.py, or
                                                           server/slot_chunks.py over
                                                           server/runner.py (the fused graph)
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
class Chunk:
    """One sequence's share of a token-budget step (paged cache): its tokens at positions
    `start .. start + length - 1` (prompt then generated ids) run in the step's one call."""

    request: Request
    start: int  # tokens already in the cache: the chunk's first position
    length: int
    sample: bool  # the chunk ends at the sequence's last token: its logits pick the next one
    # prompt scoring (prompt_logprobs): the logits of every position come back, not just the last
    score: bool = False


@dataclass(frozen=True)
class StepPlan:
    """What one step does, decided before any model work: every running sequence's tokens of
    this step (`chunks`, decoding ones first), who leaves and who joins."""

    dropped: tuple[tuple[Request, FinishReason], ...] = ()  # cancelled or expired: leave now
    chunks: tuple[Chunk, ...] = ()
    joined: tuple[Request, ...] = ()  # requests admitted this step (their first chunk)

    @property
    def admitted(self) -> list[Request]:
        return list(self.joined)

    @property
    def tokens(self) -> int:
        """Tokens the step's model calls run."""
        return sum(chunk.length for chunk in self.chunks)


@dataclass(frozen=True)
class Batch:
    """One model call of a step: its requests in row order and their next-token logits."""

    requests: tuple[Request, ...]
    logits: np.ndarray | None = None  # [n, V]; None when the call failed
    error: Exception | None = None  # why the call failed


@dataclass(frozen=True)
class Scored:
    """A scoring chunk's logits at each of its positions: row i predicts the token at
    position `start + i + 1`."""

    request: Request
    start: int
    logits: np.ndarray  # [length, V]


@dataclass(frozen=True)
class ModelOutput:
    """What the runner made of a plan: the requests whose chunk ended at their last token,
    with its logits; and those whose call failed, with the error (their cache writes are not
    kept)."""

    sampled: Batch | None = None
    failed: tuple[Batch, ...] = ()  # one per failed call: its requests and the error
    scored: tuple[Scored, ...] = ()  # the chunks that score their prompt positions


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
    # paged cache: blocks now, and this step's prefix-cache lookups and preemptions
    kv_blocks_used: int = 0
    kv_blocks_free: int = 0
    prefix_queried_tokens: int = 0
    prefix_hit_tokens: int = 0
    preemptions: int = 0
    queue_seconds: list[float] = field(default_factory=list)
    ttft_seconds: list[float] = field(default_factory=list)
    itl_seconds: list[float] = field(default_factory=list)
    finished: list[FinishReason] = field(default_factory=list)


@dataclass
class StepResult:
    """The update stage's output: events to deliver, in order, and the step's stats."""

    events: list[tuple[Request, StreamEvent]] = field(default_factory=list)
    stats: StepStats = field(default_factory=StepStats)
