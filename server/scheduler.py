"""Iteration-level scheduling policy (Orca / vLLM / TGI): who leaves, who joins, which rows
decode, decided anew at every engine step.

Policy only: no model, no sampling, no text. `schedule()` drops cancelled and expired
requests (their cache rows leave at once, so their slots go to this step's admissions),
admits waiting ones within the batch size, the token budget and the step's prefill budget,
groups them by prompt length for batched prefills, and returns the plan (server/step.py).
The engine runs it and the update stage finishes requests; `end_step` then places the new
rows and frees finished ones, so a slot is reused on the next step. `running[i]` owns row i
of the slot cache.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from server.kv_cache import SlotCache
from server.request import FinishReason, Request, RequestStatus
from server.step import ModelOutput, StepPlan, StepStats

PREFILL_PADDING = 0.25  # padded prompt tokens allowed per batched prefill, over the real ones


class QueueFull(Exception):
    """The waiting queue is at its bound; the caller should retry later."""


@dataclass(frozen=True)
class SchedulerConfig:
    # kvserve-serve's options; their defaults are ServeConfig's (server/config.py)
    max_batch_size: int  # running rows (and the slot cache's rows)
    max_batch_tokens: int  # sum over running rows of prompt + max_new_tokens
    max_queue: int
    # prompt tokens prefilled per step (vLLM's max_num_batched_tokens, whole prompts): rows
    # already decoding wait at most this much prefill for their next token; 0 = no limit
    max_prefill_tokens: int


def prefill_groups(requests: list[Request]) -> list[list[Request]]:
    """Admitted requests by prompt length, one batched prefill per group.

    A batched prefill pads every prompt to the longest, and padding costs as much compute as
    real tokens (a 16-token prompt beside a 256-token one costs 16x). Groups are cut where
    padding would exceed PREFILL_PADDING of the group's real tokens."""
    groups: list[list[Request]] = []
    tokens = 0
    for request in sorted(requests, key=lambda r: len(r.prompt_ids)):
        n = len(request.prompt_ids)  # the longest so far: prompts come shortest first
        if not groups or (len(groups[-1]) + 1) * n > (1 + PREFILL_PADDING) * (tokens + n):
            groups.append([])
            tokens = 0
        groups[-1].append(request)
        tokens += n
    return groups


class Scheduler:
    def __init__(self, config: SchedulerConfig, cache: SlotCache) -> None:
        self.config = config
        self.cache = cache
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # running[i] owns cache row i
        self.prefilling: list[Request] = []  # admitted this step, no row yet
        self._lock = threading.Lock()  # `add` comes from the service thread

    def add(self, request: Request) -> None:
        with self._lock:
            if len(self.waiting) >= self.config.max_queue:
                raise QueueFull(f"waiting queue is full ({self.config.max_queue} requests)")
            self.waiting.append(request)

    def has_work(self) -> bool:
        return bool(self.running or self.waiting or self.prefilling)

    def schedule(self, now: float) -> StepPlan:
        dropped = self._drop_abandoned(now)
        self.prefilling = self._admit(now)
        groups = tuple(tuple(group) for group in prefill_groups(self.prefilling))
        return StepPlan(dropped, groups, tuple(self.running))

    def end_step(self, prefilled: list[Request]) -> None:
        """After the update stage: `prefilled` (those whose prefill ran, in row order) own the
        rows after the decoding ones; finished rows leave, so their slots are free next step."""
        self.running, self.prefilling = self.running + prefilled, []
        self._keep([i for i, r in enumerate(self.running) if r.status is RequestStatus.RUNNING])

    def finish_step(self, plan: StepPlan, output: ModelOutput) -> None:
        """The engine's hand-back after a step (the paged scheduler's twin)."""
        self.end_step(output.prefilled)

    def observe(self, stats: StepStats) -> None:
        """The paged scheduler reports its blocks here; slots have nothing more to say."""

    def start_over(self, runner) -> list[Request]:
        """After a step that crashed: every request leaves, with a fresh cache from `runner`."""
        return self.abandon_all(runner.new_cache(self.config.max_batch_size))

    def abandon_all(self, cache: SlotCache) -> list[Request]:
        """After a step that crashed: every request leaves (the caller fails them) and `cache`,
        empty, replaces the old one, which may disagree with `running` after a step that broke
        half-way."""
        with self._lock:
            waiting, self.waiting = list(self.waiting), deque()
        requests = self.running + self.prefilling + waiting
        self.running, self.prefilling, self.cache = [], [], cache
        return requests

    def _drop_abandoned(self, now: float) -> tuple[tuple[Request, FinishReason], ...]:
        """Cancelled or past-deadline requests leave before any work is spent on them."""
        with self._lock:
            gone = [r for r in self.waiting if _abandoned(r, now)]
            for request in gone:
                self.waiting.remove(request)
        flags = [_abandoned(r, now) for r in self.running]  # read once: `cancelled` may change
        if any(flags):
            gone += [r for r, flag in zip(self.running, flags, strict=True) if flag]
            self._keep([i for i, flag in enumerate(flags) if not flag])
        return tuple((r, _abandon_reason(r)) for r in gone)

    def _admit(self, now: float) -> list[Request]:
        cfg = self.config
        budget = cfg.max_batch_tokens - sum(_token_need(r) for r in self.running)
        prefill_budget = cfg.max_prefill_tokens or float("inf")
        admitted: list[Request] = []
        with self._lock:
            while self.waiting and len(self.running) + len(admitted) < cfg.max_batch_size:
                need = _token_need(self.waiting[0])
                if need > budget and (self.running or admitted):
                    break  # a lone oversized request still runs, or it would wait forever
                prompt = len(self.waiting[0].prompt_ids)
                if prompt > prefill_budget and admitted:
                    break  # the rest next step; one prompt a step at least, however long
                request = self.waiting.popleft()
                budget -= need
                prefill_budget -= prompt
                request.status, request.scheduled_at = RequestStatus.RUNNING, now
                admitted.append(request)
        return admitted

    def _keep(self, survivors: list[int]) -> None:
        """Only these rows stay; the cache moves the fewest rows to close the gaps."""
        if len(survivors) < len(self.running):
            order = self.cache.keep(survivors)
            self.running = [self.running[i] for i in order]


def _token_need(request: Request) -> int:
    return len(request.prompt_ids) + request.params.max_new_tokens


def _abandoned(request: Request, now: float) -> bool:
    return request.cancelled or (request.deadline is not None and now >= request.deadline)


def _abandon_reason(request: Request) -> FinishReason:
    return FinishReason.CANCELLED if request.cancelled else FinishReason.DEADLINE
