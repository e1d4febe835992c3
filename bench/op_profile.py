"""Where one model call's time goes, by ONNX Runtime operator: the serving graph's own
profiler over a batched prefill and a decode step at a given batch and context.

Prints, for the prefill and for the decode step, each operator type's share of the kernel
time and its milliseconds per call, with the wall time per call beside them (the gap is
ORT's own overhead: binding, allocation, thread hand-offs).

    python bench/op_profile.py --artifact runs/bench/kvserve-fp32 --rows 37 --context 220
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.app import load_model  # noqa: E402
from server.cli import parse_args  # noqa: E402
from server.runner import RunnerConfig, session_options  # noqa: E402


def profiled_session(runner, model_path: Path, config: RunnerConfig, prefix: str) -> None:
    """Swap the runner's session for the same graph and options with ORT's profiler on."""
    options = session_options(config)
    options.enable_profiling = True
    options.profile_file_prefix = prefix
    providers = ["CPUExecutionProvider"]
    runner.session = ort.InferenceSession(str(model_path), options, providers=providers)


def op_times(profile: Path, skip: int) -> tuple[dict[str, float], int]:
    """Kernel microseconds per op type, summed over the model runs after the first `skip`."""
    events = json.loads(profile.read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    if len(runs) <= skip:
        return {}, 0
    since = runs[skip]["ts"]
    totals: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= since:
            totals[e["args"]["op_name"]] += e["dur"]
    return totals, len(runs) - skip


def report(title: str, totals: dict[str, float], calls: int, wall_ms: float) -> None:
    kernel = sum(totals.values())
    print(f"\n{title}: {wall_ms:.1f} ms wall per call, {kernel / 1000 / calls:.1f} ms in kernels")
    for op, us in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {op:28s} {100 * us / kernel:5.1f}%  {us / 1000 / calls:7.2f} ms")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", type=Path, required=True)
    p.add_argument("--rows", type=int, default=37, help="decode rows")
    p.add_argument("--context", type=int, default=220, help="tokens per decode row")
    p.add_argument("--prompts", type=int, default=4, help="prompts per batched prefill")
    p.add_argument("--prompt-tokens", type=int, default=144)
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    config = parse_args(["--model", str(args.artifact), "--threads", str(args.threads)])
    model = load_model(config)
    runner = model.runner
    model_path = args.artifact / model.manifest.model_file
    rng = np.random.default_rng(0)
    vocab = model.manifest.architecture.vocab_size
    prefix = f"/tmp/op_profile_{os.getpid()}"

    for title, make_call in (
        (f"prefill {args.prompts} x {args.prompt_tokens} tokens", prefill_call),
        (f"decode {args.rows} rows at context {args.context}", decode_call),
    ):
        call = make_call(runner, args, vocab, rng)  # its set-up runs outside the profile
        profiled_session(runner, model_path, config.runner_config(), f"{prefix}_{len(title)}")
        call()  # warm-up, not counted
        start = time.perf_counter()
        for _ in range(args.calls):
            call()
        wall_ms = (time.perf_counter() - start) * 1000 / args.calls
        totals, calls = op_times(Path(runner.session.end_profiling()), skip=1)
        report(title, totals, calls, wall_ms)
    return 0


def prefill_call(runner, args, vocab, rng):
    prompts = rng.integers(0, vocab, (args.prompts, args.prompt_tokens)).tolist()

    def call():
        cache = runner.new_cache(args.prompts)
        runner.prefill(cache, prompts)

    return call


def decode_call(runner, args, vocab, rng):
    cache = runner.new_cache(args.rows)
    prompts = rng.integers(0, vocab, (args.rows, args.context)).tolist()
    for i in range(0, args.rows, 8):
        runner.prefill(cache, prompts[i : i + 8])
    tokens = rng.integers(0, vocab, args.rows)
    return lambda: runner.decode_step(cache, tokens)  # context grows a token per call


if __name__ == "__main__":
    sys.exit(main())
