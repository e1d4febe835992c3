"""kvserve's paged-attention kernel alone: decode and prefill, fp32 and int8 caches, beside
the memory copy speed measured in the same run and ONNX Runtime's GroupQueryAttention.

Decode: rows x context (1 new token per row), GPT-2 small's 12 heads x 64, --layers layers'
pools (block ids shuffled, as a long-running block pool leaves them) read in turn, so the
cache comes from memory rather than L3; ms per layer and GB/s of cache read (rows x
(context + 1) positions x K and V), against a large numpy copy (1 and 2 threads, bytes
copied per second) timed in rounds alternating with the kernel's. Prefill: 4 sequences x
144 tokens from context 0, and one 256-token chunk after 512 cached tokens, against one
GroupQueryAttention node at the same shape (bench/attention_bench.py's node,
prompt-shaped). Wake-up: a 1 sequence x 1 token call with 1 thread against the same with
--threads (the pool threads sleep between calls), at a context too short to share and at
one worth sharing.

Kinds and systems alternate round after round; medians printed. A busy machine moves every
figure: read them beside `uptime`'s load, printed first.

    python bench/kernel_bench.py                      # everything, 2 threads
    python bench/kernel_bench.py --decode 64x400 --kinds int8 --no-prefill
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import kernels  # noqa: E402

HEADS, HEAD_DIM = 12, 64  # GPT-2 small
HIDDEN = HEADS * HEAD_DIM
DTYPES = {"fp32": np.float32, "int8": np.int8}


@dataclass(frozen=True)
class Batch:
    """One kernel call's arguments bar the pools (shared by every layer)."""

    qkv: np.ndarray  # [T, 3*HIDDEN]
    block_tables: np.ndarray  # [S, max_blocks]
    query_starts: np.ndarray  # [S+1]
    context_lens: np.ndarray  # [S]
    out: np.ndarray  # [T, HIDDEN]
    num_blocks: int


