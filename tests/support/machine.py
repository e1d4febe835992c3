"""How much CPU other jobs took while a timing test ran: the one excuse such a test may give
for having no verdict (it skips and says so). A client that is slow while the machine is
its own still fails.

Measured, not guessed from the load average: the busy time of all CPUs (/proc/stat) over a
block, less what this process, its finished children (loadtest worker processes) and the
given still-running processes (a fake server) used. Linux only; elsewhere nothing is known
and no test is excused.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

TICK_S = 1 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
BUSY_SHARE = 0.5  # other jobs used over half a core on average: the run had no fair chance


def _machine_busy_s() -> float | None:
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) * TICK_S  # user .. steal; guest time is inside user


def _process_cpu_s(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)"
    return (int(fields[11]) + int(fields[12])) * TICK_S  # utime + stime


def _ours_s(pids: tuple[int, ...]) -> float:
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    return own + sum(_process_cpu_s(p) for p in pids)


class OtherJobs:
    """`with OtherJobs(pid, ...) as others:` ... then `others.cores`: the CPU other jobs used
    during the block, in cores (1.0 = one core all along); None where it cannot be read."""

    def __init__(self, *pids: int) -> None:
        self.pids = pids
        self.cores: float | None = None

    def __enter__(self) -> OtherJobs:
        self._start = time.monotonic(), _machine_busy_s(), _ours_s(self.pids)
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self._start[0]
        busy = _machine_busy_s()
        if busy is None or self._start[1] is None or wall <= 0:
            return
        others = (busy - self._start[1]) - (_ours_s(self.pids) - self._start[2])
        self.cores = max(others, 0.0) / wall

    def excuse(self) -> str | None:
        """Why the block's timing gives no verdict (other jobs held the CPUs), or None."""
        if self.cores is None or self.cores <= BUSY_SHARE:
            return None
        return f"other jobs used {self.cores:.1f} of {os.cpu_count()} cores meanwhile"
