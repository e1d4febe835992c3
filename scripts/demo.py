"""`make demo`: the whole pipeline on the embedded default, end to end.

train a tiny GPT-2 on data/support_qa.jsonl -> export it (int8) -> serve it -> ask it
questions through the Answer RPC -> run a short load test -> print where the report is.
Each stage runs its own CLI, exactly as a user would; the server is stopped cleanly at the end.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import grpc

from artifact import PromptTemplate
from proto import kvserve_pb2 as pb
from proto import kvserve_pb2_grpc as pb_grpc
from server.process import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "support_qa.jsonl"
RUN = Path(os.environ.get("KVSERVE_DEMO_DIR", ROOT / "runs" / "demo"))
QUESTIONS = 6


def stage(title: str) -> float:
    print(f"\n==> {title}", flush=True)
    return time.monotonic()


def run(*args: str) -> None:
    subprocess.run([sys.executable, "-m", *args], check=True, cwd=ROOT)


def pick_questions(n: int) -> list[dict]:
    """Half seen in training, half held-out phrasings the model never saw."""
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    rng = random.Random(7)
    train = rng.sample([r for r in rows if r["split"] == "train"], n // 2)
    held = rng.sample([r for r in rows if r["split"] == "heldout"], n - n // 2)
    return train + held


def write_prompts(checkpoint: Path, out: Path) -> Path:
    """The load test streams real questions, formatted with the model's own template."""
    template = PromptTemplate.load(checkpoint)
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    lines = [json.dumps({"prompt": template.format(r["question"])}) for r in rows]
    out.write_text("\n".join(lines) + "\n")
    return out


def ask(target: str, rows: list[dict]) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GenerationStub(channel)
        for row in rows:
            reply = stub.Answer(pb.AnswerRequest(question=row["question"], max_new_tokens=48))
            mark = "=" if reply.text.strip() == row["answer"].strip() else "~"
            print(f"\n  Q ({row['split']}): {row['question']}")
            print(f"  A {mark} {reply.text.strip()}")
            print(f"  expected: {row['answer']}")


def main() -> int:
    started = time.monotonic()
    RUN.mkdir(parents=True, exist_ok=True)
    checkpoint, artifact, reports = RUN / "checkpoint", RUN / "artifact-int8", RUN / "loadtest"

    t = stage("1/5 train a tiny GPT-2 on the bundled support Q&A (preset demo)")
    run(
        "training",
        "--base",
        "tiny",
        "--data",
        str(DATA),
        "--out",
        str(checkpoint),
        "--preset",
        "demo",
    )
    print(f"    trained in {time.monotonic() - t:.0f}s -> {checkpoint}")

    t = stage("2/5 export to ONNX with a KV cache, dynamic int8 for CPU")
    run(
        "export", str(checkpoint), str(artifact), "--precision", "int8", "--force"
    )  # a rerun replaces it
    print(f"    exported in {time.monotonic() - t:.0f}s -> {artifact}")

    t = stage("3/5 start kvserve-serve")
    server = ServerProcess.start(artifact, RUN / "server.log")
    try:
        print(
            f"    SERVING on {server.target} (metrics {server.metrics_url}) "
            f"after {time.monotonic() - t:.0f}s"
        )

        stage("4/5 ask questions through the Answer RPC  (= exact answer, ~ differs)")
        ask(server.target, pick_questions(QUESTIONS))

        stage("5/5 load test: 16 concurrent streams, 256 requests")
        prompts = write_prompts(checkpoint, RUN / "loadtest-prompts.jsonl")
        run(
            "loadtest",
            "--target",
            server.target,
            "--concurrency",
            "16",
            "--requests",
            "256",
            "--max-new-tokens",
            "32",
            "--prompts-file",
            str(prompts),
            "--out",
            str(reports),
            "--no-progress",
        )
    finally:
        code = server.stop()
        print(f"\n    server stopped (exit code {code}); its log: {server.log_path}")
    print(f"\ndemo finished in {time.monotonic() - started:.0f}s; load-test reports in {reports}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as e:
        print(f"demo: a stage failed: {' '.join(map(str, e.cmd))} (exit {e.returncode})")
        sys.exit(1)
