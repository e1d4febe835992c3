"""Step lines for the long parts of an export: `[2/5] Exporting ONNX graph ... done (3.1s)`."""

from __future__ import annotations

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
