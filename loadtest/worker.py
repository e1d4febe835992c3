"""One sender's whole job: connect, warm up, wait for the common start, send its share.

Process-agnostic: run.py runs one in its own event loop (--workers 1), pool.py one per
child process. Everything a worker needs travels in a picklable WorkerPlan.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np

import loadtest.openai_api as openai_api
from loadtest.channels import aio_channel, wait_ready
from loadtest.config import LoadConfig
from loadtest.driver import NO_HOOKS, Budget, Hooks, Send, closed_loop, open_loop
from loadtest.measure import Sender
from loadtest.messages import Knobs
from loadtest.prompts import Prompt
from loadtest.record import RequestRecord
from proto import kvserve_pb2_grpc as pb_grpc

Start = Callable[[], Awaitable[float]]  # waits for, and returns, the run's start (perf_counter)


@dataclass(frozen=True)
class WorkerPlan:
    """What worker `worker` of `workers` sends. Open loop: `indices` (warmup ones < 0) at
    `offsets` seconds after the start; closed loop (indices None): its share of the streams."""

    worker: int
    workers: int
    config: LoadConfig
    workload: tuple[Prompt, ...]
    run_id: str
    indices: np.ndarray | None = None  # [n] int64
    offsets: np.ndarray | None = None  # [n] float64
    origin_s: float = 0.0  # the measured run starts this long after the start
    model: str = ""  # --api openai: the model every request names (from GET /v1/models)


@dataclass
class WorkerResult:
    worker: int
    records: list[RequestRecord]  # measured
    warmup: list[RequestRecord]
    cpu_s: float  # this process's CPU time while sending (all threads)
    busy_s: float  # wall time while sending

    @property
    def cpu_share(self) -> float:
        """CPU time / wall time: near 1.0 means the worker had a core's worth of work."""
        return self.cpu_s / self.busy_s if self.busy_s > 0 else 0.0


def share(total: int, worker: int, workers: int) -> int:
    """Worker `worker`'s part of `total` (streams, warmup requests), spread evenly."""
    return total // workers + (worker < total % workers)


@asynccontextmanager
async def senders(plan: WorkerPlan) -> AsyncIterator[Callable[[float, str], Send]]:
    """Connected to every target: (origin, request id prefix) -> the run's Send, over gRPC
    or, with --api openai, over HTTP."""
    config = plan.config
    knobs, unary = Knobs.from_config(config), config.rpc == "unary"
    if config.api == "openai":
        async with openai_api.session(config.security, config.timeout_s) as http:
            yield partial(
                openai_api.HttpSender,
                http,
                config.targets,
                plan.workload,
                knobs,
                plan.model,
                config.security,
                unary,
                worker=plan.worker,
            )
        return
    channels = [aio_channel(t, config.security) for t in config.targets]
    try:
        await wait_ready(channels, config.targets, config.connect_timeout_s, config.security.secure)
        yield partial(
            Sender,
            [pb_grpc.GenerationStub(c) for c in channels],
            config.targets,
            plan.workload,
            knobs,
            config.timeout_s,
            config.security.metadata(),
            unary,
            worker=plan.worker,
        )
    finally:
        for channel in channels:
            await channel.close()


async def run_worker(plan: WorkerPlan, start: Start, hooks: Hooks = NO_HOOKS) -> WorkerResult:
    config = plan.config
    async with senders(plan) as sender:
        warm = await closed_warmup(plan, sender(time.perf_counter(), f"{plan.run_id}-warmup"))
        start_at = await start()
        cpu, began = time.process_time(), time.perf_counter()
        send = sender(start_at + plan.origin_s, plan.run_id)
        if plan.indices is not None and plan.offsets is not None:
            times = (start_at + plan.offsets).tolist()
            records = await open_loop(send, zip(plan.indices.tolist(), times, strict=True), hooks)
            warm += [r for r in records if r.index < 0]
            records = [r for r in records if r.index >= 0]
        else:
            streams = share(config.concurrency, plan.worker, plan.workers)
            budget = Budget(config.requests, config.duration_s)
            mine = budget.indices(plan.worker, plan.workers)
            records = await closed_loop(send, streams, budget, hooks, mine)
        busy, cpu = time.perf_counter() - began, time.process_time() - cpu
        return WorkerResult(plan.worker, records, warm, cpu, busy)


async def closed_warmup(plan: WorkerPlan, send) -> list[RequestRecord]:
    """Closed loop: this worker's share of --warmup requests (or --warmup seconds) first,
    kept out of the figures. (An open loop's warmup is the start of its schedule.)"""
    config = plan.config
    if plan.indices is not None or not (config.warmup or config.warmup_s):
        return []
    streams = share(config.concurrency, plan.worker, plan.workers)
    if config.warmup_s:
        return await closed_loop(send, streams, Budget(duration_s=config.warmup_s))
    budget = Budget(config.warmup)
    mine = budget.indices(plan.worker, plan.workers)
    return await closed_loop(send, min(streams, config.warmup), budget, NO_HOOKS, mine)
