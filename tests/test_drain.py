"""The drain's waits (server/drain.py), on a fake engine and fake arrivals: the engine idle
first, then a quiet moment before the doors stop; both bounded by the grace."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

from server.drain import QUIET_SECONDS, wait_until_idle, wait_until_quiet


@dataclass
class Arrivals:
    last_arrival: float


class Busy:
    def __init__(self, until: float) -> None:
        self.until = until

    def busy(self) -> bool:
        return time.monotonic() < self.until


def test_the_stop_waits_until_requests_stop_coming():
    async def scenario() -> tuple[float, float, float]:
        arrivals = Arrivals(time.monotonic())
        called = time.monotonic()

        async def caller() -> None:  # still calling (and being refused) for 0.3 s
            for _ in range(6):
                await asyncio.sleep(0.05)
                arrivals.last_arrival = time.monotonic()

        task = asyncio.create_task(caller())
        left = await wait_until_quiet(arrivals, 10.0, asyncio.Event())
        waited = time.monotonic() - called
        await task
        return left, waited, time.monotonic() - arrivals.last_arrival

    left, waited, quiet_for = asyncio.run(scenario())
    assert quiet_for >= QUIET_SECONDS  # it returned only after the last call, once quiet
    assert waited >= 0.3 + QUIET_SECONDS
    assert left == pytest.approx(10.0 - waited, abs=0.01)  # the grace less what it waited


def test_a_caller_that_never_stops_only_delays_the_stop_by_the_grace():
    async def scenario() -> float:
        arrivals = Arrivals(time.monotonic())

        async def caller() -> None:
            while True:
                await asyncio.sleep(0.02)
                arrivals.last_arrival = time.monotonic()

        task = asyncio.create_task(caller())
        left = await wait_until_quiet(arrivals, 0.3, asyncio.Event())
        task.cancel()
        return left

    assert asyncio.run(scenario()) == 0.0


def test_a_second_signal_ends_the_waits_at_once():
    async def scenario() -> tuple[float | None, float, float]:
        stop_now = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop_now.set)
        start = time.monotonic()
        idle = await wait_until_idle(Busy(start + 60), 60.0, stop_now)
        quiet = await wait_until_quiet(Arrivals(time.monotonic() + 60), 60.0, stop_now)
        return idle, quiet, time.monotonic() - start

    idle, quiet, took = asyncio.run(scenario())
    assert idle is None and quiet == 0.0 and took < 30


def test_an_idle_engine_and_a_quiet_door_cost_no_wait():
    async def scenario() -> tuple[float | None, float]:
        idle = await wait_until_idle(Busy(0.0), 5.0, asyncio.Event())
        quiet = await wait_until_quiet(Arrivals(0.0), 5.0, asyncio.Event())
        return idle, quiet

    idle, quiet = asyncio.run(scenario())
    assert idle is not None and idle > 4.5 and quiet > 4.5
