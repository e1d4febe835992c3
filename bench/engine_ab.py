"""A/B of serve settings over gRPC on the engine bench's mixed workload, interleaved.

Each round starts one server per variant (in alternating order, so neither always goes
first), streams the bench's jobs through it, and records tok/s, TTFT p99 and ITL p99 with
the load average at its start. Medians over rounds and the per-round ratio of every
variant to the first are printed: on a shared machine only ratios measured side by side
mean anything.

    python bench/engine_ab.py --artifact runs/bench/artifact-int8-kv8 \\
        --variant base= --variant nospin="--ort-spin false" --rounds 3
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from engine_bench import SystemResult, make_checkpoint, make_jobs, run_kvserve  # noqa: E402


def parse_variant(text: str) -> tuple[str, tuple[str, ...]]:
    name, _, flags = text.partition("=")
    return name, tuple(shlex.split(flags))


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--artifact", type=Path, required=True)
    p.add_argument(
        "--variant",
        action="append",
        type=parse_variant,
        required=True,
        help="NAME=FLAGS: serve flags of one variant (the first is the baseline)",
    )
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench")
    args = p.parse_args()
    checkpoint = make_checkpoint(args.workdir / "gpt2-124m-random")
    jobs = make_jobs(checkpoint, args.requests, args.seed)
    results: dict[str, list[SystemResult]] = {name: [] for name, _ in args.variant}
    for round_ in range(args.rounds):
        order = args.variant if round_ % 2 == 0 else args.variant[::-1]
        for name, flags in order:
            load = os.getloadavg()[0]
            r = run_kvserve(
                name, args.artifact, jobs, args.concurrency, args.threads, args.workdir, flags
            )
            results[name].append(r)
            print(
                f"round {round_ + 1} {name:<12} load {load:5.2f}  {r.tokens_per_s:7.1f} tok/s"
                f"  TTFT p99 {r.ttft_ms.p99:7.0f} ms  ITL p99 {r.itl_ms.p99:6.1f} ms",
                flush=True,
            )
            time.sleep(0.1)  # the last server's threads are gone before the next starts
    base = args.variant[0][0]
    print(f"\n{'variant':<12}{'tok/s':>8}{'TTFT p99':>10}{'ITL p99':>9}  per-round tok/s ratio")
    for name, done in results.items():
        ratios = [r.tokens_per_s / b.tokens_per_s for r, b in zip(done, results[base], strict=True)]
        print(
            f"{name:<12}{statistics.median(r.tokens_per_s for r in done):>8.1f}"
            f"{statistics.median(r.ttft_ms.p99 for r in done):>10.0f}"
            f"{statistics.median(r.itl_ms.p99 for r in done):>9.1f}  "
            + ", ".join(f"{x:.2f}" for x in ratios)
            + f"  (median {statistics.median(ratios):.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