def make_batch(
    rng: np.random.Generator, chunks: list[int], contexts: list[int], block_size: int
) -> Batch:
    """Sequences with `contexts` cached tokens and `chunks` new ones; blocks shuffled."""
    blocks = [-(-(c + n) // block_size) for c, n in zip(contexts, chunks, strict=True)]
    ids = rng.permutation(sum(blocks)).astype(np.int32)
    tables = np.zeros((len(chunks), max(blocks)), np.int32)
    at = 0
    for row, count in enumerate(blocks):
        tables[row, :count] = ids[at : at + count]
        at += count
    tokens = sum(chunks)
    return Batch(
        qkv=rng.standard_normal((tokens, 3 * HIDDEN), dtype=np.float32),
        block_tables=tables,
        query_starts=np.concatenate([[0], np.cumsum(chunks)]).astype(np.int32),
        context_lens=np.array(contexts, np.int32),
        out=np.empty((tokens, HIDDEN), np.float32),
        num_blocks=sum(blocks),
    )


def make_pools(rng: np.random.Generator, kind: str, batch: Batch, block_size: int):
    shape = (batch.num_blocks, HEADS, block_size, HEAD_DIM)
    if kind == "int8":
        return tuple(rng.integers(-127, 128, shape, dtype=np.int8) for _ in range(2))
    return tuple(rng.standard_normal(shape, dtype=np.float32) for _ in range(2))


def kernel_timer(
    kind: str, batch: Batch, layers: int, block_size: int, threads: int
) -> Callable[[int], float]:
    """A function that runs `steps` passes over every layer, in ms per layer call."""
    rng = np.random.default_rng(1)
    pools = [make_pools(rng, kind, batch, block_size) for _ in range(layers)]
    scales = {}
    if kind == "int8":
        scales = {n: np.full(HIDDEN, 0.02, np.float32) for n in ("key_scale", "value_scale")}

    def call(pool) -> None:
        kernels.paged_attention(
            batch.qkv,
            *pool,
            batch.block_tables,
            batch.query_starts,
            batch.context_lens,
            batch.out,
            **scales,
            threads=threads,
        )

    for pool in pools:
        call(pool)

    def run(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            for pool in pools:
                call(pool)
        return (time.perf_counter() - start) * 1000 / (steps * layers)

    return run


COPY_BYTES = 512 << 20


def copy_timer(threads: int, size_bytes: int = COPY_BYTES) -> Callable[[int], float]:
    """A large numpy copy split over `threads` Python threads (numpy drops the GIL for it):
    a function that times `calls` copies, in ms per copy."""
    src = np.ones(size_bytes // 8, np.float64)
    dst = np.zeros_like(src)
    spans = [(p[0], p[-1] + 1) for p in np.array_split(np.arange(src.size), threads)]

    def copy(span: tuple[int, int]) -> None:
        np.copyto(dst[span[0] : span[1]], src[span[0] : span[1]])

    def run(calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            workers = [threading.Thread(target=copy, args=(s,)) for s in spans]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
        return (time.perf_counter() - start) * 1000 / calls

    run(1)
    return run


def gbs(size_bytes: float, ms: float) -> float:
    return size_bytes / ms / 1e6


def ort_prefill_timer(kind: str, chunk: int, context: int, rows: int, threads: int):
    """One GroupQueryAttention node, prompt-shaped: `rows` sequences of `chunk` new tokens
    after `context` cached ones, past and present bound to one buffer (as served)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from export.gqa_graph import INT8_CACHE
    from server.runner import RunnerConfig, session_options

    cache = DTYPES[kind]
    onnx_cache = TensorProto.INT8 if kind == "int8" else TensorProto.FLOAT
    inputs = ["qkv", "", "", "past_key", "past_value", "seqlens_k", "total_sequence_length"]
    attrs: dict = {"num_heads": HEADS, "kv_num_heads": HEADS}
    initializers = []
    if kind == "int8":
        inputs += ["", "", "", "", "", "key_scale", "value_scale"]
        attrs |= INT8_CACHE
        scale = np.full(HIDDEN, 0.02, np.float32)
        initializers = [
            helper.make_tensor(n, TensorProto.FLOAT, [1, HEADS, 1, HEAD_DIM], scale)
            for n in inputs[-2:]
        ]
    node = helper.make_node(
        "GroupQueryAttention",
        inputs,
        ["out", "present_key", "present_value"],
        domain="com.microsoft",
        **attrs,
    )
    cache_shape = ["batch", HEADS, "capacity", HEAD_DIM]
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "attention",
        [
            helper.make_tensor_value_info("qkv", f32, ["batch", "seq", 3 * HIDDEN]),
            helper.make_tensor_value_info("past_key", onnx_cache, cache_shape),
            helper.make_tensor_value_info("past_value", onnx_cache, cache_shape),
            helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
            helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
        ],
        [
            helper.make_tensor_value_info("out", f32, ["batch", "seq", HIDDEN]),
            helper.make_tensor_value_info("present_key", onnx_cache, cache_shape),
            helper.make_tensor_value_info("present_value", onnx_cache, cache_shape),
        ],
        initializers,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    options = session_options(RunnerConfig("cpu", threads, spin=True))
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    capacity = max(512, context + chunk)
    shape = (rows, HEADS, capacity, HEAD_DIM)
    if kind == "int8":
        buffers = [rng.integers(-127, 128, shape, dtype=np.int8) for _ in range(2)]
    else:
        buffers = [rng.standard_normal(shape, dtype=np.float32) for _ in range(2)]
    binding = session.io_binding()
    qkv = rng.standard_normal((rows, chunk, 3 * HIDDEN), dtype=np.float32)
    binding.bind_cpu_input("qkv", qkv)
    binding.bind_cpu_input("seqlens_k", np.full(rows, context + chunk - 1, np.int32))
    binding.bind_cpu_input("total_sequence_length", np.array(context + chunk, np.int32))
    for name, buffer in zip(("key", "value"), buffers, strict=True):
        where = ("cpu", 0, cache, buffer.shape, buffer.ctypes.data)
        binding.bind_input(f"past_{name}", *where)
        binding.bind_output(f"present_{name}", *where)
    binding.bind_output("out")
    session.run_with_iobinding(binding)

    def run(calls: int, keep=(buffers, qkv)) -> float:  # the binding points into these
        start = time.perf_counter()
        for _ in range(calls):
            session.run_with_iobinding(binding)
        return (time.perf_counter() - start) * 1000 / calls

    return run


def alternate(timers: dict[str, Callable[[int], float]], rounds: int, calls: int):
    times: dict[str, list[float]] = {name: [] for name in timers}
    names = list(timers)
    for round_ in range(rounds):
        for name in names[::-1] if round_ % 2 else names:
            times[name].append(timers[name](calls))
    return {name: statistics.median(t) for name, t in times.items()}


def shape_arg(text: str) -> tuple[int, int]:
    rows, _, context = text.partition("x")
    return int(rows), int(context)


def bench_decode(args) -> None:
    """Each kind's rounds alternate with rounds of the memory copy, so both see the same
    machine; medians of each."""
    copies = {f"copy {t}": copy_timer(t) for t in sorted({1, args.threads})}
    for rows, context in args.decode:
        batch = make_batch(np.random.default_rng(0), [1] * rows, [context] * rows, args.block)
        timers = {
            k: kernel_timer(k, batch, args.layers, args.block, args.threads) for k in args.kinds
        }
        ms = alternate(timers | copies, args.rounds, args.steps)
        copy_gbs = {name: gbs(COPY_BYTES, ms[name]) for name in copies}
        same = copy_gbs[f"copy {args.threads}"]
        print(f"decode {rows} rows x context {context} (+1), {args.layers} layers in turn;", end="")
        print(
            " memory copy "
            + ", ".join(f"{n[5:]} thread(s) {g:.1f} GB/s" for n, g in copy_gbs.items())
        )
        for kind in args.kinds:
            read = rows * (context + 1) * HIDDEN * 2 * np.dtype(DTYPES[kind]).itemsize
            rate = gbs(read, ms[kind])
            print(
                f"  {kind:5s} {ms[kind]:6.3f} ms/layer  {rate:5.1f} GB/s of cache read"
                f"  ({rate / same:4.0%} of the {args.threads}-thread copy)"
            )
        del timers


def bench_prefill(args) -> None:
    shapes = [(4, 144, 0), (1, 256, 512)]  # rows, chunk, context
    for rows, chunk, context in shapes:
        batch = make_batch(np.random.default_rng(0), [chunk] * rows, [context] * rows, args.block)
        timers = {
            f"kvserve {k}": kernel_timer(k, batch, 1, args.block, args.threads) for k in args.kinds
        }
        if args.ort:
            for k in args.kinds:
                timers[f"ORT GQA {k}"] = ort_prefill_timer(k, chunk, context, rows, args.threads)
        ms = alternate(timers, args.rounds, max(2, args.steps // 2))
        print(f"prefill {rows} x {chunk} tokens after context {context}:")
        for name, value in ms.items():
            print(f"  {name:14s} {value:7.3f} ms")


def bench_wakeup(args) -> None:
    """1 sequence x 1 token: at context 16 the call is all overhead (what waking the pool
    costs), at context 2048 the 12 heads are worth sharing out."""
    for context, calls in [(16, 2000), (2048, 200)]:
        batch = make_batch(np.random.default_rng(0), [1], [context], args.block)
        timers = {
            f"{t} thread(s)": kernel_timer("fp32", batch, 1, args.block, t)
            for t in sorted({1, args.threads})
        }
        us = {name: ms * 1000 for name, ms in alternate(timers, args.rounds, calls).items()}
        print(f"one call over 1 sequence x 1 token (context {context}, fp32):")
        for name, value in us.items():
            print(f"  {name:12s} {value:7.1f} us per call")


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--decode",
        type=shape_arg,
        nargs="*",
        default=[(64, 400), (37, 220)],
        help="decode shapes ROWSxCONTEXT (default: 64x400 37x220)",
    )
    p.add_argument("--kinds", default="fp32,int8", help="cache types: fp32,int8")
    p.add_argument("--threads", type=int, default=2, help="kernel and ORT threads (2)")
    p.add_argument("--layers", type=int, default=12, help="decode pools read in turn")
    p.add_argument("--block", type=int, default=16, help="block size in tokens")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians printed")
    p.add_argument("--steps", type=int, default=6, help="passes over the layers per round")
    p.add_argument(
        "--isa", default="auto", choices=["auto", "portable", "avx512"], help="kernel path"
    )
    p.add_argument("--no-prefill", dest="prefill", action="store_false", help="skip prefill")
    p.add_argument("--no-ort", dest="ort", action="store_false", help="skip ONNX Runtime")
    p.add_argument(
        "--no-wakeup", dest="wakeup", action="store_false", help="skip the wake-up timing"
    )
    args = p.parse_args()
    args.kinds = [k for k in args.kinds.split(",") if k]
    if not set(args.kinds) <= set(DTYPES):
        p.error(f"--kinds from {', '.join(DTYPES)}")
    kernels.set_isa(args.isa)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; kernel path {kernels.isa()}")
    if args.decode:
        bench_decode(args)
    if args.prefill:
        bench_prefill(args)
    if args.wakeup:
        bench_wakeup(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
