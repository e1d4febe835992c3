"""HTTP door vs gRPC door: the same workload on the same server and artifact, alternately.

One kvserve-serve process with both doors; kvserve-loadtest's own runner drives the same
synthetic workload (same seed: same prompts, same forced output lengths) at --streams
concurrent streams through gRPC GenerateStream and through the OpenAI HTTP door
(/v1/completions, server-sent events), alternating which goes first, for --rounds rounds.
Prints each door's median round (output tokens/s, TTFT and ITL p50/p99) and the HTTP
door's cost relative to gRPC; writes the rounds as JSON.

    python bench/doors.py --model ARTIFACT [--streams 32] [--requests 128] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtest.config import LoadConfig  # noqa: E402
from loadtest.run import run_load_sync  # noqa: E402
from loadtest.specs import parse_length  # noqa: E402
from server.process import ServerProcess  # noqa: E402

SETTLE_S = 2.0  # between runs: the previous run's threads wind down before the next is timed
FIGURES = ("tok_s", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms")


def run_door(api: str, server: ServerProcess, args, out: Path) -> dict:
    target = server.http_url if api == "openai" else server.target
    config = LoadConfig(
        targets=(target,),
        api=api,
        concurrency=args.streams,
        requests=args.requests,
        warmup=args.streams,
        synthetic_input=parse_length(args.input),
        synthetic_output=parse_length(args.output),
        ignore_eos=True,
        tokenizer=args.model / "tokenizer.json",
        seed=args.seed,
        out_dir=out,
        progress=False,
        html=False,
    )
    f = run_load_sync(config).figures
    assert f.ok == f.requests, f"{api}: {f.status_counts}"
    return {
        "tok_s": f.output_token_throughput,
        "ttft_p50_ms": f.ttft.p50 * 1e3,
        "ttft_p99_ms": f.ttft.p99 * 1e3,
        "itl_p50_ms": f.itl.p50 * 1e3,
        "itl_p99_ms": f.itl.p99 * 1e3,
        "output_tokens": f.output_tokens,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="model artifact dir")
    p.add_argument("--streams", type=int, default=32, help="concurrent streams (and batch size)")
    p.add_argument("--requests", type=int, default=128, help="measured requests per run")
    p.add_argument("--rounds", type=int, default=3, help="rounds; each runs both doors")
    p.add_argument("--input", default="uniform:16:128", help="prompt tokens (loadtest spec)")
    p.add_argument("--output", default="64", help="output tokens (forced; loadtest spec)")
    p.add_argument("--threads", type=int, default=0, help="server ONNX Runtime threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "doors.json")
    args = p.parse_args()
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    work = Path(tempfile.mkdtemp(prefix="kvserve-doors-"))
    flags = [
        "--max-batch-size",
        str(args.streams),
        "--threads",
        str(args.threads),
        "--log-level",
        "WARNING",
    ]
    server = ServerProcess.start(args.model, work / "server.log", flags, http=True)
    rounds: list[dict] = []
    try:
        for r in range(args.rounds):
            order = ("grpc", "openai") if r % 2 == 0 else ("openai", "grpc")
            result = {}
            for api in order:
                time.sleep(SETTLE_S)
                result[api] = run_door(api, server, args, work / f"{api}-{r}")
            rounds.append(result)
            print(
                f"round {r + 1}: "
                + ", ".join(f"{api} {result[api]['tok_s']:.1f} tok/s" for api in ("grpc", "openai"))
            )
    finally:
        server.stop()
    median = {
        api: {k: statistics.median(x[api][k] for x in rounds) for k in FIGURES}
        for api in ("grpc", "openai")
    }
    cost = 1 - median["openai"]["tok_s"] / median["grpc"]["tok_s"]
    print(f"\n{args.streams} streams, {args.requests} requests, median of {args.rounds} rounds")
    print(f"{'door':<8}" + "".join(f"{k:>14}" for k in FIGURES))
    for api, name in (("grpc", "gRPC"), ("openai", "HTTP")):
        print(f"{name:<8}" + "".join(f"{median[api][k]:>14.1f}" for k in FIGURES))
    print(f"HTTP door throughput cost vs gRPC: {cost:+.1%}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "model": str(args.model),
        "streams": args.streams,
        "requests": args.requests,
        "input": args.input,
        "output": args.output,
        "rounds": rounds,
        "median": median,
        "http_cost": cost,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
