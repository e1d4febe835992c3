"""SIGTERM mid-run saves a checkpoint; --resume from it ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.training import tiny_run_args, write_sample_data
from training import train as train_module
from training.callbacks import JsonLinesLog
from training.cli import INTERRUPTED_EXIT, main
from training.train import CHECKPOINTS_DIR, LOG_FILE, REPORT_FILE

ROOT = Path(__file__).resolve().parents[1]
STEPS = 12  # 8 train rows, batch 4: 6 epochs, an eval and a checkpoint after each


def run_args(data: Path, out: Path) -> list[str]:
    # The test preset has dropout, so the restored random state matters too.
    return tiny_run_args(data, out, STEPS, "--seed", "3")


def eval_losses(out: Path) -> dict[int, float]:
    entries = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]
    return {e["step"]: e["eval_loss"] for e in entries if "eval_loss" in e}


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> tuple[Path, Path]:
    """(data, out) of the uninterrupted run everything is compared with."""
    tmp = tmp_path_factory.mktemp("resume")
    data = write_sample_data(tmp / "qa.jsonl")
    assert main(run_args(data, tmp / "straight")) == 0
    return data, tmp / "straight"


def assert_same_ending(straight: Path, resumed: Path, stopped_at: int) -> None:
    a = json.loads((straight / REPORT_FILE).read_text())
    b = json.loads((resumed / REPORT_FILE).read_text())
    assert b["resumed_from"].endswith(f"checkpoint-{stopped_at}")
    assert a["steps"] == b["steps"] == STEPS
    assert abs(a["final_eval_loss"] - b["final_eval_loss"]) < 1e-3
    assert abs(eval_losses(straight)[STEPS] - eval_losses(resumed)[STEPS]) < 1e-3
    assert not (resumed / CHECKPOINTS_DIR).exists()  # cleaned up once finished


def wait_for_first_checkpoint(out: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not list((out / CHECKPOINTS_DIR).glob("checkpoint-*/trainer_state.json")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)


@pytest.mark.slow
def test_sigterm_after_first_checkpoint_then_resume(straight, tmp_path: Path) -> None:
    data, reference = straight
    out = tmp_path / "resumed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "training", *run_args(data, out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_first_checkpoint(out, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == INTERRUPTED_EXIT, err[-3000:]
    line = err.strip().splitlines()[-1]
    stopped = re.search(r"stopped by SIGTERM at step (\d+); .* --resume to continue", line)
    assert stopped, line
    step = int(stopped.group(1))
    assert 0 < step < STEPS
    assert (out / CHECKPOINTS_DIR / f"checkpoint-{step}" / "trainer_state.json").is_file()
    assert not (out / REPORT_FILE).exists()

    assert main([*run_args(data, out), "--resume"]) == 0
    assert_same_ending(reference, out, step)


@pytest.mark.slow
@pytest.mark.parametrize("step", [4, 5], ids=["at-epoch-end", "mid-epoch"])
def test_stop_at_a_chosen_step_then_resume(straight, tmp_path: Path, monkeypatch, step) -> None:
    """Both ways a stop can fall: on an epoch's last step (the epoch's eval runs before the
    checkpoint) or inside an epoch (checkpoint at once, no eval)."""

    class SignalAtStep(JsonLinesLog):
        def on_step_begin(self, args, state, control, **kwargs) -> None:
            if state.global_step + 1 == step:
                os.kill(os.getpid(), signal.SIGTERM)  # GracefulStop's handler catches it

    data, reference = straight
    out = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        patch.setattr(train_module, "JsonLinesLog", SignalAtStep)
        assert main(run_args(data, out)) == INTERRUPTED_EXIT
    assert sorted(eval_losses(out)) == list(range(2, step + 1, 2))  # no extra mid-epoch eval
    assert main([*run_args(data, out), "--resume"]) == 0
    assert_same_ending(reference, out, step)
    assert eval_losses(out) == pytest.approx(eval_losses(reference), abs=1e-6)


def test_resume_without_a_checkpoint_exits_2(tmp_path: Path, capsys) -> None:
    data = write_sample_data(tmp_path / "qa.jsonl")
    assert main([*run_args(data, tmp_path / "out"), "--resume"]) == 2
    assert "--resume: no complete checkpoint in" in capsys.readouterr().err
