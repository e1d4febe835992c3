"""Precision/target selection, the CUDA graph paths (built and run on CPU), int4, and bench."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from artifact import read_manifest
from export import cli, pipeline
from export.checkpoint import load_checkpoint
from export.config import ExportOptions
from export.progress import Steps
from export.recipes import RECIPES, TARGETS, recipe_for
from export.tie import tie_block_size
from server.runner import OnnxRunner, RunnerConfig
from tests.support.export import GATE, LOOSE


@pytest.mark.parametrize(
    ("precision", "target", "quantization", "dtype", "bits"),
    [
        ("fp32", "cpu", "none", "float32", None),
        ("fp32", "cuda", "none", "float32", None),
        ("int8", "cpu", "int8-dynamic", "float32", None),
        ("int4", "cpu", "int4-weight-only", "float32", 4),
        ("fp16", "cuda", "none", "float16", None),
        ("int8", "cuda", "int8-weight-only", "float16", 8),
        ("int4", "cuda", "int4-weight-only", "float16", 4),
    ],
)
def test_each_pair_gets_its_recipe(precision, target, quantization, dtype, bits) -> None:
    recipe = recipe_for(precision, target)
    assert (recipe.quantization, recipe.dtype) == (quantization, dtype)
    assert (recipe.nbits.bits if recipe.nbits else None) == bits
    assert recipe.fp16 == (target == "cuda" and precision != "fp32")
    if target == "cuda" and bits:  # CUDA MatMulNBits computes in fp16, not int8
        assert recipe.nbits.accuracy_level == 0
    assert ExportOptions(Path("c"), Path("o"), precision, target).problem() is None


def test_fp16_is_not_offered_on_cpu() -> None:
    assert recipe_for("fp16", "cpu") is None
    problem = ExportOptions(Path("c"), Path("o"), "fp16", "cpu").problem()
    assert problem == "precision fp16 is built for --target cuda, not cpu"
    assert {target for _, target in RECIPES} == set(TARGETS)


def test_gate_runs_on_cuda_only_when_a_gpu_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    import server.runner

    cuda, cpu = recipe_for("fp16", "cuda"), recipe_for("int8", "cpu")
    monkeypatch.setattr(server.runner, "gpu_present", lambda: False)
    assert pipeline.gate_provider(cuda) == pipeline.gate_provider(cpu) == "cpu"
    monkeypatch.setattr(server.runner, "gpu_present", lambda: True)
    assert (pipeline.gate_provider(cuda), pipeline.gate_provider(cpu)) == ("cuda", "cpu")


def test_the_shared_table_needs_whole_blocks() -> None:
    assert tie_block_size(768, 128) == 128
    assert tie_block_size(64, 128) == 64
    assert tie_block_size(48, 32) == 16
    assert tie_block_size(100, 128) is None


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "int8", "int4"])
def test_cuda_graphs_are_fp16_with_fp32_logits_and_run(
    precision: str, random_checkpoint: Path, tmp_path: Path
) -> None:
    """The CUDA recipes' graphs, built and run here on the CPU provider."""
    recipe = recipe_for(precision, "cuda")
    ckpt = load_checkpoint(random_checkpoint)
    model = pipeline.build_graph(ckpt, recipe, tmp_path, Steps(total=4))
    proto = onnx.load(str(model))
    types = {
        v.name: v.type.tensor_type.elem_type for v in [*proto.graph.input, *proto.graph.output]
    }
    assert types["logits"] == onnx.TensorProto.FLOAT
    assert types["past_key_values.0.key"] == types["present.1.value"] == onnx.TensorProto.FLOAT16
    found = [n.op_type for n in proto.graph.node]
    assert found.count("MatMulNBits") == (0 if precision == "fp16" else 4 * 2 + 1)
    assert found.count("GatherBlockQuantized") == (0 if precision == "fp16" else 1)
    runner = OnnxRunner(
        model, ckpt.architecture, RunnerConfig("cpu", intra_op_threads=0, spin=False)
    )
    cache = runner.new_cache(max_rows=2)
    logits = runner.prefill(cache, [[5, 6, 7], [8]])
    logits = runner.decode_step(cache, logits.argmax(-1).astype(np.int64))
    assert logits.shape == (2, ckpt.architecture.vocab_size) and logits.dtype == np.float32
    assert np.isfinite(logits).all()


@pytest.mark.slow
def test_int4_cpu_export_is_small_and_tied(random_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "int4"
    assert cli.main([str(random_checkpoint), str(out), "--precision", "int4", *GATE, *LOOSE]) == 0
    manifest = read_manifest(out)
    assert manifest.quantization == "int4-weight-only" and manifest.dtype == "float32"
    assert manifest.graph["tied_embedding"] is True
    assert manifest.graph["fused_ops"]["MatMulNBits"] == 4 * 2 + 1
    assert manifest.graph["weight_bytes"] < 0.3 * manifest.graph["unique_param_bytes"]


@pytest.mark.slow
def test_bench_times_each_batch_and_stores_json(
    random_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli.main([str(random_checkpoint), str(a), *GATE]) == 0
    assert cli.main([str(random_checkpoint), str(b), "--precision", "int8", *GATE, *LOOSE]) == 0
    capsys.readouterr()
    argv = [
        "bench",
        str(a),
        str(b),
        "--batches",
        "1,3",
        "--prompt-tokens",
        "8",
        "--decode-steps",
        "2",
        "--repeats",
        "1",
        "--provider",
        "cpu",
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "decode ms/step" in out and "speed-up vs" in out
    stored = json.loads((b / "bench.json").read_text())
    assert [row["batch"] for row in stored["rows"]] == [1, 3]
    assert stored["quantization"] == "int8-dynamic" and stored["provider"] == "CPUExecutionProvider"
    assert all(row["prefill_ms"] > 0 and row["decode_tokens_per_s"] > 0 for row in stored["rows"])
    assert "load_before" in stored["machine"]
    read_manifest(b)  # bench.json beside the model does not break the artifact's hashes


def test_bench_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["bench", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kvserve-export bench: error: ") and err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", str(tmp_path), "--batches", "0"])
    assert exit_info.value.code == 2
