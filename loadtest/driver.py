"""When requests are sent. Closed loop: N workers, each sends its next request when the last
one ends, so the load adapts to the server's speed. (An open-loop driver, sending on a
Poisson schedule regardless of replies, belongs beside it with the same Send signature.)
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from loadtest.record import RequestRecord

Send = Callable[[int], Awaitable[RequestRecord]]  # request index -> its record; never raises
OnRecord = Callable[[RequestRecord], None]


@dataclass(frozen=True)
class Budget:
    """When to stop sending: after `requests` requests or `duration_s` seconds (None = no limit).

    Requests in flight when the budget runs out are allowed to finish."""

    requests: int | None = None
    duration_s: float | None = None


async def closed_loop(
    send: Send, concurrency: int, budget: Budget, on_record: OnRecord | None = None
) -> list[RequestRecord]:
    """Run `concurrency` workers until the budget is spent; records in request order."""
    indices = itertools.count()
    deadline = None if budget.duration_s is None else time.perf_counter() + budget.duration_s
    records: list[RequestRecord] = []

    def next_index() -> int | None:
        # No await between the checks and next(): workers cannot race on the count.
        if deadline is not None and time.perf_counter() >= deadline:
            return None
        index = next(indices)
        return None if budget.requests is not None and index >= budget.requests else index

    async def worker() -> None:
        while (index := next_index()) is not None:
            record = await send(index)
            records.append(record)
            if on_record is not None:
                on_record(record)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sorted(records, key=lambda r: r.index)
