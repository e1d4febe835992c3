"""Serving and load testing stay slim: importing them never pulls torch & co."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "optimum", "accelerate", "datasets")


def test_server_and_loadtest_do_not_import_training_stack():
    code = (
        "import sys, importlib\n"
        "for m in ('server.cli', 'server.app', 'loadtest.cli'):\n"
        "    importlib.import_module(m)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_only_metrics_module_imports_prometheus_client():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "server"
    users = sorted(p.name for p in root.glob("*.py") if "prometheus_client" in p.read_text())
    assert users == ["metrics.py"]


def test_only_the_runners_import_onnxruntime():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "server"
    users = sorted(p.name for p in root.glob("*.py") if "import onnxruntime" in p.read_text())
    assert users == ["dense.py", "runner.py"]
