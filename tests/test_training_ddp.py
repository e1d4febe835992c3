"""Training runs unchanged under torchrun: 2 CPU processes (gloo), one checkpoint out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.training import tiny_run_args, write_sample_data
from training.train import CHECKPOINTS_DIR, REPORT_FILE

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_both_train_and_one_checkpoint_comes_out(
    tmp_path: Path,
) -> None:
    data = write_sample_data(tmp_path / "qa.jsonl")  # 8 train rows: 4 per rank, 1 batch each
    out = tmp_path / "ddp"
    # no --max-restarts: the run must finish first time, exit included (a rank that exited with
    # its process group open used to abort: SIGABRT in 1 of 4 runs on a loaded machine)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd = [*torchrun, "--nproc-per-node", "2", "-m", "training", *tiny_run_args(data, out, 3)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]

    report = json.loads((out / REPORT_FILE).read_text())
    assert report["world_size"] == 2 and report["steps"] == 3
    ranks = report["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["pid"] != ranks[1]["pid"]
    assert [r["rows_fetched"] for r in ranks] == [3 * 4, 3 * 4]  # 3 steps x batch 4, each
    assert [r["steps"] for r in ranks] == [3, 3]

    models = sorted(p.relative_to(out) for p in out.rglob("model.safetensors"))
    assert models == [Path("model.safetensors")]  # one checkpoint, written once
    assert not (out / CHECKPOINTS_DIR).exists()
    assert result.stdout.count("checkpoint: ") == 1  # only rank 0 reports
