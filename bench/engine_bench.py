"""Engine benchmark (issue 5): HF `generate` vs kvserve over gRPC, side by side, one run.

Workload: N requests (default 64), prompt lengths uniform in 16-256 tokens, output lengths
uniform in 16-256 tokens (forced: ignore_eos / min_new_tokens), the 124M GPT-2 shape with
random weights. Systems:
  (a) HF transformers `generate`, one request at a time (the naive server)
  (b) HF `generate` in static left-padded batches of 16 (each batch runs to its longest output;
      only each request's own tokens count as useful)
  (c) kvserve fp32 artifact over gRPC, 32 concurrent streams
  (d) kvserve int8 artifact over gRPC, 32 concurrent streams (int8 weights and, opted in as
      a throughput deployment would, the int8 KV cache: `--kv-cache int8`)
(c) and (d) alternate for --rounds rounds (default 3) and report their median round.
Figures: useful generated tokens/s; TTFT and ITL p50/p99 (TTFT from the moment the request
is handed to the system: the gRPC send for kvserve, the `generate` call for HF); each
system's share of the machine's fp32 GEMM peak, measured in the same run (torch matmul).

    python bench/engine_bench.py [--requests 64] [--out bench/results/engine.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from export.bench import SETTLE_S, BenchSettings, time_steps  # noqa: E402
from loadtest.measure import token_latencies  # noqa: E402
from proto import kvserve_pb2 as pb  # noqa: E402
from proto import kvserve_pb2_grpc as pb_grpc  # noqa: E402
from server.process import ServerProcess  # noqa: E402


@dataclass(frozen=True)
class Job:
    prompt: str
    prompt_ids: list[int]
    new_tokens: int


@dataclass(frozen=True)
class Distribution:
    p50: float
    p99: float
    mean: float
    count: int

    @classmethod
    def of(cls, values: list[float]) -> Distribution:
        v = np.asarray(values, dtype=float)
        return cls(*np.percentile(v, [50, 99]).tolist(), float(v.mean()), len(v))


@dataclass
class SystemResult:
    name: str
    tokens: int
    seconds: float
    ttft_ms: Distribution
    itl_ms: Distribution

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def make_checkpoint(path: Path, vocab: Path | None = None) -> Path:
    """GPT-2 124M shape, random weights. The tokenizer: GPT-2's own 50257-token BPE when
    `vocab` holds its vocab.json and merges.txt (the `gpt2` shape exactly, for peer engines),
    else a small BPE trained on the bundled data."""
    if (path / "config.json").exists():
        return path
    from transformers import GPT2Config, GPT2LMHeadModel

    from artifact import PromptTemplate

    fast = _gpt2_tokenizer(vocab) if vocab else _bundled_tokenizer()
    eos = fast.eos_token_id
    # GPT2Config's defaults are the `gpt2` shape, its 50257-row token table included
    config = GPT2Config(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    GPT2LMHeadModel(config).save_pretrained(path)
    fast.save_pretrained(path)
    PromptTemplate().save(path)
    return path


def _gpt2_tokenizer(vocab: Path):
    from transformers import GPT2TokenizerFast

    fast = GPT2TokenizerFast(str(vocab / "vocab.json"), str(vocab / "merges.txt"))
    fast.pad_token = fast.eos_token
    if fast("Hello world").input_ids != [15496, 995] or len(fast) != 50257:
        raise ValueError(f"{vocab} does not hold GPT-2's vocabulary")
    return fast


def _bundled_tokenizer():
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    rows = [json.loads(line) for line in (ROOT / "data" / "support_qa.jsonl").open()]
    tok = ByteLevelBPETokenizer()
    texts = [r["question"] + " " + r["answer"] for r in rows]
    tok.train_from_iterator(texts, vocab_size=2000, special_tokens=["<|endoftext|>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok._tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


def export(checkpoint: Path, out: Path, precision: str, *extra: str) -> Path:
    if not (out / "manifest.json").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "export",
                str(checkpoint),
                str(out),
                "--precision",
                precision,
                "--force",
                # random weights: near-uniform logits make argmax agreement meaningless,
                # so the gate only records; speed is what this artifact is for
                "--gate-samples",
                "8",
                "--min-token-agreement",
                "0",
                "--min-answer-match",
                "0",
                *extra,
            ],
            check=True,
            cwd=ROOT,
        )
    return out


def make_jobs(
    checkpoint: Path,
    n: int,
    seed: int,
    longest: int = 256,
    *,
    prompt_tokens: tuple[int, int] | None = None,
    new_tokens: tuple[int, int] | None = None,
) -> list[Job]:
    """Prompts cut from the bundled text to exact token lengths (they re-tokenize the same);
    prompt and output lengths uniform in 16-`longest` tokens, or in the inclusive
    (low, high) ranges `prompt_tokens` and `new_tokens` where given."""
    rng = np.random.default_rng(seed)
    cut = PromptCutter(checkpoint)
    prompt_low, prompt_high = prompt_tokens or (16, longest)
    new_low, new_high = new_tokens or (16, longest)
    jobs = []
    for _ in range(n):
        # drawn in this order (prompt length, output length, then the cut) so a seed gives
        # the same jobs as before the ranges were options
        length = int(rng.integers(prompt_low, prompt_high + 1))
        new = int(rng.integers(new_low, new_high + 1))
        jobs.append(cut(length, rng, new))
    return jobs


class PromptCutter:
    """Cuts prompts of an exact token count out of the bundled answers' text."""

    def __init__(self, checkpoint: Path) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
        rows = [json.loads(line) for line in (ROOT / "data" / "support_qa.jsonl").open()]
        self.stream = self.tokenizer.encode(" ".join(r["answer"] for r in rows)).ids

    def __call__(self, length: int, rng: np.random.Generator, new_tokens: int) -> Job:
        while True:
            start = int(rng.integers(0, len(self.stream) - length))
            text = self.tokenizer.decode(self.stream[start : start + length])
            ids = self.tokenizer.encode(text).ids
            if len(ids) == length:
                return Job(text, ids, new_tokens)


