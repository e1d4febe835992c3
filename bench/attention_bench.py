"""Decode attention alone: one GroupQueryAttention node as the serving graph builds it
(export/gqa_graph.py: past and present bound to one buffer), per KV cache type, at a given
batch and context, with the effective read bandwidth over the cache it reads.

The kinds alternate for --rounds rounds (medians printed), so a noisy machine hits all alike.

    python bench/attention_bench.py --rows 37 --context 220 --kinds fp32,int8
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from export.gqa_graph import INT8_CACHE  # noqa: E402
from server.runner import RunnerConfig, session_options  # noqa: E402

HEADS, HEAD_DIM, CAPACITY = 12, 64, 512  # GPT-2 small; the cache as the mixed workload grows it
CACHE = {"fp32": np.float32, "fp16": np.float16, "int8": np.int8}
ONNX_TYPE = {
    np.float32: TensorProto.FLOAT,
    np.float16: TensorProto.FLOAT16,
    np.int8: TensorProto.INT8,
}


def attention_model(kind: str) -> bytes:
    cache = CACHE[kind]
    act = ONNX_TYPE[np.float16 if kind == "fp16" else np.float32]
    hidden = HEADS * HEAD_DIM
    inputs = ["qkv", "", "", "past_key", "past_value", "seqlens_k", "total_sequence_length"]
    attrs: dict = {"num_heads": HEADS, "kv_num_heads": HEADS}
    scales = []
    if kind == "int8":
        inputs += ["", "", "", "", "", "key_scale", "value_scale"]
        attrs |= INT8_CACHE
        ones = np.full(hidden, 0.05, np.float32)
        shape = [1, HEADS, 1, HEAD_DIM]
        scales = [helper.make_tensor(n, TensorProto.FLOAT, shape, ones) for n in inputs[-2:]]
    node = helper.make_node(
        "GroupQueryAttention",
        inputs,
        ["out", "present_key", "present_value"],
        domain="com.microsoft",
        **attrs,
    )
    cache_shape = ["batch", HEADS, "capacity", HEAD_DIM]
    graph = helper.make_graph(
        [node],
        "attention",
        [
            helper.make_tensor_value_info("qkv", act, ["batch", 1, 3 * hidden]),
            helper.make_tensor_value_info("past_key", ONNX_TYPE[cache], cache_shape),
            helper.make_tensor_value_info("past_value", ONNX_TYPE[cache], cache_shape),
            helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
            helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
        ],
        [
            helper.make_tensor_value_info("out", act, ["batch", 1, hidden]),
            helper.make_tensor_value_info("present_key", ONNX_TYPE[cache], cache_shape),
            helper.make_tensor_value_info("present_value", ONNX_TYPE[cache], cache_shape),
        ],
        scales,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10).SerializeToString()


def timer(kind: str, rows: int, context: int, threads: int):
    """A function that times `calls` decode attention calls, in ms per call."""
    options = session_options(RunnerConfig("cpu", threads, spin=True))  # as served
    session = ort.InferenceSession(
        attention_model(kind), options, providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    cache = CACHE[kind]
    scale = 40 if kind == "int8" else 1
    buffers = [
        (rng.standard_normal((rows, HEADS, CAPACITY, HEAD_DIM)) * scale).astype(cache)
        for _ in range(2)
    ]
    act = np.float16 if kind == "fp16" else np.float32
    binding = session.io_binding()
    binding.bind_cpu_input("qkv", rng.standard_normal((rows, 1, 3 * HEADS * HEAD_DIM)).astype(act))
    binding.bind_cpu_input("seqlens_k", np.full(rows, context, np.int32))
    binding.bind_cpu_input("total_sequence_length", np.array(context + 1, np.int32))
    for kv, buffer in zip(("key", "value"), buffers, strict=True):  # in place, as served
        where = ("cpu", 0, cache, buffer.shape, buffer.ctypes.data)
        binding.bind_input(f"past_{kv}", *where)
        binding.bind_output(f"present_{kv}", *where)
    binding.bind_output("out")
    for _ in range(3):
        session.run_with_iobinding(binding)

    def run(calls: int, buffers=buffers) -> float:  # the binding points into `buffers`
        start = time.perf_counter()
        for _ in range(calls):
            session.run_with_iobinding(binding)
        return (time.perf_counter() - start) * 1000 / calls

    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=37)
    p.add_argument("--context", type=int, default=220)
    p.add_argument("--kinds", default="fp32,fp16,int8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=20)
    args = p.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    if args.context + 1 > CAPACITY or not set(kinds) <= set(CACHE):
        p.error(f"--context below {CAPACITY}, --kinds from {', '.join(CACHE)}")
    timers = {k: timer(k, args.rows, args.context, args.threads) for k in kinds}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for round_ in range(args.rounds):
        for kind in kinds[::-1] if round_ % 2 else kinds:
            times[kind].append(timers[kind](args.calls))
    print(f"decode attention, one layer, {args.rows} rows at context {args.context}, ", end="")
    print(f"{args.threads} threads, medians of {args.rounds} rounds")
    for kind in kinds:
        ms = statistics.median(times[kind])
        read = (
            args.rows * HEADS * (args.context + 1) * HEAD_DIM * 2 * np.dtype(CACHE[kind]).itemsize
        )
        print(f"  {kind:5s} {ms:6.2f} ms  {read / ms / 1e6:5.1f} GB/s of cache read")
    return 0


if __name__ == "__main__":
    sys.exit(main())
