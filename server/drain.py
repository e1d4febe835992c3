"""The drain's middle part: wait for the engine to finish what it accepted, within the grace.

Once the service refuses new requests, the engine's waiting queue and running batch only
shrink, so "idle" is final. Polled (20 ms) rather than signalled: the engine thread owns
that state and a drain happens once per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

log = logging.getLogger("kvserve.server")
POLL_SECONDS = 0.02


class Busy(Protocol):
    def busy(self) -> bool: ...


async def wait_until_idle(engine: Busy, grace: float, stop_now: asyncio.Event) -> float | None:
    """Seconds of grace left once the engine is idle; None when the grace ran out or a
    second signal came first (then the caller cuts what is left)."""
    deadline = time.monotonic() + grace
    while engine.busy():
        left = deadline - time.monotonic()
        if stop_now.is_set() or left <= 0:
            why = "second signal" if stop_now.is_set() else f"grace of {grace:g}s over"
            log.warning("drain cut short (%s): cancelling the requests still in flight", why)
            return None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop_now.wait(), min(POLL_SECONDS, left))
    return max(0.0, deadline - time.monotonic())
