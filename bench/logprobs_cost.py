"""What logprobs cost the engine: the engine bench's mixed workload, in process (no RPC, so
only the engine's own work is timed), with every request asking for no logprobs, for the
sampled tokens' logprobs with k alternatives, or for those and its prompt's too.

One engine serves every variant (the same model, cache and threads); the variants run in
turn, order alternating round after round; tok/s of each and its ratio to `off` in the same
round are printed with the load average. Issue 21's bar: top-5 costs under 10%.

    python bench/logprobs_cost.py --artifact runs/peers/kvserve-int8kv --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from engine_bench import make_checkpoint, make_jobs  # noqa: E402

from server.app import Server, load_model  # noqa: E402
from server.cli import parse_args  # noqa: E402
from server.request import Request  # noqa: E402
from server.sampling import SamplingParams  # noqa: E402

# name -> (logprobs, prompt_logprobs) every request asks for
VARIANTS = {
    "off": (None, None),
    "top0": (0, None),
    "top5": (5, None),
    "top20": (20, None),
    "top5+prompt": (5, 5),
}


def run_once(engine, jobs, logprobs: int | None, prompt_logprobs: int | None) -> float:
    """tok/s of the whole workload (all requests queued at once)."""
    tokens = 0
    for i, job in enumerate(jobs):
        params = SamplingParams(
            max_new_tokens=job.new_tokens,
            ignore_eos=True,
            logprobs=logprobs,
            prompt_logprobs=prompt_logprobs,
        )
        engine.submit(Request(str(i), list(job.prompt_ids), params, lambda event: None))
    start = time.perf_counter()
    while engine.busy():
        tokens += engine.step().generated_tokens
    return tokens / (time.perf_counter() - start)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--artifact", type=Path, required=True, help="a kernel (paged) artifact dir")
    p.add_argument("--variants", default="off,top0,top5,top5+prompt", help=f"of {list(VARIANTS)}")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench")
    args = p.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or names[0] != "off":
        p.error(f"--variants: first 'off', then any of {list(VARIANTS)} (got {unknown or names})")
    jobs = make_jobs(make_checkpoint(args.workdir / "gpt2-124m-random"), args.requests, args.seed)
    limits = ["--max-queue", "1024", "--max-new-tokens-limit", "1024"]
    config = parse_args(["--model", str(args.artifact), *limits, "--threads", str(args.threads)])
    engine = Server(config, load_model(config)).engine
    run_once(engine, jobs[:8], None, None)  # warm: buffers and pools at their sizes
    rates: dict[str, list[float]] = {n: [] for n in names}
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            load = os.getloadavg()[0]
            rates[name].append(run_once(engine, jobs, *VARIANTS[name]))
            print(f"round {round_ + 1} {name:<12} load {load:5.2f} {rates[name][-1]:7.1f} tok/s")
    base = rates["off"]
    for name, values in rates.items():
        ratios = [v / b for v, b in zip(values, base, strict=True)]
        print(
            f"{name:<12} median {statistics.median(values):7.1f} tok/s; per round vs off "
            + ", ".join(f"{r:.3f}" for r in ratios)
            + f" (median {statistics.median(ratios):.3f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
