"""Step lines for the long parts of an export: `[2/5] Exporting ONNX graph ... done (3.1s)`."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO


@dataclass
class Steps:
    total: int
    stream: TextIO = sys.stderr
    done: int = 0

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        self.done += 1
        print(f"[{self.done}/{self.total}] {label} ...", file=self.stream, flush=True)
        start = time.perf_counter()
        yield
        took = time.perf_counter() - start
        print(
            f"[{self.done}/{self.total}] {label}: done ({took:.1f}s)", file=self.stream, flush=True
        )


@contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Only errors from these loggers ("" = the root logger) while the block runs."""
    loggers = [logging.getLogger(name or None) for name in names]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)
