"""kvserve's token-logprobs kernel (kernels.token_logprobs) alone, beside the memory copy speed
measured in the same run and the numpy way server/logprobs.py used before the kernel
(its float32 `log_softmax` over [N, V], then argpartition + lexsort for the top ones).

For each rows x 50257 (GPT-2's vocabulary) and top in 0, 5, 20: ms per call of the kernel
(arrays out), of server.logprobs.token_logprobs (the kernel plus the TokenLogprob objects the
engine gets) and of the numpy version; GB/s = logits bytes read per second, against a large
numpy copy (bytes copied per second, 1 thread) timed in rounds alternating with the rest.
By default one logits array is read over and over, so it sits in cache, as it does when
served right after the lm_head matmul wrote it; --cold-mb rotates over that many MB of
arrays so the logits come from memory.

Systems alternate round after round; medians printed. A busy machine moves every figure:
read them beside `uptime`'s load, printed first and last.

    python bench/logprobs_bench.py
    python bench/logprobs_bench.py --rows 32 --tops 5 --threads 2 --cold-mb 512
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import kernels  # noqa: E402
from server import logprobs as server_logprobs  # noqa: E402

VOCAB = 50257  # GPT-2
COPY_BYTES = 256 << 20


def numpy_token_logprobs(
    logits: np.ndarray, tokens: np.ndarray, top: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The numpy way (server/logprobs.py before the kernel), arrays out, same results."""
    logprobs = server_logprobs.log_softmax(logits)  # [N, V]
    picked = logprobs[np.arange(len(tokens)), tokens]
    if top <= 0:
        return picked, np.zeros((len(tokens), 0), np.int64), np.zeros((len(tokens), 0), np.float32)
    best = np.argpartition(-logprobs, top - 1, axis=1)[:, :top]  # [N, top], unordered
    values = np.take_along_axis(logprobs, best, axis=1)
    order = np.lexsort((best, -values), axis=1)  # by logprob descending, then id
    return picked, np.take_along_axis(best, order, 1), np.take_along_axis(values, order, 1)


def timer(call: Callable[[np.ndarray], object], arrays: list[np.ndarray]) -> Callable[[int], float]:
    """A function that times `calls` calls (cycling over `arrays`), in ms per call."""
    call(arrays[0])

    def run(calls: int) -> float:
        start = time.perf_counter()
        for i in range(calls):
            call(arrays[i % len(arrays)])
        return (time.perf_counter() - start) * 1000 / calls

    return run


def copy_timer(size_bytes: int = COPY_BYTES) -> Callable[[int], float]:
    src = np.ones(size_bytes // 8, np.float64)
    dst = np.zeros_like(src)
    np.copyto(dst, src)

    def run(calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            np.copyto(dst, src)
        return (time.perf_counter() - start) * 1000 / calls

    return run


def alternate(timers: dict[str, Callable[[int], float]], rounds: int, calls: dict[str, int]):
    times: dict[str, list[float]] = {name: [] for name in timers}
    names = list(timers)
    for round_ in range(rounds):
        for name in names[::-1] if round_ % 2 else names:
            times[name].append(timers[name](calls[name]))
    return {name: statistics.median(t) for name, t in times.items()}


def measure(
    arrays: list[np.ndarray],
    tokens: np.ndarray,
    top: int,
    args: argparse.Namespace,
    copy: Callable[[int], float],
) -> dict[str, float]:
    """Median ms per call of each system (and of the copy), rounds alternating."""
    timers = {
        "kernel": timer(lambda x: kernels.token_logprobs(x, tokens, top, args.threads), arrays),
        "server": timer(lambda x: server_logprobs.token_logprobs(x, tokens, top), arrays),
        "copy": copy,
    }
    if args.numpy:
        timers["numpy"] = timer(lambda x: numpy_token_logprobs(x, tokens, top), arrays)
    # calls per round: about budget_ms each, from one probe call
    calls = {name: max(1, int(args.budget_ms / max(t(1), 1e-3))) for name, t in timers.items()}
    return alternate(timers, args.rounds, calls)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", default="1,8,32,64", help="rows per call (1,8,32,64)")
    p.add_argument("--tops", default="0,5,20", help="top values (0,5,20)")
    p.add_argument("--threads", type=int, default=1, help="kernel threads (1)")
    p.add_argument("--rounds", type=int, default=7, help="alternating rounds; medians printed")
    p.add_argument("--budget-ms", type=float, default=40.0, help="time per system per round")
    p.add_argument("--cold-mb", type=int, default=0, help="rotate over this many MB of logits")
    p.add_argument("--isa", default="auto", choices=["auto", "portable", "avx512"])
    p.add_argument("--no-numpy", dest="numpy", action="store_false", help="skip numpy")
    args = p.parse_args()
    try:
        rows_list = [int(r) for r in args.rows.split(",") if r]
        tops = [int(t) for t in args.tops.split(",") if t]
    except ValueError:
        p.error("--rows and --tops take comma-separated integers")
    if not rows_list or min(rows_list) < 1 or not tops or not 0 <= min(tops) <= max(tops) <= 64:
        p.error("--rows must be >= 1, --tops in 0..64")
    kernels.set_isa(args.isa)
    where = f"from memory ({args.cold_mb} MB rotated)" if args.cold_mb else "in cache (one array)"
    print(
        f"load average {load()}; logprobs path {kernels.logprobs_isa()}; threads {args.threads};"
        f" logits {where}"
    )
    rng = np.random.default_rng(0)
    copy = copy_timer()
    header = (
        f"{'rows':>4} {'top':>3} | {'kernel ms':>9} {'GB/s':>5} {'of copy':>7} |"
        f" {'server ms':>9} | {'numpy ms':>8} {'numpy/kernel':>12}"
    )
    print(header)
    print("-" * len(header))
    for rows in rows_list:
        size_bytes = rows * VOCAB * 4
        count = max(1, (args.cold_mb << 20) // size_bytes) if args.cold_mb else 1
        arrays = [rng.standard_normal((rows, VOCAB), dtype=np.float32) * 3 for _ in range(count)]
        tokens = rng.integers(0, VOCAB, rows, dtype=np.int64)
        for top in tops:
            ms = measure(arrays, tokens, top, args, copy)
            copy_gbs = COPY_BYTES / ms["copy"] / 1e6
            rate = size_bytes / ms["kernel"] / 1e6
            numpy_part = (
                f" {ms['numpy']:8.3f} {ms['numpy'] / ms['kernel']:11.1f}x" if args.numpy else ""
            )
            print(
                f"{rows:4d} {top:3d} | {ms['kernel']:9.3f} {rate:5.1f} {rate / copy_gbs:6.0%} |"
                f" {ms['server']:9.3f} |{numpy_part}   (copy {copy_gbs:.1f} GB/s)"
            )
    print(f"load average {load()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
