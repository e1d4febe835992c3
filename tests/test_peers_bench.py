"""The peers benchmark's own machinery: the RSS poller and the worker protocol (bench/peers/),
and bench/peers.py's choices that need no engine (workloads, server flags, the export cache,
issue 20's ratios).

The engines themselves live in venvs under runs/ and are exercised by `bench/peers.py`;
these tests need only the project's venv, so they run everywhere.
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
_spec = importlib.util.spec_from_file_location("peers_bench", PEERS.parent / "peers.py")
peers = importlib.util.module_from_spec(_spec)
sys.modules["peers_bench"] = peers
_spec.loader.exec_module(peers)


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


def test_poller_measures_the_client_alone_apart_from_the_served_tree():
    # the server holds 64 MB; the client is small but starts a child holding 96 MB, which
    # must count neither for the client (alone) nor for the server's tree
    server = subprocess.Popen(
        [sys.executable, "-c", "x = bytearray(64 * 2**20); import time; time.sleep(4)"]
    )
    child = "x = bytearray(96 * 2**20); import time; time.sleep(4)"
    client = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])",
        ]
    )
    try:
        time.sleep(1.5)  # both have touched their memory
        poller = subprocess.Popen(
            [sys.executable, str(PEERS / "rss_tree.py"), str(server.pid), "--interval", "0.05"]
            + ["--alone", str(client.pid)],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)
        poller.send_signal(signal.SIGTERM)
        report = json.loads(poller.communicate(timeout=10)[0])
    finally:
        for process in (server, client):
            process.kill()
            process.wait()
    assert 64 * 2**20 < report["peak_rss_bytes"] < 150 * 2**20
    assert 0 < report["client_peak_rss_bytes"] < 64 * 2**20


def fake_run(tokens_per_s: float, ttft_p99: float, itl_p99: float, rss_mb: int, client_mb=None):
    ms = peers.Distribution
    result = peers.SystemResult(
        "x", int(tokens_per_s * 10), 10.0, ms(1.0, ttft_p99, 1.0, 1), ms(1.0, itl_p99, 1.0, 1)
    )
    client = client_mb * 2**20 if client_mb else None
    memory = peers.Memory(rss_mb * 2**20, 10, 0.1, client)
    return peers.Run(result, 100, "e", 1.0, memory)


def test_bars_pick_the_best_of_each_side_and_judge_memory_by_the_server_alone():
    medians = {
        "kvserve-fp32": fake_run(440, 500, 40, 900, client_mb=5000),
        "kvserve-fp32-fused": fake_run(300, 900, 50, 3000),
        "kvserve-int8kv": fake_run(800, 400, 30, 800, client_mb=5000),
        "vllm-fp32": fake_run(400, 600, 35, 7000),
        "ov-fp32": fake_run(380, 800, 45, 1000),
        "ov-int8": fake_run(640, 300, 20, 700),
    }
    found = {b.name: b for b in peers.bars(medians)}
    best = found["best kvserve (kvserve-int8kv) / best peer (ov-int8) tok/s"]
    assert best.value == 800 / 640 and "met" in best.verdict and "NOT" not in best.verdict
    ttft = found["best kvserve (kvserve-int8kv) / best peer (ov-int8) TTFT p99"]
    assert ttft.value == 400 / 300 and "NOT met" in ttft.verdict  # a ceiling, exceeded
    assert found["kvserve-fp32 / vllm-fp32 tok/s"].value == 1.1
    assert found["kvserve-fp32 / kvserve-fp32-fused tok/s"].verdict == ""  # no bar
    assert "kvserve-int8kv / kvserve-int8kv-fused tok/s" not in found  # fused int8 not run
    fp32_rss = found["kvserve-fp32 / ov-fp32 serving peak RSS"]
    assert fp32_rss.value == 0.9 and "NOT" not in fp32_rss.verdict  # the client left out
    assert "NOT met" in found["kvserve-int8kv / ov-int8 serving peak RSS"].verdict


def settings(step_tokens=None):
    return peers.Settings(2, 64, Path("w"), False, 0.2, 60.0, step_tokens)


def test_step_tokens_reach_only_the_kernel_systems_and_system_flags_come_last():
    kernel, fused = peers.SYSTEMS["kvserve-fp32"], peers.SYSTEMS["kvserve-fp32-fused"]
    assert "--max-step-tokens" not in peers.kvserve_flags(kernel, settings())
    assert peers.kvserve_flags(kernel, settings(256))[-2:] == ["--max-step-tokens", "256"]
    assert "--max-step-tokens" not in peers.kvserve_flags(fused, settings(256))
    own = peers.System("k", "kvserve", {"attention": "kernel"}, ("--prefix-caching", "false"))
    assert peers.kvserve_flags(own, settings(256))[-2:] == ["--prefix-caching", "false"]
    assert peers.kvserve_flags(kernel, settings())[:2] == ["--max-batch-size", "64"]


def test_an_artifact_of_the_other_attention_is_exported_again(tmp_path, monkeypatch):
    calls = []

    def fake_export(checkpoint, out, precision, *extra):
        calls.append((out, precision, extra))
        if not (out / "manifest.json").exists():  # engine_bench.export skips a manifest
            attention = extra[extra.index("--attention") + 1]
            interface = peers.ATTENTION_INTERFACES[attention]
            out.mkdir(exist_ok=True)
            (out / "manifest.json").write_text(json.dumps({"interface": interface}))
        return out

    monkeypatch.setattr(peers, "export", fake_export)
    out = tmp_path / "kvserve-int8kv"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"interface": "gqa-slots-v1"}))
    peers.prepare(peers.SYSTEMS["kvserve-int8kv"], tmp_path / "ckpt", tmp_path)
    assert calls == [(out, "int8", ("--attention", "kernel", "--kv-cache", "int8"))]
    assert peers.manifest_interface(out) == "paged-v1"
    peers.prepare(peers.SYSTEMS["kvserve-int8kv"], tmp_path / "ckpt", tmp_path)
    assert peers.manifest_interface(out) == "paged-v1"  # the right kind is kept
    fused = peers.SYSTEMS["kvserve-fp32-fused"]
    peers.prepare(fused, tmp_path / "ckpt", tmp_path)
    assert calls[-1][2] == ("--attention", "fused")
    assert peers.manifest_interface(tmp_path / fused.name) == "gqa-slots-v1"


def test_workload_defaults_and_report_paths(tmp_path, monkeypatch):
    vocab = tmp_path / "vocab"
    vocab.mkdir()
    (vocab / "vocab.json").write_text("{}")
    monkeypatch.setattr(peers, "VOCAB", vocab)
    kv = ["--systems", "kvserve-fp32", "--workdir", str(tmp_path)]
    results = peers.ROOT / "bench" / "results"
    mixed = peers.parse_args(kv)
    assert (mixed.requests, mixed.longest, mixed.concurrency) == (64, 256, 64)
    assert mixed.out == results / "peers.json"
    short = peers.parse_args([*kv, "--workload", "short"])
    assert (short.requests, short.concurrency, short.out) == (512, 64, results / "peers-short.json")
    smoke = peers.parse_args([*kv, "--workload", "short", "--requests", "16"])
    assert smoke.out == tmp_path / "peers-short-smoke.json"
    assert peers.parse_args([*kv, "--longest", "24"]).out == tmp_path / "peers-smoke.json"
    shape = peers.WORKLOADS["short"]
    assert (shape.prompt_tokens, shape.new_tokens) == ((16, 48), (8, 48))


def test_offline_systems_are_neither_side_of_the_bars_but_get_their_own_ratios():
    medians = {
        "kvserve-int8kv": fake_run(700, 400, 30, 800),
        "kvserve-int8kv-offline": fake_run(1400, 300, 20, 600),
        "ov-int8": fake_run(1000, 300, 20, 700),
    }
    found = {b.name: b for b in peers.bars(medians)}
    best = found["best kvserve (kvserve-int8kv) / best peer (ov-int8) tok/s"]
    assert best.value == 0.7 and "NOT met" in best.verdict  # gRPC against the peer
    door = found["kvserve-int8kv / kvserve-int8kv-offline tok/s"]
    assert door.value == 0.5 and door.verdict == ""
    assert found["kvserve-int8kv-offline / ov-int8 tok/s"].value == 1.4
    assert set(peers.ratios(medians)) == {
        "kvserve-int8kv/ov-int8",
        "kvserve-int8kv-offline/ov-int8",
    }


def test_an_offline_system_runs_its_twins_artifact(tmp_path, monkeypatch):
    calls = []

    def fake_export(checkpoint, out, precision, *extra):
        calls.append(out)
        out.mkdir(exist_ok=True)
        (out / "manifest.json").write_text(json.dumps({"interface": "paged-v1"}))
        return out

    monkeypatch.setattr(peers, "export", fake_export)
    system = peers.SYSTEMS["kvserve-int8kv-offline"]
    assert peers.prepare(system, tmp_path / "ckpt", tmp_path) == tmp_path / "kvserve-int8kv"
    assert calls == [tmp_path / "kvserve-int8kv"]


def test_the_offline_worker_runs_kvserves_engine_on_an_artifact(tiny_artifact, tmp_path):
    prompts, new_tokens = [[5, 6, 7], [8, 9], [10, 11, 12, 13]], [4, 1, 6]
    flags = "--threads 1 --max-batch-size 2 --max-queue 3"
    options = {"serve_flags": flags, "engine": "kvserve test offline engine"}
    work = worker_io.Workload(str(tiny_artifact), 1, 2, prompts, new_tokens, options)
    work.write(tmp_path / "w.json")
    out = tmp_path / "r.json"
    process = subprocess.Popen(
        [sys.executable, str(PEERS / "kvserve_offline_worker.py"), str(tmp_path / "w.json")]
        + [str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline().strip() == worker_io.READY
        process.stdin.write("go\n")
        process.stdin.flush()
        _, errors = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, errors
    result = worker_io.WorkerResult.read(out)
    assert [sum(n for _, n in s.arrivals) for s in result.streams] == new_tokens
    assert [len(s.arrivals) for s in result.streams] == new_tokens  # a token per step each
    assert result.engine == "kvserve test offline engine" and result.seconds > 0


def test_an_offline_system_gets_its_twins_server_flags():
    offline = peers.SYSTEMS["kvserve-int8kv-offline"]
    options = peers.offline_options(offline, settings(256))
    flags = options["serve_flags"].split()
    assert flags == peers.kvserve_flags(peers.SYSTEMS["kvserve-int8kv"], settings(256))
    assert flags[-2:] == ["--max-step-tokens", "256"]
    assert options["engine"].startswith("kvserve ") and options["engine"].endswith(
        " offline engine"
    )
    assert peers.offline_options(peers.SYSTEMS["ov-int8"], settings()) == {}
