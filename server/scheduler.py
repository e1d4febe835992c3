"""Iteration-level scheduling (Orca / vLLM / TGI): one `step()` = schedule -> execute -> update.

Plain Python over a `Runner` protocol, so it is unit-tested with a fake runner. Each step
drops cancelled and expired requests, admits waiting ones (one batched prefill), decodes one
token for every running sequence, samples, streams each new piece and frees finished rows at
once, so their batch slot is reused on the next step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from server.kv_cache import SlotCache
from server.request import FinishReason, Request, RequestStatus, StreamEvent
from server.sampling import select_tokens

log = logging.getLogger(__name__)
NO_TOKENS = np.zeros(0, dtype=np.int64)
PREFILL_PADDING = 0.25  # padded prompt tokens allowed per batched prefill, over the real ones


class QueueFull(Exception):
    """The waiting queue is at its bound; the caller should retry later."""


class Runner(Protocol):
    def new_cache(self, max_rows: int) -> SlotCache:
        """An empty cache for up to `max_rows` sequences."""

    def prefill(self, cache: SlotCache, prompts: list[list[int]]) -> np.ndarray:
        """Append a row per prompt to the cache; logits of each prompt's last token `[n, V]`."""

    def decode(self, cache: SlotCache, tokens: np.ndarray) -> np.ndarray:
        """Feed one token to each of the first `len(tokens)` rows; their logits `[B, V]`."""


