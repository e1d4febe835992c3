"""The peers benchmark's own machinery (bench/peers/): the RSS poller, the worker protocol.

The engines themselves live in venvs under runs/ and are exercised by `bench/peers.py`;
these tests need only the standard library, so they run everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

PEERS = Path(__file__).resolve().parents[1] / "bench" / "peers"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, PEERS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


rss_tree = load("rss_tree")
worker_io = load("worker_io")


def test_parent_is_read_past_a_command_name_with_spaces_and_parentheses():
    stat = "4242 (my (odd) name) S 17 4242 4242 0 -1 4194560"
    assert rss_tree.parent_of(stat) == 17


def test_poller_counts_a_grandchild_and_reports_its_own_cpu(tmp_path):
    # parent -> child holding 64 MB; the poller must see the child's memory in the tree
    child = "x = bytearray(64 * 2**20); import time; time.sleep(3)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    tree = subprocess.Popen([sys.executable, "-c", parent])
    try:
        time.sleep(1.0)  # the child is up and has touched its memory
        poller = subprocess.Popen(
            [sys.executable, str(PEERS / "rss_tree.py"), str(tree.pid), "--interval", "0.05"],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)
        poller.send_signal(signal.SIGTERM)
        report = json.loads(poller.communicate(timeout=10)[0])
    finally:
        tree.kill()
        tree.wait()
    assert report["peak_rss_bytes"] > 64 * 2**20
    assert report["samples"] >= 2  # sampled again and again (20 due; a busy box starts late)
    assert 0 < report["cpu_s"] < 5


def test_poller_stops_by_itself_when_the_tree_is_gone():
    short = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    done = subprocess.run(
        [sys.executable, str(PEERS / "rss_tree.py"), str(short.pid), "--interval", "0.05"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    short.wait()
    assert json.loads(done.stdout)["peak_rss_bytes"] > 0


def test_workload_and_result_survive_the_json_round_trip(tmp_path):
    work = worker_io.Workload("m", 2, 4, [[1, 2, 3] * 10, [4]], [5, 6], {"dtype": "float32"})
    work.write(tmp_path / "w.json")
    assert worker_io.Workload.read(tmp_path / "w.json") == work
    warm = work.warmup()
    assert warm.prompts == [[1, 2, 3] * 5 + [1]] and warm.new_tokens == [8]
    result = worker_io.WorkerResult("e 1", 1.5, [worker_io.Stream(0.0, [(0.1, 1), (0.2, 2)])])
    result.write(tmp_path / "r.json")
    assert worker_io.WorkerResult.read(tmp_path / "r.json") == result


def test_worker_waits_for_the_go_and_keeps_engine_prints_off_the_handshake(tmp_path):
    """A fake engine that prints on stdout, as vLLM's logger does: READY must come alone."""
    script = tmp_path / "fake_worker.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(PEERS)!r})
            from worker_io import Arrivals, worker_main

            def load(work):
                print("engine log line on stdout")
                return "engine"

            def generate(engine, work):
                clock = Arrivals(len(work.prompts))
                clock.hand_over()
                for i, n in enumerate(work.new_tokens):
                    print("step log line on stdout")
                    clock.add(i, n)
                return clock.result("fake 0")

            raise SystemExit(worker_main(load, generate))
            """
        )
    )
    worker_io.Workload("m", 1, 2, [[1, 2], [3]], [3, 4]).write(tmp_path / "w.json")
    out = tmp_path / "r.json"
    process = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "w.json"), str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == worker_io.READY
    time.sleep(0.3)
    assert not out.exists()  # nothing measured before the go
    process.stdin.write("go\n")
    process.stdin.flush()
    rest, errors = process.communicate(timeout=20)
    assert process.returncode == 0, errors
    assert rest == ""  # the engine's prints went to stderr
    assert "step log line on stdout" in errors
    result = worker_io.WorkerResult.read(out)
    assert [sum(n for _, n in s.arrivals) for s in result.streams] == [3, 4]
    assert result.engine == "fake 0" and result.seconds >= 0
