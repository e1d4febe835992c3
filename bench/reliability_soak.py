"""Long reliability runs that do not belong in CI: churn with cancellations, and a soak.

  churn: N requests (default 10,000) at a fixed concurrency, a third unary, a third streams
         read to the end, a third streams cancelled after their first token; the server's RSS
         and thread count after warm-up, every 1,000 requests, and at the end (idle).
  soak:  measure capacity (closed loop, batch kept full), then an open loop at a fraction of
         it (default 70%) for --minutes; every error counted, RSS sampled every 10 s.

Starts its own `kvserve-serve` on the given artifact and writes one JSON report:

  python bench/reliability_soak.py churn --model runs/artifact --requests 10000
  python bench/reliability_soak.py soak --model runs/artifact --minutes 10 --load 0.7
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proto import kvserve_pb2 as pb  # noqa: E402
from proto import kvserve_pb2_grpc as pb_grpc  # noqa: E402
from server.process import ServerProcess  # noqa: E402


def request(i: int, tokens: int) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        prompt=f"Question: soak {i % 97}?\nAnswer:", max_new_tokens=tokens, ignore_eos=True
    )


async def one(stub, i: int, tokens: int, outcomes: Counter, cancel: bool) -> None:
    """Request i: unary, full stream or cancelled stream by i % 3; its outcome counted.

    `cancel` False (--no-cancel): the third that would be cancelled streams to the end."""
    try:
        if i % 3 == 0:
            await stub.Generate(request(i, tokens), timeout=120)
            outcomes["unary"] += 1
            return
        stream = stub.GenerateStream(request(i, tokens), timeout=120)
        async for _ in stream:
            if i % 3 == 1 and cancel:
                stream.cancel()
                outcomes["cancelled"] += 1
                return
        outcomes["stream"] += 1
    except grpc.aio.AioRpcError as error:
        outcomes[error.code().name] += 1


async def closed_loop(
    target: str, first: int, n: int, concurrency: int, tokens: int, cancel: bool
) -> Counter:
    outcomes: Counter = Counter()
    async with grpc.aio.insecure_channel(target) as channel:
        stub, gate = pb_grpc.GenerationStub(channel), asyncio.Semaphore(concurrency)

        async def gated(i: int) -> None:
            async with gate:
                await one(stub, i, tokens, outcomes, cancel)

        await asyncio.gather(*(gated(i) for i in range(first, first + n)))
    return outcomes


def usage(server: ServerProcess) -> dict:
    status = server.status()
    return {"rss_mib": round(status.rss_bytes / 2**20, 2), "threads": status.threads}


def settle(server: ServerProcess) -> dict:
    time.sleep(0.5)  # the last cancellations reach the engine; gRPC frees its calls
    return usage(server)


def churn(server: ServerProcess, args) -> dict:
    cancel = not args.no_cancel
    idle = settle(server)
    warm = closed_loop(server.target, 0, args.warmup, args.concurrency, args.tokens, cancel)
    asyncio.run(warm)
    after_warmup = settle(server)
    samples, outcomes, start = [], Counter(), time.monotonic()
    for first in range(0, args.requests, 1000):
        n = min(1000, args.requests - first)
        outcomes += asyncio.run(
            closed_loop(server.target, first, n, args.concurrency, args.tokens, cancel)
        )
        samples.append({"requests": first + n, **settle(server)})
        print(f"{first + n} requests: {samples[-1]}", flush=True)
    end = samples[-1]
    return {
        "mode": "churn",
        "cancel_a_third": cancel,
        "requests": args.requests,
        "warmup": args.warmup,
        "concurrency": args.concurrency,
        "max_new_tokens": args.tokens,
        "seconds": round(time.monotonic() - start, 1),
        "outcomes": dict(outcomes),
        "idle_before_warmup": idle,
        "after_warmup": after_warmup,
        "samples": samples,
        "rss_growth_after_warmup": round(end["rss_mib"] / after_warmup["rss_mib"] - 1, 4),
        "threads_back_to_idle": end["threads"] == after_warmup["threads"],
    }


async def open_loop(
    target: str, rate: float, seconds: float, tokens: int, cancel: bool, on_tick
) -> Counter:
    outcomes: Counter = Counter()
    async with grpc.aio.insecure_channel(target) as channel:
        stub, tasks, start = pb_grpc.GenerationStub(channel), set(), time.perf_counter()
        next_tick = start
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            task = asyncio.create_task(one(stub, i, tokens, outcomes, cancel))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if time.perf_counter() >= next_tick:
                on_tick(time.perf_counter() - start, outcomes)
                next_tick += 10
        await asyncio.gather(*tasks)
    return outcomes


def soak(server: ServerProcess, args) -> dict:
    cancel = not args.no_cancel
    asyncio.run(closed_loop(server.target, 0, 200, args.batch, args.tokens, cancel))  # warm-up
    t0 = time.monotonic()
    measured = asyncio.run(
        closed_loop(server.target, 0, args.capacity_requests, args.batch, args.tokens, cancel)
    )
    capacity = sum(measured.values()) / (time.monotonic() - t0)
    rate = args.load * capacity
    samples = []

    def tick(elapsed: float, outcomes: Counter) -> None:
        samples.append({"t": round(elapsed), **usage(server), "outcomes": dict(outcomes)})
        print(samples[-1], flush=True)

    outcomes = asyncio.run(
        open_loop(server.target, rate, args.minutes * 60, args.tokens, cancel, tick)
    )
    end = settle(server)
    errors = {k: v for k, v in outcomes.items() if k not in ("unary", "stream", "cancelled")}
    return {
        "mode": "soak",
        "cancel_a_third": cancel,
        "minutes": args.minutes,
        "capacity_req_s": round(capacity, 2),
        "rate_req_s": round(rate, 2),
        "max_new_tokens": args.tokens,
        "outcomes": dict(outcomes),
        "errors": errors,
        "samples": samples,
        "end": end,
        "rss_growth_first_to_last_sample": round(end["rss_mib"] / samples[0]["rss_mib"] - 1, 4),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("mode", choices=["churn", "soak"])
    p.add_argument("--model", type=Path, required=True, help="artifact dir (kvserve-export)")
    p.add_argument("--requests", type=int, default=10_000, help="churn: requests after warm-up")
    p.add_argument("--warmup", type=int, default=1000, help="churn: warm-up requests")
    p.add_argument("--concurrency", type=int, default=32, help="churn: requests in flight")
    p.add_argument("--tokens", type=int, default=16, help="max_new_tokens of each request")
    p.add_argument("--batch", type=int, default=8, help="the server's --max-batch-size")
    p.add_argument("--minutes", type=float, default=10.0, help="soak: duration")
    p.add_argument("--load", type=float, default=0.7, help="soak: fraction of capacity")
    p.add_argument("--capacity-requests", type=int, default=600, help="soak: to measure capacity")
    p.add_argument("--no-cancel", action="store_true", help="cancel nothing (to compare)")
    p.add_argument("--out", type=Path, default=Path("runs/reliability"), help="report dir")
    args = p.parse_args(argv)
    if not (args.model / "manifest.json").is_file():
        p.error(f"--model {args.model}: no manifest.json (an artifact dir from kvserve-export)")
    log = Path(tempfile.mkdtemp(prefix="kvserve-soak-")) / "server.log"
    extra = ["--max-batch-size", str(args.batch), "--max-queue", "4096", "--metrics-port", "-1"]
    server = ServerProcess.start(args.model, log, extra)
    try:
        report = churn(server, args) if args.mode == "churn" else soak(server, args)
    finally:
        report_code = server.stop()
    report["server_exit_code"] = report_code
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.mode}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    print(f"report: {path}; server log: {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
