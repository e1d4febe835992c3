"""When requests are sent.

- closed loop: N workers, each sends its next request when the last one ends, so the load
  adapts to the server's speed (and a slow server is sent less: coordinated omission).
- open loop: every request goes at its precomputed time whether or not earlier ones have
  answered; only the client's own delay (send lag, measured per request) can move it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass

from loadtest.record import RequestRecord

# (request index, when it should go: perf_counter time) -> its record; never raises
Send = Callable[[int, float], Awaitable[RequestRecord]]
OnRecord = Callable[[RequestRecord], None]


@dataclass(frozen=True)
class Hooks:
    """Callbacks for live progress: a request was sent / a record is in."""

    on_send: Callable[[], None] | None = None
    on_record: OnRecord | None = None

    def sent(self) -> None:
        if self.on_send is not None:
            self.on_send()

    def done(self, record: RequestRecord) -> None:
        if self.on_record is not None:
            self.on_record(record)


NO_HOOKS = Hooks()


@dataclass(frozen=True)
class Budget:
    """When to stop sending: after `requests` requests or `duration_s` seconds (None = no limit).

    Requests in flight when the budget runs out are allowed to finish."""

    requests: int | None = None
    duration_s: float | None = None

    def indices(self, worker: int = 0, workers: int = 1) -> Iterator[int]:
        """This worker's share of the request indices: worker, worker + workers, ..."""
        if self.requests is None:
            return itertools.count(worker, workers)
        return iter(range(worker, self.requests, workers))


async def closed_loop(
    send: Send,
    concurrency: int,
    budget: Budget,
    hooks: Hooks = NO_HOOKS,
    indices: Iterator[int] | None = None,
) -> list[RequestRecord]:
    """Run `concurrency` workers until the budget is spent; records in request order.

    `indices` (default: all of the budget's) lets several processes share one budget."""
    indices = budget.indices() if indices is None else indices
    deadline = None if budget.duration_s is None else time.perf_counter() + budget.duration_s
    records: list[RequestRecord] = []

    def next_index() -> int | None:
        # No await between the checks and next(): workers cannot race on the indices.
        if deadline is not None and time.perf_counter() >= deadline:
            return None
        return next(indices, None)

    async def worker() -> None:
        while True:
            free = time.perf_counter()  # "scheduled" = the moment this stream is free
            if (index := next_index()) is None:
                return
            hooks.sent()
            record = await send(index, free)
            records.append(record)
            hooks.done(record)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sorted(records, key=lambda r: r.index)


async def open_loop(
    send: Send, schedule: Iterable[tuple[int, float]], hooks: Hooks = NO_HOOKS
) -> list[RequestRecord]:
    """Send request `index` at perf_counter time `at` for each (index, at), never waiting for
    replies; records in request order once all are in.

    The loop wakes for the next due time and launches everything due by then, so a late
    wake-up (asyncio timers are ~1 ms coarse) costs lag, never a skipped or slowed send."""
    records: list[RequestRecord] = []
    pending: set[asyncio.Task] = set()

    def finished(task: asyncio.Task) -> None:
        pending.discard(task)
        record = task.result()  # Send never raises
        records.append(record)
        hooks.done(record)

    for index, at in schedule:
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(send(index, at))
        task.add_done_callback(finished)
        pending.add(task)
        hooks.sent()
    while pending:
        await asyncio.wait(set(pending))
    return sorted(records, key=lambda r: r.index)
