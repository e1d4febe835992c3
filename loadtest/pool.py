"""--workers N: N child processes, each running one worker (worker.py) in its own event loop.

The parent waits until every child is connected and warmed up, then sends one common start
time (perf_counter is the system-wide monotonic clock, the same in every process), relays
progress, and collects the records. "spawn", not fork: a forked gRPC runtime is not safe.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from loadtest.driver import Hooks
from loadtest.errors import LoadTestError
from loadtest.record import RequestRecord
from loadtest.worker import WorkerPlan, WorkerResult, run_worker

START_DELAY_S = 0.05  # from "all ready" to the start: time for the start message to arrive
FLUSH_S = 0.2  # how often a child reports progress


@dataclass
class Tally:
    """Progress counts a child sends to the parent in batches."""

    sent: int = 0
    done: int = 0
    errors: int = 0
    flushed: tuple[int, int, int] = field(default=(0, 0, 0))

    def hooks(self) -> Hooks:
        return Hooks(on_send=self._sent, on_record=self._done)

    def _sent(self) -> None:
        self.sent += 1

    def _done(self, record: RequestRecord) -> None:
        self.done += 1
        self.errors += not record.ok

    def delta(self) -> tuple[int, int, int]:
        now = (self.sent, self.done, self.errors)
        out = tuple(a - b for a, b in zip(now, self.flushed, strict=True))
        self.flushed = now
        return out  # type: ignore[return-value]


Relay = Callable[[int, int, int], None]  # the parent's progress: (sent, done, errors) increments


def run_pool(
    plans: Sequence[WorkerPlan], relay: Relay, ready_timeout_s: float
) -> list[WorkerResult]:
    """Run every plan in a child process; results in worker order. LoadTestError when a
    child fails (its message) or dies."""
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    pipes = [ctx.Pipe(duplex=False) for _ in plans]
    children = [
        ctx.Process(
            target=child_main,
            args=(plan, events, recv),
            daemon=True,
            name=f"loadtest-{plan.worker}",
        )
        for plan, (recv, _) in zip(plans, pipes, strict=True)
    ]
    for child in children:
        child.start()
    try:
        wait_all(events, children, "ready", time.monotonic() + ready_timeout_s, relay)
        start_at = time.perf_counter() + START_DELAY_S
        for _, send in pipes:
            send.send(start_at)
        results = wait_all(events, children, "result", None, relay)
    except BaseException:  # an error or Ctrl-C: stop every child now
        for child in children:
            child.terminate()
        raise
    for child in children:
        child.join(timeout=10)
    return [results[plan.worker] for plan in plans]


def wait_all(events, children, kind: str, deadline: float | None, relay: Relay) -> dict:
    """Messages of `kind` from every child ({worker: payload}); progress goes to the relay."""
    got: dict = {}
    while len(got) < len(children):
        if deadline is not None and time.monotonic() > deadline:
            raise LoadTestError(
                f"--workers: {len(children) - len(got)} worker(s) not {kind} in time"
            )
        try:
            message = events.get(timeout=0.5)
        except queue.Empty:
            dead = [c.name for c in children if c.exitcode not in (None, 0)]
            if dead:
                raise LoadTestError(f"--workers: {', '.join(dead)} died") from None
            continue
        what, worker, payload = message
        if what == "error":
            raise LoadTestError(payload)
        if what == "progress":
            relay(*payload)
        elif what == kind:
            got[worker] = payload
    return got


def child_main(plan: WorkerPlan, events, start_conn) -> None:
    """A child process: run the worker, report progress and then the result (or an error)."""
    tally = Tally()

    async def start() -> float:
        events.put(("ready", plan.worker, None))
        return await asyncio.to_thread(start_conn.recv)

    async def flush() -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            events.put(("progress", plan.worker, tally.delta()))

    async def main() -> WorkerResult:
        reporter = asyncio.create_task(flush())
        try:
            return await run_worker(plan, start, tally.hooks())
        finally:
            reporter.cancel()

    try:
        result = asyncio.run(main())
    except LoadTestError as e:
        events.put(("error", plan.worker, str(e)))
        return
    except BaseException as e:  # reported, so the parent says why instead of "died"
        events.put(("error", plan.worker, f"worker {plan.worker}: {type(e).__name__}: {e}"))
        return
    events.put(("progress", plan.worker, tally.delta()))
    events.put(("result", plan.worker, result))
