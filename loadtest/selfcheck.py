"""The client checks itself: was it able to send what was asked? Warnings, loud ones.

A load tester that falls behind its own schedule under-reports the load it put on the
server, so every run says whether it kept up (send lag, achieved vs offered rate, its own CPU).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from loadtest.config import LoadConfig
from loadtest.stats import Figures
from loadtest.worker import WorkerResult

CPU_BUSY = 0.9  # a worker busy this share of a core is (about to be) the bottleneck
RATE_SHORTFALL = 0.97  # achieved send rate below this share of the schedule's


def client_warnings(
    config: LoadConfig, figures: Figures, workers: Sequence[WorkerResult]
) -> list[str]:
    out = []
    lag = figures.send_lag
    late = config.open_loop and lag is not None and lag.p99 is not None and lag.max is not None
    if late and lag.p99 * 1e3 > config.lag_warn_ms:
        out.append(
            f"CLIENT LAG: p99 send lag {lag.p99 * 1e3:.1f} ms (max {lag.max * 1e3:.1f} ms) "
            f"> {config.lag_warn_ms:g} ms: the client could not keep its schedule, so the "
            "server got a burstier, lower load than asked; use more --workers or a lower rate"
        )
    sent, offered = figures.send_rate, figures.offered_rate
    if sent is not None and offered is not None and sent < RATE_SHORTFALL * offered:
        out.append(
            f"CLIENT RATE: sent {sent:.1f} req/s of the {offered:.1f} req/s scheduled "
            f"({sent / offered:.0%}); the figures are for a lower load than asked"
        )
    busy = [w for w in workers if w.cpu_share > CPU_BUSY]
    if busy:
        shares = ", ".join(f"worker {w.worker} {w.cpu_share:.0%}" for w in busy)
        out.append(
            f"CLIENT CPU: {shares} of a core: the client may be the bottleneck; use more --workers"
        )
    cores = os.cpu_count() or 1
    if config.workers > cores:
        out.append(f"CLIENT CPU: --workers {config.workers} on {cores} CPU cores")
    return out
