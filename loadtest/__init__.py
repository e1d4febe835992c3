"""`kvserve-loadtest`: drive a kvserve gRPC server in a closed or open loop and measure it.

Figures, options and reports are described in loadtest/README.md. One job per module:

    specs          the option languages: durations, schedules, lengths, SLOs, warmup
    config         LoadConfig: one run, with the defaults
    cli            the options (flags, KVSERVE_* vars) -> LoadConfig; main
    channels       TLS / mTLS channels and the bearer token
    prompts        the workload: --prompt, JSONL, bundled data, synthetic lengths
    messages       protobuf requests (the only place that builds them)
    measure        one RPC -> one RequestRecord (TTFT, ITLs, e2e, tokens, status, lag)
    schedule       open-loop send times, computed before the run
    driver         when requests are sent: closed_loop, open_loop
    worker / pool  one sender's job; N of them in child processes (--workers)
    run            run_load(config) -> LoadResult (async), run_load_sync
    stats          Figures from records (pure numpy), goodput
    timeseries     the run over time, in buckets
    selfcheck      the client's own warnings (lag, rate, CPU)
    server_metrics the server's /metrics, before and after
    report         summary table, JSON and CSV; html_report + svg: the HTML report
    compare        `kvserve-loadtest compare A.json B.json`
    progress       the live progress line
    client         a small synchronous client for scripts (answer, model_info)

Never imports torch, transformers or optimum (see DESIGN.md).
"""

from loadtest.config import LoadConfig
from loadtest.record import RequestRecord
from loadtest.run import LoadResult, run_load, run_load_sync
from loadtest.stats import Distribution, Figures

__all__ = [
    "Distribution",
    "Figures",
    "LoadConfig",
    "LoadResult",
    "RequestRecord",
    "run_load",
    "run_load_sync",
]
