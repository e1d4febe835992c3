"""The drain's middle part: wait for the engine to finish what it accepted, then for the
callers to stop calling, within the grace.

Once the service refuses new requests, the engine's waiting queue and running batch only
shrink, so "idle" is final. Polled (20 ms) rather than signalled: the engine thread owns
that state and a drain happens once per process.

Then the doors stay open (refusing with UNAVAILABLE) until no request has come in for
QUIET_SECONDS: grpc's server stop answers a call it has received but not yet handed to a
handler with CANCELLED, which clients do not retry (grpc/grpc#41785), so the stop waits for
a quiet moment, when there is no such call, rather than cutting into a burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("kvserve.server")
POLL_SECONDS = 0.02
QUIET_SECONDS = 0.25  # no request for this long: the callers have moved to other replicas


class Busy(Protocol):
    def busy(self) -> bool: ...


class Arrivals(Protocol):
    last_arrival: float  # time.monotonic() of the latest request, refused ones included


async def wait_until_idle(engine: Busy, grace: float, stop_now: asyncio.Event) -> float | None:
    """Seconds of grace left once the engine is idle; None when the grace ran out or a
    second signal came first (then the caller cuts what is left)."""
    left = await _wait(lambda: POLL_SECONDS if engine.busy() else 0.0, grace, stop_now)
    if left is None:
        why = "second signal" if stop_now.is_set() else f"grace of {grace:g}s over"
        log.warning("drain cut short (%s): cancelling the requests still in flight", why)
    return left


async def wait_until_quiet(arrivals: Arrivals, grace: float, stop_now: asyncio.Event) -> float:
    """Seconds of grace left once no request has arrived for QUIET_SECONDS (0 when the grace
    ran out first: the stop goes ahead then, whoever is still calling)."""
    left = await _wait(
        lambda: arrivals.last_arrival + QUIET_SECONDS - time.monotonic(), grace, stop_now
    )
    return 0.0 if left is None else left


async def _wait(
    seconds_to_wait: Callable[[], float], grace: float, stop_now: asyncio.Event
) -> float | None:
    """Wait while `seconds_to_wait()` is above 0, in naps of at most that long; the grace
    left after, or None when the grace ran out or a second signal came first."""
    deadline = time.monotonic() + grace
    while (nap := seconds_to_wait()) > 0:
        left = deadline - time.monotonic()
        if stop_now.is_set() or left <= 0:
            return None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop_now.wait(), min(nap, left))
    return max(0.0, deadline - time.monotonic())
