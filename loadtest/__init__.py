"""`kvserve-loadtest`: drive a kvserve gRPC server with concurrent streams and measure it.

Closed loop today (N workers, each sends its next request as soon as the last one ends);
the pieces are split so an open-loop driver, other report formats and run comparisons can
be added beside them:

    config   -> LoadConfig (flags / KVSERVE_* env vars)
    prompts  -> the workload (Prompt list)
    messages -> protobuf requests (the only place that builds them)
    measure  -> one RPC -> one RequestRecord (TTFT, ITLs, e2e, tokens, status)
    driver   -> when requests are sent (closed_loop)
    stats    -> Figures from records (pure numpy)
    report   -> summary table, JSON and CSV files
    run      -> run_load(config) -> LoadResult (async), run_load_sync
    client   -> a small synchronous client for scripts (answer, model_info)

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
