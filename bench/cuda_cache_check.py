"""The device-resident KV cache on a real GPU (issue 5), for a session that has one lent.

For an artifact served with the CUDA provider: (1) the runner picked device memory
(server/memory.py CudaMemory, libcudart found); (2) prefill, decode, a row move and more
decode give the same logits with the cache on the device as with the cache in host memory
(which ONNX Runtime copies to the GPU and back at every step); (3) decode steps at batch
1/8/32 timed both ways, side by side.

    python bench/cuda_cache_check.py ARTIFACT [--context 250] [--steps 32]
Exit code 0 when (1) and (2) hold. Prints a table; no GPU: exits 2 with one line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from artifact import read_manifest  # noqa: E402
from server.memory import CudaMemory, HostMemory  # noqa: E402
from server.runner import CUDA, OnnxRunner, RunnerConfig, gpu_present  # noqa: E402


def steps(runner: OnnxRunner, memory, batch: int, context: int, count: int, seed: int = 0):
    """Logits of a prefill, `count` decode steps, a row move, one more step; median step s."""
    runner.memory = memory
    rng = np.random.default_rng(seed)
    vocab = runner.architecture.vocab_size
    cache = runner.new_cache(max_rows=batch)
    prompts = [rng.integers(0, vocab, context - 8 * (row % 4)).tolist() for row in range(batch)]
    logits = [runner.prefill(cache, prompts)]
    cache.reserve(batch, context + count + 2)  # no growth while timed
    times = []
    for _ in range(count):
        tokens = logits[-1].argmax(-1).astype(np.int64)
        start = time.perf_counter()
        logits.append(runner.decode_step(cache, tokens))
        times.append(time.perf_counter() - start)
    if batch > 1:
        order = cache.keep(list(range(1, batch)))  # row 0 leaves: the last row takes its slot
        logits.append(runner.decode_step(cache, logits[-1][order].argmax(-1).astype(np.int64)))
    return logits, float(np.median(times))


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("artifact", type=Path)
    p.add_argument("--context", type=int, default=250)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--batches", default="1,8,32")
    args = p.parse_args()
    if not gpu_present():
        print("cuda_cache_check: no GPU on this machine", file=sys.stderr)
        return 2
    manifest = read_manifest(args.artifact)
    runner = OnnxRunner(
        args.artifact / manifest.model_file,
        manifest.architecture,
        RunnerConfig("cuda", 0, spin=True),
    )
    device_memory = runner.memory
    ok = runner.provider == CUDA and isinstance(device_memory, CudaMemory)
    print(
        f"provider {runner.provider}; cache memory {type(device_memory).__name__}; "
        f"cache dtype {np.dtype(runner.dtype).name}"
    )
    tolerance = 2e-2 if runner.dtype == np.float16 else 1e-3
    print(
        f"{'batch':>5}{'device cache ms':>17}{'host cache ms':>15}{'speed-up':>10}"
        f"{'max |diff|':>12}"
    )
    for batch in (int(b) for b in args.batches.split(",")):
        on_device, t_device = steps(runner, device_memory, batch, args.context, args.steps)
        on_host, t_host = steps(runner, HostMemory(), batch, args.context, args.steps)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(on_device, on_host, strict=True))
        scale = max(float(np.abs(a).max()) for a in on_host)
        ok &= diff <= tolerance * max(scale, 1.0)
        print(
            f"{batch:>5}{t_device * 1e3:>17.2f}{t_host * 1e3:>15.2f}"
            f"{t_host / t_device:>9.2f}x{diff:>12.2e}"
        )
    print("device-resident cache: " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
