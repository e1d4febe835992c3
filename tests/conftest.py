"""Shared fixtures: a tiny model trained here, exported, and served by the real server; a
random GPT-2 checkpoint for the export tests; the load tester's fake server.

Built once per session through the same CLIs a user runs, so the end-to-end tests exercise
the real hand-offs (checkpoint dir -> artifact dir -> gRPC). The helpers behind them live in
tests/support/ (imported as `tests.support.<module>`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import tools
from tests.support.export import make_checkpoint
from tests.support.fake_server import FakeServer
from tests.support.servers import serving

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "support_qa.jsonl"


def run_module(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, (
        f"{args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    )


@pytest.fixture(autouse=True)
def no_kvserve_env(monkeypatch):
    """Options come from KVSERVE_* env vars too: keep the caller's shell out of every test."""
    for name in [n for n in os.environ if n.startswith("KVSERVE_")]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "checkpoint"
    run_module(
        "training", "--base", "tiny", "--data", str(DATA), "--out", str(out), "--preset", "test"
    )
    return out


@pytest.fixture(scope="session")
def tiny_artifact(tiny_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "artifact"
    run_module("export", str(tiny_checkpoint), str(out), "--precision", "fp32")
    return out


@pytest.fixture(scope="session")
def tiny_fused_artifact(tiny_checkpoint, tmp_path_factory) -> Path:
    """The same model as one fused graph (ONNX Runtime's attention, the slot cache): what the
    CUDA target serves, tested here on the CPU provider."""
    out = tmp_path_factory.mktemp("export-fused") / "artifact"
    run_module(
        "export", str(tiny_checkpoint), str(out), "--precision", "fp32", "--attention", "fused"
    )
    return out


@pytest.fixture(scope="session")
def served(tiny_artifact, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with serving(tiny_artifact, log, ["--max-batch-size", "8"]) as server:
        yield server


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    """An untrained 2-layer GPT-2 with its own tokenizer (tests.support.export); read only."""
    return make_checkpoint(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="module")
def fake_server():
    """The load tester's fake Generation server (default options), one per test module."""
    with FakeServer() as server:
        yield server


def pytest_unconfigure(config) -> None:
    """After pytest's own last line: say so when tests were skipped for want of a program
    (-ra lists each skip above; this names what to install)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    skipped = reporter.stats.get("skipped", [])
    reasons = [str(r.longrepr[2]) for r in skipped if isinstance(r.longrepr, tuple)]
    if line := tools.skip_summary(reasons):
        reporter.write_line(line, yellow=True, bold=True)
