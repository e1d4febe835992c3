"""Compare CPU int8/int4 graph variants of one fp32 artifact, interleaved in one process.

    .venv/bin/python bench/export_int8_variants.py FP32_ARTIFACT WORKDIR [--threads 1,2]

Builds, from FP32_ARTIFACT/model.onnx: the shipped int8 (dynamic QOperator per-channel, tied
8-bit head), dynamic per-tensor, all-MatMulNBits 8-bit (int8 compute), int4 (CPU recipe), and
static QDQ per-channel (activations calibrated on random prompts: speed only, not accuracy).
Then times prefill of 128 tokens and a decode step (batch 1, 128 past) for each, rounds
interleaved, at each thread count, and prints medians, speed-ups vs fp32 and file sizes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from artifact import read_manifest
from export.bench import SETTLE_S
from export.onnx_export import save_onnx
from export.quantize import quantize_int8
from export.recipes import CPU_INT4, NBits
from export.tie import name_nodes, untie_lm_head
from export.weight_only import quantize_weight_only, quiet_quantizer


def build(fp32: Path, work: Path, arch) -> dict[str, Path]:
    work.mkdir(parents=True, exist_ok=True)
    out = {"fp32": fp32, "int8 (shipped)": quantize_int8(fp32, work / "int8.onnx")}
    out["int8 nbits all"] = quantize_weight_only(fp32, work / "nb8.onnx", NBits(8, 128, 4))
    out["int4 (shipped)"] = quantize_weight_only(fp32, work / "int4.onnx", CPU_INT4)
    untied = onnx.load(str(fp32))
    untie_lm_head(untied)
    name_nodes(untied)
    src = save_onnx(untied, work / "untied.onnx")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_quantizer():
        quantize_dynamic(
            src,
            work / "dyn_pt.onnx",
            weight_type=QuantType.QInt8,
            per_channel=False,
            op_types_to_quantize=["MatMul"],
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    out["int8 dyn per-tensor untied"] = work / "dyn_pt.onnx"
    out["int8 static QDQ untied"] = _qdq(src, work / "qdq.onnx", arch)
    return out


def _qdq(src: Path, dst: Path, arch) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([feeds(arch, 1, 32, 0, 64, seed) for seed in range(4)])

        def get_next(self):
            return next(self.feeds, None)

    with quiet_quantizer():
        quantize_static(
            src,
            dst,
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            op_types_to_quantize=["MatMul"],
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return dst


def feeds(arch, batch: int, length: int, past: int, cap: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    total = past + length
    f = {
        "input_ids": rng.integers(0, arch.vocab_size, (batch, length)),
        "position_ids": np.broadcast_to(past + np.arange(length), (batch, length)).copy(),
        "last_index": np.full(batch, length - 1),
        "seqlens_k": np.full(batch, total - 1, np.int32),
        "total_sequence_length": np.array(total, np.int32),
    }
    shape = (batch, arch.num_heads, cap, arch.head_dim)
    for i in range(arch.num_layers):
        for kind in ("key", "value"):
            f[f"past_key_values.{i}.{kind}"] = np.zeros(shape, np.float32)
    return f


def bind(session: ort.InferenceSession, feed: dict) -> ort.IOBinding:
    """As the server runs it: past and present share each cache buffer (written in place)."""
    binding = session.io_binding()
    for name, value in feed.items():
        if name.startswith("past_key_values."):
            shared = ort.OrtValue.ortvalue_from_numpy(value)
            binding.bind_ortvalue_input(name, shared)
            binding.bind_ortvalue_output(name.replace("past_key_values.", "present."), shared)
        else:
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
    binding.bind_output("logits")
    return binding


def time_all(models: dict[str, Path], arch, threads: int, rounds: int) -> None:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    sessions = {
        n: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
        for n, p in models.items()
    }
    cases = {
        "prefill 1x128": (feeds(arch, 1, 128, 0, 256), 2),
        "decode B=1 past 128": (feeds(arch, 1, 1, 128, 256), 10),
    }
    print(f"load average {os.getloadavg()[0]:.2f}, intra-op threads {threads}")
    for case, (feed, reps) in cases.items():
        times: dict[str, list[float]] = {n: [] for n in sessions}
        bindings = {n: bind(s, feed) for n, s in sessions.items()}
        for name, s in sessions.items():
            s.run_with_iobinding(bindings[name])  # warm-up
        for _ in range(rounds):
            for name, s in sessions.items():
                time.sleep(SETTLE_S)  # the previous session's ORT threads stop spinning
                start = time.perf_counter()
                for _ in range(reps):
                    s.run_with_iobinding(bindings[name])
                times[name].append((time.perf_counter() - start) / reps)
        base = statistics.median(times["fp32"])
        for name, t in times.items():
            m = statistics.median(t)
            size = models[name].stat().st_size / 1e6
            print(f"  {case:20s} {name:28s} {1000 * m:8.1f} ms  {base / m:5.2f}x  {size:7.1f} MB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("workdir", type=Path)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    arch = read_manifest(args.artifact, verify=False).architecture
    models = build(args.artifact / "model.onnx", args.workdir, arch)
    for threads in (int(t) for t in args.threads.split(",")):
        time_all(models, arch, threads, args.rounds)


if __name__ == "__main__":
    main()
