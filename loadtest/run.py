"""A whole run: connect, warm up, drive the measured requests, and sum them up.

`run_load(config)` (async) and `run_load_sync(config)` return a LoadResult, so scripts and
tests get the figures without parsing the CLI's output. Writing files is report.py's job.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial

import grpc
from tqdm import tqdm

from loadtest.config import LoadConfig
from loadtest.driver import Budget, OnRecord, Send, closed_loop
from loadtest.errors import LoadTestError, TargetUnreachable
from loadtest.measure import Sender
from loadtest.messages import Knobs
from loadtest.prompts import Prompt, load_workload
from loadtest.record import RequestRecord
from loadtest.stats import Figures, compute_figures
from proto import kvserve_pb2_grpc as pb_grpc


@dataclass
class LoadResult:
    config: LoadConfig
    records: list[RequestRecord]  # the measured requests, in request order
    figures: Figures
    started_at: datetime  # UTC wall clock at the start of the measured run
    finished_at: datetime
    wall_s: float  # measured run: first send -> last reply (perf_counter)
    warmup_records: list[RequestRecord] = field(default_factory=list)


async def run_load(
    config: LoadConfig,
    workload: Sequence[Prompt] | None = None,
    on_record: OnRecord | None = None,
) -> LoadResult:
    """Run the load test `config` describes (workload: default from the config).

    Raises LoadTestError for an invalid config, a bad prompts file or an unreachable
    target; failed requests are recorded, never raised."""
    if (problem := config.problem()) is not None:
        raise LoadTestError(problem)
    workload = list(workload) if workload is not None else load_workload(config)
    channels = [grpc.aio.insecure_channel(t) for t in config.targets]
    try:
        await wait_ready(channels, config.targets, config.connect_timeout_s)
        stubs = [pb_grpc.GenerationStub(c) for c in channels]
        # Sender(id prefix, origin): the run's fixed parts bound once
        sender = partial(Sender, stubs, workload, Knobs.from_config(config), config.timeout_s)
        run_id = f"loadtest-{uuid.uuid4().hex[:8]}"
        warm = await warm_up(config, sender(time.perf_counter(), f"{run_id}-warmup"))
        return await measure(config, partial(sender, id_prefix=run_id), warm, on_record)
    finally:
        await asyncio.gather(*(c.close() for c in channels))


async def warm_up(config: LoadConfig, send: Send) -> list[RequestRecord]:
    """--warmup requests first (connections, server caches), kept out of the figures."""
    if not config.warmup:
        return []
    return await closed_loop(send, min(config.concurrency, config.warmup), Budget(config.warmup))


async def measure(
    config: LoadConfig,
    sender: Callable[[float], Send],
    warm: list[RequestRecord],
    on_record: OnRecord | None,
) -> LoadResult:
    """The measured run; `sender(origin)` makes the Send whose start times count from origin."""
    with Progress(config) as bar:
        started_at, origin = datetime.now(timezone.utc), time.perf_counter()
        records = await closed_loop(
            sender(origin),
            config.concurrency,
            Budget(config.requests, config.duration_s),
            _chain(bar.record, on_record),
        )
        wall_s, finished_at = time.perf_counter() - origin, datetime.now(timezone.utc)
    figures = compute_figures(records, wall_s)
    return LoadResult(config, records, figures, started_at, finished_at, wall_s, warm)


def run_load_sync(
    config: LoadConfig,
    workload: Sequence[Prompt] | None = None,
    on_record: OnRecord | None = None,
) -> LoadResult:
    """run_load in a fresh event loop (for scripts; not from inside a running loop)."""
    return asyncio.run(run_load(config, workload, on_record))


async def wait_ready(
    channels: Sequence[grpc.aio.Channel], targets: Sequence[str], timeout_s: float
) -> None:
    """Connect to every target first, so a wrong address is one clear error, not N failures."""
    for channel, target in zip(channels, targets, strict=True):
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout_s)
        except asyncio.TimeoutError:
            raise TargetUnreachable(
                f"cannot connect to {target} within {timeout_s:g}s (is kvserve-serve running?)"
            ) from None


class Progress:
    """tqdm on stderr: completed requests, with the error count as a postfix."""

    def __init__(self, config: LoadConfig) -> None:
        self._bar = tqdm(
            total=config.requests,
            desc="loadtest",
            unit="req",
            disable=not config.progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        self._errors = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.close()

    def record(self, record: RequestRecord) -> None:
        if not record.ok:
            self._errors += 1
            self._bar.set_postfix(errors=self._errors, refresh=False)
        self._bar.update(1)


def _chain(*callbacks: OnRecord | None) -> OnRecord:
    chosen = [c for c in callbacks if c is not None]

    def call(record: RequestRecord) -> None:
        for c in chosen:
            c(record)

    return call
