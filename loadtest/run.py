"""A whole run: connect, read the model's facts, plan, send (one or N workers), sum it up.

`run_load(config)` (async) and `run_load_sync(config)` return a LoadResult, so scripts and
tests get the figures without parsing the CLI's output. Writing files is report.py's job.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import grpc
import numpy as np
from google.protobuf.json_format import MessageToDict

import loadtest.openai_api as openai_api
from loadtest.channels import aio_channel, wait_ready
from loadtest.config import LoadConfig
from loadtest.driver import Hooks, OnRecord
from loadtest.errors import LoadTestError
from loadtest.pool import run_pool
from loadtest.progress import Progress
from loadtest.prompts import Prompt, for_rpc, load_workload
from loadtest.record import RequestRecord
from loadtest.schedule import Plan, build_plan
from loadtest.selfcheck import client_warnings
from loadtest.server_metrics import ServerFigures, scrape, scrape_settled, server_figures
from loadtest.stats import Figures, compute_figures
from loadtest.timeseries import TimeSeries, time_series
from loadtest.worker import WorkerPlan, WorkerResult, run_worker
from proto import kvserve_pb2 as pb
from proto import kvserve_pb2_grpc as pb_grpc


@dataclass
class LoadResult:
    config: LoadConfig
    records: list[RequestRecord]  # the measured requests, in request order
    figures: Figures
    started_at: datetime  # UTC wall clock at the start of the measured run
    finished_at: datetime
    wall_s: float  # measured run: start -> last reply
    warmup_records: list[RequestRecord] = field(default_factory=list)
    model_info: dict | None = None  # GetModelInfo of the first target (None: not offered)
    warnings: list[str] = field(default_factory=list)  # the client's own trouble, see selfcheck
    server: ServerFigures | None = None  # --metrics-url
    workers: list[WorkerResult] = field(default_factory=list)  # records moved to `records`
    series: TimeSeries | None = None


async def run_load(
    config: LoadConfig,
    workload: Sequence[Prompt] | None = None,
    on_record: OnRecord | None = None,
) -> LoadResult:
    """Run the load test `config` describes (workload: default from the config).

    Raises LoadTestError for an invalid config, a bad prompts file or an unreachable
    target; failed requests are recorded, never raised. With --workers > 1, `on_record`
    sees the records when the workers hand them back, at the end."""
    if (problem := config.problem()) is not None:
        raise LoadTestError(problem)
    workload = list(workload) if workload is not None else load_workload(config)
    info = await model_info(config)
    template = "" if info is None else info.get("prompt_template", "")
    model = "" if info is None else info.get("model_name", "")
    plans = worker_plans(config, tuple(for_rpc(workload, config.rpc, template)), model)
    before, scrape_errors = await asyncio.to_thread(scrape, config.metrics_urls)
    total = config.requests if plans[0].indices is None else sum(len(p.indices) for p in plans)
    with Progress(total, config.progress) as progress:
        results = await send_all(config, plans, progress, on_record)
    finished_at = datetime.now(timezone.utc)
    answered = sum(r.ok for w in results for r in (*w.records, *w.warmup))
    after, more_errors = await asyncio.to_thread(
        scrape_settled, config.metrics_urls, before, answered
    )
    server = None
    if config.metrics_urls:
        errors = scrape_errors + more_errors
        server = server_figures(config.metrics_urls, before, after, errors)
    return summarize(config, results, finished_at, info, server)


def summarize(
    config: LoadConfig,
    results: list[WorkerResult],
    finished_at: datetime,
    info: dict | None,
    server: ServerFigures | None,
) -> LoadResult:
    records = sorted((r for w in results for r in w.records), key=lambda r: r.index)
    warm = sorted((r for w in results for r in w.warmup), key=lambda r: r.index)
    for w in results:
        w.records, w.warmup = [], []  # kept once, in the result's own lists
    wall_s = max((r.end_s for r in records), default=0.0)
    figures = compute_figures(records, wall_s, config.slo, config.open_loop)
    warnings = client_warnings(config, figures, results)
    if server is not None:
        warnings += [f"METRICS: cannot scrape {e}" for e in server.errors]
    started_at = finished_at - timedelta(seconds=wall_s)
    series = time_series(records, wall_s, warm)
    return LoadResult(
        config,
        records,
        figures,
        started_at,
        finished_at,
        wall_s,
        warm,
        info,
        warnings,
        server,
        results,
        series,
    )


def run_load_sync(
    config: LoadConfig,
    workload: Sequence[Prompt] | None = None,
    on_record: OnRecord | None = None,
) -> LoadResult:
    """run_load in a fresh event loop (for scripts; not from inside a running loop)."""
    return asyncio.run(run_load(config, workload, on_record))


def worker_plans(
    config: LoadConfig, workload: tuple[Prompt, ...], model: str = ""
) -> list[WorkerPlan]:
    """Split the run over the workers: open loop, positions j, j + N, ... of the schedule
    (warmup indices < 0); closed loop, a share of the streams and of the request indices."""
    run_id = f"loadtest-{uuid.uuid4().hex[:8]}"
    n = config.workers
    if not config.open_loop:
        return [WorkerPlan(w, n, config, workload, run_id, model=model) for w in range(n)]
    plan: Plan = build_plan(config)
    indices = np.arange(len(plan.offsets), dtype=np.int64) - plan.warmup
    tail = (plan.origin_s, model)
    return [
        WorkerPlan(w, n, config, workload, run_id, indices[w::n], plan.offsets[w::n], *tail)
        for w in range(n)
    ]


async def send_all(
    config: LoadConfig, plans: list[WorkerPlan], progress: Progress, on_record: OnRecord | None
) -> list[WorkerResult]:
    if len(plans) == 1:  # in this process and loop: no start barrier to wait for

        async def start() -> float:
            return time.perf_counter()

        hooks = progress.hooks()
        if on_record is not None:
            both = hooks.on_record

            def record(r: RequestRecord) -> None:
                both(r)
                on_record(r)

            hooks = Hooks(hooks.on_send, record)
        return [await run_worker(plans[0], start, hooks)]
    ready_timeout = config.connect_timeout_s + 60 + config.warmup_s  # spawn + imports + warmup
    if not config.open_loop:
        ready_timeout += config.timeout_s * max(config.warmup, 1)  # a closed warmup's worst case
    results = await asyncio.to_thread(run_pool, plans, progress.add, ready_timeout)
    if on_record is not None:
        for r in sorted((r for w in results for r in w.records), key=lambda r: r.index):
            on_record(r)
    return results


async def model_info(config: LoadConfig) -> dict | None:
    """Connect to every target (one clear error if one is down) and read the first one's
    GetModelInfo (None when it is not offered), or with --api openai its GET /v1/models.
    Bad credentials fail here, once."""
    if config.api == "openai":
        return await openai_api.model_info(
            config.targets, config.security, config.connect_timeout_s
        )
    channels = [aio_channel(t, config.security) for t in config.targets]
    try:
        secure = config.security.secure
        await wait_ready(channels, config.targets, config.connect_timeout_s, secure)
        stub = pb_grpc.GenerationStub(channels[0])
        try:
            reply = await stub.GetModelInfo(
                pb.ModelInfoRequest(),
                timeout=config.connect_timeout_s,
                metadata=config.security.metadata(),
            )
        except grpc.aio.AioRpcError as e:
            if e.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                raise LoadTestError(
                    f"{config.targets[0]}: {e.code().name}: {e.details()} "
                    "(check --auth-token / --tls-cert)"
                ) from None
            return None
        return MessageToDict(reply, preserving_proto_field_name=True)
    finally:
        await asyncio.gather(*(c.close() for c in channels))
