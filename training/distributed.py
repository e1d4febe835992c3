"""What each rank of a (possibly) distributed run did, gathered on every rank.

Proof that a torchrun / accelerate run really used every process: each rank counts the
training rows its dataloader fetched, and the main process records them all in the report.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass

import torch.distributed as dist


@dataclass(frozen=True)
class RankStats:
    rank: int
    host: str
    pid: int
    rows_fetched: int  # training rows this rank's dataloader read (incl. a prefetched batch)
    steps: int


def gather_rank_stats(rank: int, rows_fetched: int, steps: int) -> list[dict]:
    """Every rank's stats, in rank order (just this process's when not distributed)."""
    mine = asdict(RankStats(rank, socket.gethostname(), os.getpid(), rows_fetched, steps))
    if not (dist.is_available() and dist.is_initialized()):
        return [mine]
    everyone: list[dict | None] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    return [s for s in everyone if s is not None]


def end_process_group() -> None:
    """Leave the process group (if there is one) before the process exits: a rank that exits
    with it still open can abort in gloo's threads ("terminate called without an active
    exception", SIGABRT), and torchrun then fails a run that had finished."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
