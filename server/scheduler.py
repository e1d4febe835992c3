"""Token-budget scheduling (vLLM v1's scheduler, in one screen): kvserve's one scheduler, for
the paged KV cache (CPU, kvserve's attention kernel) and the slot cache (the fused graph:
CUDA) alike.

Policy only: no model, no sampling, no text. Every step has one budget of tokens
(`max_step_tokens`). `schedule()` drops cancelled and expired requests (their blocks are free
for this very step), then gives each running sequence its next tokens in admission order:
a decoding sequence its one new token, a sequence still prefilling its next prompt chunk,
then admits waiting requests first come first served while the budget and the free blocks
last. A long prompt is cut into chunks, so no decoding sequence waits for all of it; the
tokens of all chunks run as one flattened call (server/step.py `Chunk`).

Memory is blocks (server/blocks.py, the only owner of their bookkeeping): a request is
admitted when the blocks for its whole prompt are free (after prefix-cache hits); a running
sequence that needs a block when none is free preempts the most recently admitted one, which
goes back to the front of the queue and is recomputed later (vLLM's preemption by
recompute). `end_step` records what the step computed (full blocks enter the prefix cache)
and frees finished sequences' blocks.

Time (`itl_target_s`): the decoding sequences wait for the whole step, prompt chunks
included, so a step with decoding sequences also has a time cap: prompt chunks are cut to
what the step-cost model (server/step_cost.py, fitted on the steps run so far) says fits.

Whole prompts (`chunked_prefill` off, the slot cache: its graph prefills a prompt into a new
row in one call): a prompt is admitted only whole, within the budget, or alone beside the
decoding sequences when it is longer; every decoding sequence gets its token every step
(the fused graph feeds every row), whatever the budget. server/slot_chunks.py runs such plans.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from server.blocks import BlockManager
from server.request import FinishReason, Request, RequestStatus
from server.step import Chunk, ModelOutput, StepPlan, StepStats
from server.step_cost import StepClock, StepCostModel, attended

# prompt tokens a step runs whatever its time cap says (one block): waiting requests move
PROMPT_FLOOR_TOKENS = 16


class QueueFull(Exception):
    """The waiting queue is at its bound; the caller should retry later."""


@dataclass(frozen=True)
class SchedulerConfig:
    max_batch_size: int  # running sequences at most
    max_queue: int
    max_step_tokens: int  # tokens per step: decoding sequences' plus prefill chunks'
    # seconds a step with decoding sequences aims at (their inter-token latency); 0 = off
    itl_target_s: float = 0.0
    chunked_prefill: bool = True  # off: whole prompts only (the slot cache)


class Scheduler:
    def __init__(self, config: SchedulerConfig, cache) -> None:
        """`cache`: a PagedCache (server/paged_runner.py) or a SlotPool
        (server/slot_chunks.py); its `blocks` is the BlockManager."""
        self.config = config
        self.cache = cache
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # admission order; each holds a block table
        self.preempted = 0  # sequences sent back to the queue for lack of blocks, in all
        self._reported = (0, 0, 0)  # (queried, hit, preempted) at the last `observe`
        self.cost = StepCostModel()
        self._planned = (0, 0.0)  # (tokens, attended pairs) of the last plan, for `observe`
        self._lock = threading.Lock()  # `add` comes from the service thread

    @property
    def blocks(self) -> BlockManager:
        return self.cache.blocks

    def add(self, request: Request) -> None:
        with self._lock:
            if len(self.waiting) >= self.config.max_queue:
                raise QueueFull(f"waiting queue is full ({self.config.max_queue} requests)")
            self.waiting.append(request)

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def schedule(self, now: float) -> StepPlan:
        dropped = self._drop_abandoned(now)
        budget = self.config.max_step_tokens
        clock = self._clock()
        chunks: list[Chunk] = []
        # in admission order: sequences still prefilling are the newest (a request joins only
        # once the one before it got its whole prompt), so decoding ones come first, and a
        # victim taken from the end has no chunk yet
        whole = not self.config.chunked_prefill
        for request in list(self.running):
            if budget <= 0 and not whole:
                break
            if request not in self.running:
                break  # preempted for an earlier sequence: so are the rest
            # whole prompts: every sequence running is decoding, and each gets its token
            length = 1 if whole else min(_uncomputed(request), budget)
            if request.output_ids and length == 1:
                clock.decode(request.computed)
            elif (length := clock.prompt_chunk(request.computed, length)) == 0:
                break  # out of time: the rest are prompts too
            if not self._reserve(request, request.computed + length):
                break  # it had to go itself
            chunks.append(_chunk(request, length))
            budget -= length
        joined = self._admit(now, budget, chunks, clock)
        self._planned = (
            sum(c.length for c in chunks),
            sum(attended(c.start, c.length) for c in chunks),
        )
        return StepPlan(dropped=dropped, chunks=tuple(chunks), joined=tuple(joined))

    def finish_step(self, plan: StepPlan, output: ModelOutput) -> None:
        """After the update stage: what the step computed is in the cache (its full blocks
        enter the prefix cache); finished sequences free their blocks."""
        failed = {id(r) for batch in output.failed for r in batch.requests}
        for chunk in plan.chunks:
            request = chunk.request
            if id(request) not in failed and request.blocks is not None:
                request.computed = chunk.start + chunk.length
                self.blocks.commit(request.blocks, request.token_ids, request.computed)
        for request in [r for r in self.running if r.status is RequestStatus.FINISHED]:
            self._leave(request)

    def observe(self, stats: StepStats) -> None:
        """Blocks in use now; prefix-cache lookups and preemptions since the last step. The
        step's time teaches the step-cost model."""
        self.cost.observe(*self._planned, stats.seconds)
        blocks = self.blocks
        stats.kv_blocks_used, stats.kv_blocks_free = blocks.used_blocks, blocks.free_blocks
        now = (blocks.queried_tokens, blocks.hit_tokens, self.preempted)
        queried, hit, preempted = (a - b for a, b in zip(now, self._reported, strict=True))
        stats.prefix_queried_tokens, stats.prefix_hit_tokens, stats.preemptions = (
            max(queried, 0),  # a reset cache starts its counts over
            max(hit, 0),
            preempted,
        )
        self._reported = now

    def start_over(self) -> list[Request]:
        """After a step that crashed: every request leaves (the caller fails them) and the
        cache starts over empty."""
        with self._lock:
            waiting, self.waiting = list(self.waiting), deque()
        requests = self.running + waiting
        self.running = []
        self.cache.reset()
        for request in requests:
            request.blocks, request.computed = None, 0
        return requests

    def _clock(self) -> StepClock | _NoClock:
        fit, target = self.cost.fit, self.config.itl_target_s
        if fit is None or target <= 0 or not self.config.chunked_prefill:
            return _NoClock()  # whole prompts cannot be cut to a time
        return StepClock(fit, target, PROMPT_FLOOR_TOKENS)

    def _admit(
        self, now: float, budget: int, chunks: list[Chunk], clock: StepClock | _NoClock
    ) -> list[Request]:
        joined: list[Request] = []
        whole, admitted = not self.config.chunked_prefill, 0
        with self._lock:
            while self.waiting and len(self.running) < self.config.max_batch_size:
                if budget <= 0 and not (whole and admitted == 0):
                    break
                request = self.waiting[0]
                tokens = request.token_ids  # a preempted request recomputes its answer too
                # a prompt scored token by token runs every position: no prefix-cache hits
                table = self.blocks.admit(tokens, lookup=request.params.prompt_logprobs is None)
                # (the last token always runs: length >= 1 before the clock has its say)
                uncomputed = len(tokens) - table.cached_tokens
                length = clock.prompt_chunk(table.cached_tokens, min(uncomputed, budget))
                if whole and length < uncomputed:
                    # whole prompts only: one over the budget runs as the step's only prompt
                    length = uncomputed if admitted == 0 else 0
                # the whole prompt's blocks now, so a prefill in chunks cannot run dry midway
                if length == 0 or not self.blocks.can_reserve(table, len(tokens)):
                    self.blocks.release(table)
                    break
                self.waiting.popleft()
                request.blocks, request.computed = table, table.cached_tokens
                self.blocks.reserve(table, len(tokens))
                if request.scheduled_at is None:  # not a preempted one coming back
                    request.scheduled_at = now
                    joined.append(request)
                request.status = RequestStatus.RUNNING
                self.running.append(request)
                chunks.append(_chunk(request, length))
                budget -= length
                admitted += 1
        return joined

    def _reserve(self, request: Request, tokens: int) -> bool:
        """Blocks for `request` to hold `tokens`, preempting the newest sequences as needed;
        False when `request` itself had to go."""
        while not self.blocks.reserve(request.blocks, tokens):
            victim = self.running[-1]
            self._preempt(victim)
            if victim is request:
                return False
        return True

    def _preempt(self, request: Request) -> None:
        """Back to the front of the queue, its blocks freed: recomputed when readmitted."""
        self._leave(request)
        request.computed, request.status = 0, RequestStatus.WAITING
        with self._lock:
            self.waiting.appendleft(request)
        self.preempted += 1

    def _leave(self, request: Request) -> None:
        self.running.remove(request)
        if request.blocks is not None:
            self.blocks.release(request.blocks)
            request.blocks = None

    def _drop_abandoned(self, now: float) -> tuple[tuple[Request, FinishReason], ...]:
        """Cancelled or past-deadline requests leave before any work is spent on them."""
        with self._lock:
            gone = [r for r in self.waiting if _abandoned(r, now)]
            for request in gone:
                self.waiting.remove(request)
        leaving = [r for r in self.running if _abandoned(r, now)]  # `cancelled` may change
        for request in leaving:
            self._leave(request)
        return tuple((r, _abandon_reason(r)) for r in gone + leaving)


class _NoClock:
    """No time cap (off, or the cost model still learning): the token budget rules."""

    def decode(self, start: int) -> None:
        pass

    def prompt_chunk(self, start: int, length: int) -> int:
        return length


def _abandoned(request: Request, now: float) -> bool:
    return request.cancelled or (request.deadline is not None and now >= request.deadline)


def _abandon_reason(request: Request) -> FinishReason:
    return FinishReason.CANCELLED if request.cancelled else FinishReason.DEADLINE


def _uncomputed(request: Request) -> int:
    """Tokens not in the cache yet: 1 for a decoding sequence, the rest of a prompt."""
    return len(request.prompt_ids) + len(request.output_ids) - request.computed


def _chunk(request: Request, length: int) -> Chunk:
    total = len(request.prompt_ids) + len(request.output_ids)
    start = request.computed
    # prompt_logprobs: a chunk whose positions predict prompt tokens returns all its logits
    score = request.params.prompt_logprobs is not None and start + 1 < len(request.prompt_ids)
    return Chunk(request, start, length, start + length == total, score)