@dataclass(frozen=True)
class SchedulerConfig:
    eos_token_id: int
    max_context: int  # the model's max positions
    # kvserve-serve's options; their defaults are ServeConfig's (server/config.py)
    max_batch_size: int
    max_batch_tokens: int  # sum over running rows of prompt + max_new_tokens
    max_queue: int


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
    def __init__(self, runner: Runner, config: SchedulerConfig) -> None:
        self.runner = runner
        self.config = config
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # running[i] owns cache row i
        self.cache = runner.new_cache(config.max_batch_size)
        self._lock = threading.Lock()  # `add` comes from the service thread

    def add(self, request: Request) -> None:
        with self._lock:
            if len(self.waiting) >= self.config.max_queue:
                raise QueueFull(f"waiting queue is full ({self.config.max_queue} requests)")
            self.waiting.append(request)

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def step(self) -> StepStats:
        start = time.monotonic()
        stats = StepStats()
        self._drop_abandoned(start, stats)
        admitted = self._admit(start, stats)
        decoding = self.running
        if admitted:
            self._prefill(admitted, stats)  # rows appended after the decoding ones
        if decoding:
            self._decode(decoding, stats)
        self._release_finished()
        stats.seconds = time.monotonic() - start
        stats.running, stats.waiting = len(self.running), len(self.waiting)
        stats.kv_cache_bytes = self.cache.nbytes
        return stats

    # -- schedule --------------------------------------------------------------------------
    def _drop_abandoned(self, now: float, stats: StepStats) -> None:
        """Cancelled or past-deadline requests leave before any work is spent on them."""
        with self._lock:
            for request in [r for r in self.waiting if _abandoned(r, now)]:
                self.waiting.remove(request)
                self._finish(request, _abandon_reason(request), now, stats)
        gone = [i for i, r in enumerate(self.running) if _abandoned(r, now)]
        for i in gone:
            self._finish(self.running[i], _abandon_reason(self.running[i]), now, stats)
        if gone:
            self._release_finished()

    def _admit(self, now: float, stats: StepStats) -> list[Request]:
        cfg = self.config
        budget = cfg.max_batch_tokens - sum(_token_need(r) for r in self.running)
        admitted: list[Request] = []
        with self._lock:
            while self.waiting and len(self.running) + len(admitted) < cfg.max_batch_size:
                need = _token_need(self.waiting[0])
                if need > budget and (self.running or admitted):
                    break  # a lone oversized request still runs, or it would wait forever
                request = self.waiting.popleft()
                budget -= need
                request.status, request.scheduled_at = RequestStatus.RUNNING, now
                stats.queue_seconds.append(now - request.arrival)
                admitted.append(request)
        return admitted

    # -- execute ---------------------------------------------------------------------------
    def _prefill(self, requests: list[Request], stats: StepStats) -> None:
        stats.prefill_requests = len(requests)
        stats.prompt_tokens = sum(len(r.prompt_ids) for r in requests)
        for group in prefill_groups(requests):
            try:
                logits = self.runner.prefill(self.cache, [r.prompt_ids for r in group])
            except Exception as error:  # a bad step fails its own requests, not the server
                self._fail(group, error, stats)
                continue
            self.running = self.running + group
            self._update_or_fail(group, logits, stats)

    def _decode(self, requests: list[Request], stats: StepStats) -> None:
        tokens = np.array([r.output_ids[-1] for r in requests], dtype=np.int64)
        try:
            logits = self.runner.decode(self.cache, tokens)
        except Exception as error:
            self._fail(requests, error, stats)
            return
        self._update_or_fail(requests, logits, stats)

    # -- update ----------------------------------------------------------------------------
    def _update_or_fail(
        self, requests: list[Request], logits: np.ndarray, stats: StepStats
    ) -> None:
        """Sampling bugs or odd knobs fail this step's requests, never the engine loop."""
        try:
            self._update(requests, logits, stats)
        except Exception as error:
            self._fail([r for r in requests if r.status is RequestStatus.RUNNING], error, stats)

    def _update(self, requests: list[Request], logits: np.ndarray, stats: StepStats) -> None:
        params = [r.params for r in requests]
        seen = [
            NO_TOKENS if r.params.repetition_penalty == 1.0 else r.seen_tokens for r in requests
        ]
        uniforms = np.array([r.rng.random() for r in requests])
        tokens = select_tokens(logits, params, seen, uniforms)
        now = time.monotonic()
        stats.batch_size += len(requests)
        stats.generated_tokens += len(requests)
        for request, token in zip(requests, tokens.tolist(), strict=True):
            self._append(request, token, now, stats)

    def _append(self, request: Request, token: int, now: float, stats: StepStats) -> None:
        if request.first_token_at is None:
            request.first_token_at = now
            stats.ttft_seconds.append(now - request.arrival)
        else:
            stats.itl_seconds.append(now - request.last_token_at)
        request.last_token_at = now
        request.output_ids.append(token)
        if token == self.config.eos_token_id and not request.params.ignore_eos:
            self._finish(request, FinishReason.STOP, now, stats, token_ids=[token])
            return
        piece = request.text.push(token)
        reason = self._finish_reason(request)
        if reason is None:
            _emit(request, StreamEvent(piece, [token], request.request_id))
        else:
            self._finish(request, reason, now, stats, piece, [token])

    def _finish_reason(self, request: Request) -> FinishReason | None:
        if request.text.stopped:
            return FinishReason.STOP
        if len(request.output_ids) >= request.params.max_new_tokens:
            return FinishReason.LENGTH
        if len(request.prompt_ids) + len(request.output_ids) >= self.config.max_context:
            return FinishReason.LENGTH
        return None

    def _finish(
        self,
        request: Request,
        reason: FinishReason,
        now: float,
        stats: StepStats,
        piece: str = "",
        token_ids: list[int] | None = None,
        error: str = "",
    ) -> None:
        request.status = RequestStatus.FINISHED
        if reason in (FinishReason.STOP, FinishReason.LENGTH):
            piece += request.text.flush()
        stats.finished.append(reason)
        _emit(
            request,
            StreamEvent(
                text=piece,
                token_ids=token_ids or [],
                request_id=request.request_id,
                finish_reason=reason,
                prompt_tokens=len(request.prompt_ids),
                completion_tokens=len(request.output_ids),
                timing=request.timing(now),
                error=error,
            ),
        )

    def _fail(self, requests: list[Request], error: Exception, stats: StepStats) -> None:
        ids = [r.request_id for r in requests]
        log.exception("engine step failed for requests %s", ids, exc_info=error)
        now = time.monotonic()
        for request in requests:
            self._finish(request, FinishReason.ERROR, now, stats, error=_describe(error))

    def fail_all(self, error: Exception) -> None:
        """Last resort when a step raised: fail every request, start over with an empty cache.

        The cache and the running list may disagree after a step that broke half-way, so
        nothing of them is kept; the server goes on serving new requests."""
        with self._lock:
            waiting, self.waiting = list(self.waiting), deque()
        requests, self.running = self.running + waiting, []
        ids = [r.request_id for r in requests]
        log.error("engine step crashed; failing requests %s", ids, exc_info=error)
        now, stats = time.monotonic(), StepStats()
        for request in requests:
            if request.status is not RequestStatus.FINISHED:
                self._finish(request, FinishReason.ERROR, now, stats, error=_describe(error))
        self.cache = self.runner.new_cache(self.config.max_batch_size)

    def _release_finished(self) -> None:
        """Finished rows leave the cache at once, so their slots are free on the next step."""
        survivors = [i for i, r in enumerate(self.running) if r.status is RequestStatus.RUNNING]
        if len(survivors) < len(self.running):
            order = self.cache.keep(survivors)
            self.running = [self.running[i] for i in order]


def _emit(request: Request, event: StreamEvent) -> None:
    """Hand an event to the request's sink; a broken sink (its event loop closed, say) ends
    that request only."""
    try:
        request.emit(event)
    except Exception:
        log.warning("cannot deliver to request %s; dropping it", request.request_id, exc_info=True)
        request.cancelled = True


def _describe(error: Exception) -> str:
    return str(error) or repr(error)


def _token_need(request: Request) -> int:
    return len(request.prompt_ids) + request.params.max_new_tokens


def _abandoned(request: Request, now: float) -> bool:
    return request.cancelled or (request.deadline is not None and now >= request.deadline)


def _abandon_reason(request: Request) -> FinishReason:
    return FinishReason.CANCELLED if request.cancelled else FinishReason.DEADLINE
