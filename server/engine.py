"""The engine: one step is schedule -> execute -> update -> deliver, run in its own thread.

    plan = scheduler.schedule()              who leaves, who joins, which tokens run
    output = execute(runner, plan, cache)    the model calls: logits
    result = updater.update(plan, output)    sample, detokenize, stop, finish: events + stats
    deliver(result.events)                   hand each event to its request's sink
    scheduler.finish_step(plan, output)      what was computed is kept, finished ones leave

One scheduler (server/scheduler.py), two executions of its plan: over the paged cache
(`execute_chunks`: every sequence's tokens of the step flattened into one call) and over the
slot cache of the fused graph (server/slot_chunks.py `execute_slots`: a decode call over the
rows, a prefill call per group of new prompts).

The data between the stages is in server/step.py. The loop runs steps while there is work
and sleeps when there is none. ONNX Runtime releases the GIL, so the asyncio service thread
stays responsive while a step runs. The service hands requests in with `submit`
(thread-safe) and gets results back through each request's `emit`, which the service points
at its asyncio loop (server/event_inbox.py: one wake-up per step). Whatever a step throws,
the loop lives on: its requests fail and the cache starts over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from server.kv_cache import CacheLost
from server.request import Request, StreamEvent
from server.scheduler import Scheduler
from server.step import Batch, Chunk, ModelOutput, Scored, StepPlan, StepStats
from server.update import Updater

log = logging.getLogger(__name__)


def execute_chunks(runner, plan: StepPlan, cache) -> ModelOutput:
    """Run a paged plan: all chunks in one call (server/paged_runner.py).

    A call that raises is retried one chunk at a time, so a failure stays with the sequence
    that causes it and the rest of the step goes on (a chunk run again rewrites the same
    positions with the same values). The failed ones' writes are not kept: the scheduler
    commits nothing of theirs."""
    if not plan.chunks:
        return ModelOutput()
    try:
        return _sampled(plan.chunks, runner.run_chunks(cache, plan.chunks))
    except CacheLost:
        raise
    except Exception as error:  # one bad sequence must not fail its whole step
        if len(plan.chunks) == 1:
            return ModelOutput(failed=(Batch((plan.chunks[0].request,), error=error),))
    done, logits, failed = [], [], []
    for chunk in plan.chunks:
        try:
            rows = runner.run_chunks(cache, (chunk,))
        except CacheLost:
            raise
        except Exception as error:
            failed.append(Batch((chunk.request,), error=error))
            continue
        done.append(chunk)
        logits.append(rows.copy())  # the runner's buffer is reused by the next call
    output = _sampled(tuple(done), np.concatenate(logits) if logits else None)
    return replace(output, failed=tuple(failed))


def _sampled(chunks: tuple[Chunk, ...], logits: np.ndarray | None) -> ModelOutput:
    """Split the step's logits rows (server/paged_runner.py `forward`): a scoring chunk's
    rows are its positions (the last one samples, when the chunk samples), another sampling
    chunk's its one row."""
    sampled = tuple(chunk.request for chunk in chunks if chunk.sample)
    if not any(chunk.score for chunk in chunks):
        return ModelOutput(sampled=Batch(sampled, logits) if sampled else None)
    scored, picks, row = [], [], 0
    for chunk in chunks:
        if chunk.score:
            scored.append(Scored(chunk.request, chunk.start, logits[row : row + chunk.length]))
            row += chunk.length
            if chunk.sample:
                picks.append(row - 1)
        elif chunk.sample:
            picks.append(row)
            row += 1
    batch = Batch(sampled, logits[picks]) if sampled else None
    return ModelOutput(sampled=batch, scored=tuple(scored))


def deliver(events: Sequence[tuple[Request, StreamEvent]]) -> None:
    """Hand each event to its request's sink; a broken sink (its event loop closed, say) ends
    that request only: it is dropped at the next step."""
    for request, event in events:
        try:
            request.emit(event)
        except Exception:
            log.warning("cannot deliver to %s; dropping it", request.request_id, exc_info=True)
            request.cancelled = True


class Engine:
    def __init__(
        self,
        runner,  # server/paged_runner.py PagedRunner or server/runner.py OnnxRunner (or a fake)
        scheduler: Scheduler,
        updater: Updater,
        on_step: Callable[[StepStats], None] | None = None,
        execute: Callable[..., ModelOutput] = execute_chunks,
    ) -> None:
        self.runner = runner
        self.execute = execute
        # prompt_logprobs need logits at every prompt position: the paged runner's head
        self.scores_prompts = bool(getattr(runner, "scores_prompts", False))
        self.scheduler = scheduler
        self.updater = updater
        self.on_step = on_step
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kvserve-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)

    def busy(self) -> bool:
        """Requests waiting or running (read from another thread: a snapshot, for polling)."""
        return self.scheduler.has_work()

    def submit(self, request: Request) -> None:
        """Queue a request (raises QueueFull when the waiting queue is at its bound)."""
        self.scheduler.add(request)
        self._wake.set()

    def step(self) -> StepStats:
        start = time.monotonic()
        plan = self.scheduler.schedule(start)
        output = self.execute(self.runner, plan, self.scheduler.cache)
        result = self.updater.update(plan, output)
        deliver(result.events)  # first: if anything after this fails, no finished request hangs
        self.scheduler.finish_step(plan, output)
        stats = result.stats
        stats.seconds = time.monotonic() - start
        stats.running, stats.waiting = len(self.scheduler.running), len(self.scheduler.waiting)
        stats.kv_cache_bytes = self.scheduler.cache.nbytes
        self.scheduler.observe(stats)
        return stats

    def _recover(self, error: Exception) -> None:
        """Last resort when a step raised: fail every request, start over with an empty cache
        (the server goes on serving new requests)."""
        requests = self.scheduler.start_over()
        ids = [r.request_id for r in requests]
        log.error("engine step crashed; failing requests %s", ids, exc_info=error)
        deliver(self.updater.fail_all(requests, error))

    def _loop(self) -> None:
        while not self._stopping.is_set():
            if not self.scheduler.has_work():
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            try:
                stats = self.step()
            except Exception as error:  # whatever a step hits, the loop must live on
                self._recover(error)
                continue
            if self.on_step is not None:
                try:
                    self.on_step(stats)
                except Exception:  # an observer must never stop the engine
                    log.exception("step observer failed")
