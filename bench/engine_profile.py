"""Where one engine's time goes, in process: the engine bench's mixed workload through the
real scheduler, runner and update stage (no RPC), each stage of every step timed.

Variants (serve flags, as `kvserve-serve` parses them) run interleaved for --rounds rounds;
each line gives the wall time, tok/s, and seconds in schedule / prefill / decode / update /
deliver, with the load average at its start.

    python bench/engine_profile.py --artifact runs/bench/artifact-int8-kv8 \\
        --variant base= --variant nospin="--ort-spin false"
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from engine_ab import parse_variant  # noqa: E402
from engine_bench import make_checkpoint, make_jobs  # noqa: E402

from server import engine as engine_module  # noqa: E402
from server.app import Server, load_model  # noqa: E402
from server.cli import parse_args  # noqa: E402
from server.request import Request  # noqa: E402
from server.sampling import SamplingParams  # noqa: E402


def timed(seconds: dict[str, float], name: str, call):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - start

    return wrapper


def run_once(artifact: Path, flags: tuple[str, ...], jobs) -> tuple[float, int, dict]:
    config = parse_args(
        ["--model", str(artifact), "--max-queue", "1024", "--max-new-tokens-limit", "1024", *flags]
    )
    model = load_model(config)
    engine = Server(config, model).engine
    seconds: dict[str, float] = defaultdict(float)
    runner, scheduler, updater = engine.runner, engine.scheduler, engine.updater
    runner.prefill = timed(seconds, "prefill", runner.prefill)
    runner.decode_step = timed(seconds, "decode", runner.decode_step)
    scheduler.schedule = timed(seconds, "schedule", scheduler.schedule)
    updater.update = timed(seconds, "update", updater.update)
    deliver = engine_module.deliver
    engine_module.deliver = timed(seconds, "deliver", deliver)
    tokens = 0
    try:
        for i, job in enumerate(jobs):
            params = SamplingParams(max_new_tokens=job.new_tokens, ignore_eos=True)
            engine.submit(Request(str(i), list(job.prompt_ids), params, lambda event: None))
        start = time.perf_counter()
        while engine.busy():
            tokens += engine.step().generated_tokens
        wall = time.perf_counter() - start
    finally:
        engine_module.deliver = deliver
    return wall, tokens, dict(seconds)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--artifact", type=Path, required=True)
    p.add_argument("--variant", action="append", type=parse_variant, required=True)
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench")
    args = p.parse_args()
    jobs = make_jobs(make_checkpoint(args.workdir / "gpt2-124m-random"), args.requests, args.seed)
    rates: dict[str, list[float]] = defaultdict(list)
    for round_ in range(args.rounds):
        for name, flags in args.variant if round_ % 2 == 0 else args.variant[::-1]:
            load = os.getloadavg()[0]
            wall, tokens, seconds = run_once(args.artifact, flags, jobs)
            rates[name].append(tokens / wall)
            stages = "  ".join(f"{k} {v:.2f}" for k, v in sorted(seconds.items()))
            print(
                f"round {round_ + 1} {name:<12} load {load:5.2f}  {wall:6.2f} s "
                f"{tokens / wall:7.1f} tok/s  {stages}",
                flush=True,
            )
            time.sleep(0.1)  # ORT's threads stop spinning before the next variant
    base = rates[args.variant[0][0]]
    for name, values in rates.items():
        ratios = [v / b for v, b in zip(values, base, strict=True)]
        print(
            f"{name:<12} median {statistics.median(values):7.1f} tok/s, ratio to "
            f"{args.variant[0][0]} per round " + ", ".join(f"{r:.2f}" for r in ratios)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
