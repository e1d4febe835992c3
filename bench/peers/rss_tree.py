"""Peak resident memory of a process tree: `python rss_tree.py PID [--interval 0.2] [--alone
CLIENT_PID]`.

Samples until SIGTERM or until PID is gone, then prints one JSON line: the peak of the summed
RSS over the tree (shared pages count in every process that maps them), the number of
samples, and this poller's own CPU seconds, since on a 2-core machine even a light poller
slows the system it watches. With --alone, also the peak RSS of CLIENT_PID by itself, its
children left out (`client_peak_rss_bytes`): the load client of a server, measured apart
from the serving tree in the same samples.

Kept light on purpose (psutil would walk every process's status each time): each sample reads
/proc/<pid>/statm of the pids already known; the tree itself (no /proc/<pid>/task/*/children
on every kernel) is found again from /proc/*/stat only every REDISCOVER-th sample.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
REDISCOVER = 5


def fields_after_command(stat: str) -> list[str]:
    """/proc/<pid>/stat from the state on (the parenthesised command before it may hold
    spaces and parentheses itself)."""
    return stat[stat.rindex(")") + 2 :].split()


def parent_of(stat: str) -> int:
    return int(fields_after_command(stat)[1])


def alive(pid: int) -> bool:
    """Running, not a zombie that its parent has yet to reap."""
    try:
        return fields_after_command(Path(f"/proc/{pid}/stat").read_text())[0] != "Z"
    except (OSError, ValueError):
        return False


def tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = parent_of((entry / "stat").read_text())
            except (OSError, ValueError):
                continue  # gone since the listing
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def resident_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_BYTES
        except (OSError, IndexError):
            pass  # exited between samples
    return total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pid", type=int)
    p.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    p.add_argument(
        "--alone", type=int, metavar="CLIENT_PID", help="also this process by itself (no children)"
    )
    args = p.parse_args()
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    peak = client_peak = samples = 0
    pids: list[int] = []
    while not stopping and alive(args.pid):
        if samples % REDISCOVER == 0:
            pids = tree(args.pid)
        peak = max(peak, resident_bytes(pids))
        if args.alone is not None:
            client_peak = max(client_peak, resident_bytes([args.alone]))
        samples += 1
        time.sleep(args.interval)
    report = {"peak_rss_bytes": peak, "samples": samples, "cpu_s": time.process_time()}
    if args.alone is not None:
        report["client_peak_rss_bytes"] = client_peak
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
