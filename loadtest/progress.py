"""The live progress line on stderr: done/total, rate, in flight, errors (tqdm).

Counting is per request; drawing is throttled by tqdm, so a fast run pays little for it."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from loadtest.driver import Hooks
from loadtest.record import RequestRecord

POSTFIX_EVERY_S = 0.25


class Progress:
    def __init__(self, total: int | None, enabled: bool) -> None:
        self._bar = tqdm(
            total=total,
            desc="loadtest",
            unit="req",
            disable=not enabled,
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.25,
        )
        self.sent = self.done = self.errors = 0
        self._postfix_at = 0.0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._postfix(force=True)
        self._bar.close()

    def hooks(self) -> Hooks:
        return Hooks(on_send=self._on_send, on_record=self._on_record)

    def _on_send(self) -> None:
        self.sent += 1

    def _on_record(self, record: RequestRecord) -> None:
        self.add(0, 1, 0 if record.ok else 1)

    def add(self, sent: int, done: int, errors: int) -> None:
        """Increments (the pool relays children's counts here)."""
        self.sent += sent
        self.done += done
        self.errors += errors
        self._postfix()
        if done:
            self._bar.update(done)

    def _postfix(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._postfix_at >= POSTFIX_EVERY_S:
            self._postfix_at = now
            self._bar.set_postfix(
                in_flight=self.sent - self.done, errors=self.errors, refresh=False
            )