def gemm_peak(threads: int) -> float:
    """Best fp32 matmul rate (FLOP/s) of torch on this machine, as the roofline."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * 2048**3 / (time.perf_counter() - start))
    return best


def run_hf(checkpoint: Path, jobs: list[Job], batch: int, threads: int) -> SystemResult:
    import torch
    from transformers import GPT2LMHeadModel, LogitsProcessor, LogitsProcessorList

    class StepClock(LogitsProcessor):
        """generate() calls this once per step, as each step's token is chosen."""

        def __init__(self) -> None:
            self.times: list[float] = []

        def __call__(self, input_ids, scores):
            self.times.append(time.perf_counter())
            return scores

    torch.set_num_threads(threads)
    model = GPT2LMHeadModel.from_pretrained(checkpoint).eval()
    pad = model.config.pad_token_id
    ttft, itl, useful = [], [], 0
    start = time.perf_counter()
    for i in range(0, len(jobs), batch):
        group = jobs[i : i + batch]
        width = max(len(j.prompt_ids) for j in group)
        ids = torch.full((len(group), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, job in enumerate(group):
            ids[row, width - len(job.prompt_ids) :] = torch.tensor(job.prompt_ids)
            mask[row, width - len(job.prompt_ids) :] = 1
        steps = max(j.new_tokens for j in group)
        clock = StepClock()
        called = time.perf_counter()
        with torch.no_grad():
            model.generate(
                ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=steps,
                min_new_tokens=steps,
                pad_token_id=pad,
                logits_processor=LogitsProcessorList([clock]),
            )
        for job in group:
            ttft.append(clock.times[0] - called)
            itl.extend(np.diff(clock.times[: job.new_tokens]).tolist())
            useful += job.new_tokens
    seconds = time.perf_counter() - start
    name = "hf-generate-1" if batch == 1 else f"hf-generate-static-{batch}"
    return SystemResult(name, useful, seconds, _ms(ttft), _ms(itl))


def run_kvserve(
    name: str,
    artifact: Path,
    jobs: list[Job],
    concurrency: int,
    threads: int,
    workdir: Path,
    extra: tuple[str, ...] = (),
) -> SystemResult:
    """`extra` serve flags come last, so they override the bench's own."""
    flags = [
        "--max-batch-size",
        str(concurrency),
        "--threads",
        str(threads),
        "--max-queue",
        "1024",
        "--max-new-tokens-limit",
        "1024",
        *extra,
    ]
    server = ServerProcess.start(artifact, workdir / f"{name}.log", flags)
    try:
        streams, seconds = asyncio.run(drive(server.target, jobs, concurrency))
    finally:
        server.stop()
    return streamed_result(name, streams, seconds)


def streamed_result(
    name: str, streams: list[tuple[float, list[tuple[float, int]]]], seconds: float
) -> SystemResult:
    """One system's figures from each stream's (sent, [(arrival time, tokens)])."""
    tokens = sum(n for _, arrivals in streams for _, n in arrivals)
    latencies = [token_latencies(sent, arrivals) for sent, arrivals in streams]
    ttft = [first for first, _ in latencies]
    itl = [gap for _, gaps in latencies for gap in gaps]
    return SystemResult(name, tokens, seconds, _ms(ttft), _ms(itl))


async def drive(target: str, jobs: list[Job], concurrency: int):
    """Stream every job, at most `concurrency` at once; per stream (sent, [(time, tokens)])."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GenerationStub(channel)
        gate = asyncio.Semaphore(concurrency)

        async def one(job: Job) -> tuple[float, list[tuple[float, int]]]:
            request = pb.GenerateRequest(
                prompt=job.prompt, max_new_tokens=job.new_tokens, ignore_eos=True
            )
            async with gate:
                sent, arrivals = time.perf_counter(), []
                async for message in stub.GenerateStream(request, timeout=600):
                    if message.token_ids:
                        arrivals.append((time.perf_counter(), len(message.token_ids)))
            if sum(n for _, n in arrivals) != job.new_tokens:
                raise RuntimeError(f"asked {job.new_tokens} tokens, got {len(arrivals)}")
            return sent, arrivals

        start = time.perf_counter()
        streams = await asyncio.gather(*(one(job) for job in jobs))
        return streams, time.perf_counter() - start


@dataclass
class LatencyResult:
    """Concurrency 1: the server's token gap against the artifact's bare decode step."""

    bare_step_ms: dict[int, float]  # context -> median decode step, the runner alone
    server_itl_ms: dict[int, float]  # context -> ITL p50 over gRPC, one stream at a time

    @property
    def overhead(self) -> float:
        short = min(self.bare_step_ms)
        return self.server_itl_ms[short] / self.bare_step_ms[short]

    @property
    def growth(self) -> float:
        short, long = min(self.server_itl_ms), max(self.server_itl_ms)
        return self.server_itl_ms[long] / self.server_itl_ms[short]


def run_latency(
    artifact: Path, checkpoint: Path, threads: int, workdir: Path, seed: int, rounds: int = 4
) -> LatencyResult:
    """ITL at concurrency 1 for contexts ~50 and ~1000 tokens, and the bare step it costs.

    Each case generates 48 tokens after a prompt of (context - 48) tokens. Bare runs and
    server requests alternate, round after round, so a busy machine slows both alike;
    medians over all steps / gaps of a case."""
    from artifact import read_manifest
    from server.paged_runner import open_runner
    from server.runner import RunnerConfig

    rng = np.random.default_rng(seed)
    cut = PromptCutter(checkpoint)
    new = 48
    contexts = (50, 1000)
    manifest = read_manifest(artifact)
    # the runner the server uses for this artifact (paged pieces + kernel, or the fused graph)
    config = RunnerConfig("cpu", threads, spin=True)
    runner = open_runner(artifact, manifest.interface, manifest.architecture, config)
    flags = ["--max-batch-size", "1", "--threads", str(threads), "--max-new-tokens-limit", "1024"]
    server = ServerProcess.start(artifact, workdir / "latency.log", flags)
    steps: dict[int, list[float]] = {ctx: [] for ctx in contexts}
    gaps: dict[int, list[float]] = {ctx: [] for ctx in contexts}
    try:
        for _ in range(rounds):
            for ctx in contexts:
                job = cut(ctx - new, rng, new)
                bare = BenchSettings(prompt_tokens=len(job.prompt_ids), decode_steps=new)
                steps[ctx] += time_steps(runner, [job.prompt_ids], bare)[1]  # settles first
                time.sleep(SETTLE_S)  # this process's ORT threads stop before the server's turn
                [(sent, arrivals)], _ = asyncio.run(drive(server.target, [job], 1))
                gaps[ctx] += token_latencies(sent, arrivals)[1]
    finally:
        server.stop()
    return LatencyResult(
        {ctx: float(np.median(v)) * 1000 for ctx, v in steps.items()},
        {ctx: float(np.median(v)) * 1000 for ctx, v in gaps.items()},
    )


def _ms(values: list[float]) -> Distribution:
    return Distribution.of([v * 1000 for v in values])


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="compute threads for every system")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "engine.json")
    p.add_argument("--systems", default="a,b,c,d", help="subset to run, e.g. c,d")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="(c) and (d) alternate this many times; each reports its median round",
    )
    p.add_argument(
        "--latency",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure concurrency-1 ITL vs the bare step, at contexts 50 and 1000",
    )
    args = p.parse_args()
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    args.workdir.mkdir(parents=True, exist_ok=True)
    checkpoint = make_checkpoint(args.workdir / "gpt2-124m-random")
    fp32 = export(checkpoint, args.workdir / "artifact-fp32", "fp32")
    int8 = export(checkpoint, args.workdir / "artifact-int8-kv8", "int8", "--kv-cache", "int8")
    jobs = make_jobs(checkpoint, args.requests, args.seed)
    peak = gemm_peak(args.threads)
    from transformers import GPT2Config

    config = GPT2Config.from_pretrained(checkpoint)
    # matmul FLOPs per generated token: 2 x (weights used per token: all but the position table)
    flops_per_token = 2 * (
        12 * config.n_embd**2 * config.n_layer + config.n_embd * config.vocab_size
    )
    wanted = set(args.systems.split(","))
    runs = {
        "a": lambda: run_hf(checkpoint, jobs, 1, args.threads),
        "b": lambda: run_hf(checkpoint, jobs, 16, args.threads),
        "c": lambda: run_kvserve(
            "kvserve-fp32", fp32, jobs, args.concurrency, args.threads, args.workdir
        ),
        "d": lambda: run_kvserve(
            "kvserve-int8", int8, jobs, args.concurrency, args.threads, args.workdir
        ),
    }
    results = {}
    rounds: dict[str, list[float]] = {}  # kvserve system -> tokens/s of each round
    for key in "ab":
        if key in wanted:
            print(f"running ({key}) ... load average {os.getloadavg()[0]:.2f}", flush=True)
            results[key] = runs[key]()
    # (c) and (d) alternate for --rounds rounds; each reports its median round, so one noisy
    # moment on a shared machine does not decide their ratio
    served: dict[str, list[SystemResult]] = {k: [] for k in "cd" if k in wanted}
    for round_ in range(args.rounds):
        order = list(served.items())
        for key, done in order[::-1] if round_ % 2 else order:  # who goes first alternates
            load = os.getloadavg()[0]
            print(
                f"running ({key}) round {round_ + 1}/{args.rounds} ... load average {load:.2f}",
                flush=True,
            )
            done.append(runs[key]())
    for key, done in served.items():
        results[key] = sorted(done, key=lambda r: r.tokens_per_s)[len(done) // 2]
        rounds[key] = [r.tokens_per_s for r in done]
    latency = None
    if args.latency:
        print("running latency (concurrency 1, fp32) ...", flush=True)
        latency = run_latency(fp32, checkpoint, args.threads, args.workdir, args.seed)
    total = sum(j.new_tokens for j in jobs)
    print(f"\nfp32 GEMM peak {peak / 1e9:.0f} GFLOP/s; {flops_per_token / 1e6:.0f} MFLOP/token;")
    print(f"{len(jobs)} requests, {total} output tokens")
    header = (
        f"{'system':<24}{'tok/s':>8}{'TTFT p50':>10}{'p99':>9}{'ITL p50':>9}{'p99':>8}{'% peak':>8}"
    )
    print(header + "\n" + "-" * len(header))
    for r in results.values():
        share = 100 * r.tokens_per_s * flops_per_token / peak
        print(
            f"{r.name:<24}{r.tokens_per_s:>8.1f}{r.ttft_ms.p50:>10.0f}{r.ttft_ms.p99:>9.0f}"
            f"{r.itl_ms.p50:>9.1f}{r.itl_ms.p99:>8.1f}{share:>7.1f}%"
        )
    ratios = {}
    for num, den, bar in (("c", "b", 3.5), ("c", "a", 6.5), ("d", "c", 1.8)):
        if num in results and den in results:
            value = results[num].tokens_per_s / results[den].tokens_per_s
            ratios[f"{num}/{den}"] = value
            verdict = "met" if value >= bar else "NOT met"
            print(f"({num})/({den}) = {value:.2f}  (bar >= {bar}: {verdict})")
    if len(rounds) == 2 and args.rounds > 1:
        per_round = [d / c for c, d in zip(rounds["c"], rounds["d"], strict=True)]
        print("(c) tok/s per round: " + ", ".join(f"{v:.1f}" for v in rounds["c"]))
        print("(d) tok/s per round: " + ", ".join(f"{v:.1f}" for v in rounds["d"]))
        print("(d)/(c) per round:   " + ", ".join(f"{v:.2f}" for v in per_round))
    if latency is not None:
        print("\nconcurrency 1, fp32:  context  bare step ms  server ITL p50 ms")
        for ctx in latency.bare_step_ms:
            print(f"{ctx:>27}{latency.bare_step_ms[ctx]:>14.2f}{latency.server_itl_ms[ctx]:>19.2f}")
        for name, value, bar in (
            ("ITL / bare step", latency.overhead, 1.3),
            ("ITL ctx 1000 / ctx 50", latency.growth, 1.5),
        ):
            verdict = "met" if value <= bar else "NOT met"
            print(f"{name} = {value:.2f}  (bar <= {bar}: {verdict})")
            ratios[name] = value
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "workload": {
            "requests": len(jobs),
            "concurrency": args.concurrency,
            "threads": args.threads,
            "prompt_tokens": [len(j.prompt_ids) for j in jobs],
            "new_tokens": [j.new_tokens for j in jobs],
        },
        "gemm_peak_flops": peak,
        "flops_per_token": flops_per_token,
        "ratios": ratios,
        "rounds_tokens_per_s": rounds,
        "systems": {k: {**asdict(r), "tokens_per_s": r.tokens_per_s} for k, r in results.items()},
        "latency": asdict(latency) if latency else None,
    }
    args.out.write_text(json.dumps(report, indent=2, default=lambda o: asdict(o)) + "\n")
    print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
