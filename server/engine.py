"""The engine thread: runs scheduler steps while there is work, sleeps when there is none.

ONNX Runtime releases the GIL, so the asyncio service thread stays responsive while a step
runs. The service hands requests in with `submit` (thread-safe) and gets results back
through each request's `emit`, which the service points at `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from server.request import Request
from server.scheduler import Scheduler, StepStats

log = logging.getLogger(__name__)


class Engine:
    def __init__(
        self, scheduler: Scheduler, on_step: Callable[[StepStats], None] | None = None
    ) -> None:
        self.scheduler = scheduler
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

    def _loop(self) -> None:
        while not self._stopping.is_set():
            if not self.scheduler.has_work():
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            try:
                stats = self.scheduler.step()
            except Exception as error:  # whatever a step hits, the loop must live on
                self.scheduler.fail_all(error)
                continue
            if self.on_step is not None:
                try:
                    self.on_step(stats)
                except Exception:  # an observer must never stop the engine
                    log.exception("step observer failed")
