"""A damaged artifact or an impossible provider: exit code 2 and one line naming the file and
the problem, never a traceback. Every case runs `python -m server` as a user would (in
parallel, to keep it quick)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from artifact import MANIFEST_NAME, piece_file, sha256_file

pytestmark = pytest.mark.slow
GRAPH = piece_file(0)  # the CPU artifact's first graph file (dense pieces cut at attention)


def damage(artifact: Path, how: str) -> None:
    manifest_path = artifact / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    if how == "missing_tokenizer":
        (artifact / "tokenizer.json").unlink()
    elif how == "missing_manifest":
        manifest_path.unlink()
    elif how == "corrupt_onnx":  # garbage whose hash is right: ONNX Runtime must refuse it
        (artifact / GRAPH).write_bytes(b"\x08\x07garbage, not a protobuf graph")
        manifest["files"][GRAPH] = sha256_file(artifact / GRAPH)
        manifest_path.write_text(json.dumps(manifest))
    elif how == "truncated_onnx":
        data = (artifact / GRAPH).read_bytes()
        (artifact / GRAPH).write_bytes(data[: len(data) // 2])
        manifest["files"][GRAPH] = sha256_file(artifact / GRAPH)
        manifest_path.write_text(json.dumps(manifest))
    elif how == "hash_mismatch":
        with open(artifact / "tokenizer.json", "a") as f:
            f.write(" ")
    elif how == "unknown_version":
        manifest["format_version"] = "99"
        manifest_path.write_text(json.dumps(manifest))
    elif how == "manifest_not_json":
        manifest_path.write_text("{ not json")
    elif how != "intact":
        raise ValueError(how)


CASES = {  # case -> (extra flags, words the one line must hold)
    "missing_tokenizer": ([], ["tokenizer.json", "missing"]),
    "missing_manifest": ([], [MANIFEST_NAME, "missing"]),
    "corrupt_onnx": ([], [GRAPH, "ONNX Runtime cannot load it"]),
    "truncated_onnx": ([], [GRAPH, "ONNX Runtime cannot load it"]),
    "hash_mismatch": ([], ["tokenizer.json", "sha256 does not match"]),
    "unknown_version": ([], [MANIFEST_NAME, "unknown format_version '99'"]),
    "manifest_not_json": ([], [MANIFEST_NAME, "not valid JSON"]),
    # a CPU artifact: its attention is kvserve's CPU kernel, so no GPU would serve it either
    "cuda_for_a_cpu_artifact": (
        ["--provider", "cuda"],
        [GRAPH, "--provider cuda", "--target cuda"],
    ),
    "missing_dir": ([], ["nowhere", "not a directory"]),
    "missing_token_file": (
        ["--auth-token-file", "/nonexistent/tokens"],
        ["--auth-token-file", "/nonexistent/tokens", "cannot read"],
    ),
    "tls_cert_without_key": (["--tls-cert", "/etc/hostname"], ["--tls-cert and --tls-key"]),
}


def test_each_loading_error_is_exit_2_and_one_line(tiny_artifact, tmp_path):
    procs = {}
    for case, (flags, _) in CASES.items():
        artifact = tmp_path / case
        if case == "missing_dir":
            artifact = tmp_path / "nowhere"
        else:
            shutil.copytree(tiny_artifact, artifact)
            damage(artifact, case if case in DAMAGE else "intact")
        args = [
            sys.executable,
            "-m",
            "server",
            "--model",
            str(artifact),
            "--port",
            "0",
            "--metrics-port",
            "-1",
            *flags,
        ]
        procs[case] = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    for case, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        lines = err.strip().splitlines()
        assert proc.returncode == 2, (case, err[-2000:])
        assert len(lines) == 1 and "Traceback" not in err, (case, err[-2000:])
        for word in CASES[case][1]:
            assert word in lines[0], (case, lines[0])
        print(f"\n{case}: {lines[0]}")


DAMAGE = {
    "missing_tokenizer",
    "missing_manifest",
    "corrupt_onnx",
    "truncated_onnx",
    "hash_mismatch",
    "unknown_version",
    "manifest_not_json",
}
