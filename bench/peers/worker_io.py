"""What bench/peers.py and a peer worker pass each other: the workload in, the timings out.

A worker runs under its engine's own venv, where only the standard library is shared with the
harness, so both sides are plain JSON written and read by this one module. The handshake:
the worker loads its engine, runs one small warm-up request, prints READY on stdout and waits
for a line on stdin (the harness starts its memory poller in between); then it hands every
request to the engine at once, times each request's token arrivals, and writes its result.

    python <engine>_worker.py WORKLOAD_JSON RESULT_JSON
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TypeVar

READY = "READY"
WARMUP_PROMPT_TOKENS = 16
WARMUP_NEW_TOKENS = 8


@dataclass(frozen=True)
class Workload:
    model: str  # the engine's model dir: the HF checkpoint, or what it was converted to
    threads: int  # compute threads
    max_batch: int  # most sequences the engine may run in one step
    prompts: list[list[int]]  # token ids
    new_tokens: list[int]  # forced output length of each request (ignore eos)
    options: dict[str, str] = field(default_factory=dict)  # engine-specific (dtype, ...)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: Path) -> Workload:
        return cls(**json.loads(path.read_text()))

    def warmup(self) -> Workload:
        """One short request, run before the measured ones and not counted."""
        return replace(
            self,
            prompts=[self.prompts[0][:WARMUP_PROMPT_TOKENS]],
            new_tokens=[WARMUP_NEW_TOKENS],
        )


@dataclass(frozen=True)
class Stream:
    sent_s: float  # when the request was handed to the engine
    arrivals: list[tuple[float, int]]  # (time, tokens) each time the engine gave it tokens


@dataclass(frozen=True)
class WorkerResult:
    engine: str  # name and version
    seconds: float  # first request handed over -> last token
    streams: list[Stream]

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: Path) -> WorkerResult:
        raw = json.loads(path.read_text())
        streams = [Stream(s["sent_s"], [tuple(a) for a in s["arrivals"]]) for s in raw["streams"]]
        return cls(raw["engine"], raw["seconds"], streams)


class Arrivals:
    """Each request's token arrivals, as an engine's step loop reports them."""

    def __init__(self, requests: int) -> None:
        self.sent = 0.0
        self.arrivals: list[list[tuple[float, int]]] = [[] for _ in range(requests)]

    def hand_over(self) -> None:
        self.sent = time.perf_counter()

    def add(self, request: int, tokens: int) -> None:
        if tokens:
            self.arrivals[request].append((time.perf_counter(), tokens))

    def result(self, engine: str) -> WorkerResult:
        last = max(a[-1][0] for a in self.arrivals if a)
        return WorkerResult(engine, last - self.sent, [Stream(self.sent, a) for a in self.arrivals])


E = TypeVar("E")


def worker_main(
    load: Callable[[Workload], E], generate: Callable[[E, Workload], WorkerResult]
) -> int:
    """Load, warm up, READY, wait for the go, run the workload, write the result."""
    # the handshake gets stdout to itself: whatever the engine (and its child processes,
    # which inherit fd 1) prints goes to stderr, the harness's log
    control = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    work = Workload.read(Path(sys.argv[1]))
    engine = load(work)
    generate(engine, work.warmup())
    print(READY, file=control, flush=True)
    sys.stdin.readline()
    generate(engine, work).write(Path(sys.argv[2]))
    return 0
