"""kvserve-export end to end on a tiny random GPT-2: artifact files, manifest, graph, gate.

The fused graph (`--attention fused`: one model.onnx, ONNX Runtime's attention) is tested
here; the CPU default, the graph cut at attention, in tests/test_export_cut.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer, models

from artifact import (
    CONFIDENCE_FILE,
    GRAPH_INTERFACE,
    Architecture,
    graph_inputs,
    graph_outputs,
    read_manifest,
)
from export import cli
from tests.support.export import GATE, LOOSE, TEMPLATE

ARTIFACT_FILES = {"model.onnx", "tokenizer.json", "manifest.json"}
FUSED = ("--attention", "fused")


def fake_checkpoint(directory: Path) -> Path:
    """Files that pass the up-front checks (enough to reach the out-dir and option checks)."""
    directory.mkdir()
    (directory / "config.json").write_text(
        '{"model_type": "gpt2", "eos_token_id": 0, "vocab_size": 9}'
    )
    (directory / "model.safetensors").write_text("{}")
    Tokenizer(models.BPE()).save(str(directory / "tokenizer.json"))
    TEMPLATE.save(directory)
    return directory


def export(checkpoint: Path, out: Path, *args: str) -> Path:
    assert cli.main([str(checkpoint), str(out), *GATE, *args]) == 0
    return out


@pytest.fixture(scope="module")
def fp32(random_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(random_checkpoint, tmp_path_factory.mktemp("fp32") / "artifact", *FUSED)


@pytest.fixture(scope="module")
def int8(random_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "artifact"
    return export(random_checkpoint, out, "--quantize", "int8", *LOOSE, *FUSED)


def ops(artifact: Path) -> list[str]:
    return [node.op_type for node in onnx.load(str(artifact / "model.onnx")).graph.node]


@pytest.mark.slow
def test_artifact_holds_only_its_files(fp32: Path, int8: Path) -> None:
    for artifact in (fp32, int8):
        assert {p.name for p in artifact.iterdir()} == ARTIFACT_FILES
        assert [p.name for p in artifact.parent.iterdir()] == [artifact.name]  # no temp dirs left


@pytest.mark.slow
def test_manifest_describes_the_checkpoint(fp32: Path, random_checkpoint: Path) -> None:
    manifest = read_manifest(fp32)  # verifies every file's sha256
    assert set(manifest.files) == ARTIFACT_FILES - {"manifest.json"}
    assert manifest.model_name == random_checkpoint.name
    assert manifest.architecture == Architecture(
        2, 2, 32, 64, manifest.architecture.vocab_size, 128
    )
    assert manifest.dtype == "float32" and manifest.quantization == "none"
    assert manifest.validated_providers == ["CPUExecutionProvider"]
    assert manifest.prompt_template == TEMPLATE
    assert manifest.eos_token_id == manifest.pad_token_id == 0
    assert manifest.source["checkpoint"] == str(random_checkpoint.resolve())
    assert {"torch", "transformers", "onnx"} <= set(manifest.source["tools"])
    assert manifest.interface == GRAPH_INTERFACE


@pytest.mark.slow
def test_graph_names_and_dtypes_match_the_manifest(fp32: Path) -> None:
    manifest = read_manifest(fp32)
    inputs, outputs = graph_inputs(2), graph_outputs(2)
    assert (manifest.inputs, manifest.outputs) == (inputs, outputs)
    session = ort.InferenceSession(str(fp32 / "model.onnx"), providers=["CPUExecutionProvider"])
    types = {t.name: t.type for t in session.get_inputs() + session.get_outputs()}
    assert [i.name for i in session.get_inputs()] == inputs
    assert [o.name for o in session.get_outputs()] == outputs
    assert {types[n] for n in ("input_ids", "position_ids", "last_index")} == {"tensor(int64)"}
    assert {types[n] for n in ("seqlens_k", "total_sequence_length")} == {"tensor(int32)"}
    assert {types[n] for n in inputs[5:] + outputs} == {"tensor(float)"}
    assert ops(fp32).count("GroupQueryAttention") == 2  # fused attention, one per layer


@pytest.mark.slow
def test_manifest_records_the_graph_facts(fp32: Path) -> None:
    graph = read_manifest(fp32).graph
    assert graph["logits"] == "last"  # lm_head at each row's last position only
    assert graph["fused_ops"] == {"FastGelu": 2, "GroupQueryAttention": 2}
    assert graph["tied_embedding"] is True and graph["kv_cache"] == "float32"
    assert graph["weight_bytes"] <= 1.05 * graph["unique_param_bytes"]  # nothing stored twice


@pytest.mark.slow
def test_fp32_gate_is_exact_and_recorded(fp32: Path) -> None:
    report = read_manifest(fp32).parity
    assert report["passed"] is True and report["reference"] == "PyTorch fp32"
    assert report["samples"] == 6 and report["split"] == "heldout"
    assert report["max_logit_diff"] <= 1e-3
    assert report["token_agreement"] == report["answer_match"] == 1.0
    assert abs(report["ppl_delta"]) <= 1e-3
    assert report["thresholds"]["max_ppl_delta"] == 0.001
    assert report["provider"] == "CPUExecutionProvider"


@pytest.mark.slow
def test_int8_is_quantized_with_an_int8_head_and_an_8_bit_token_table(
    fp32: Path, int8: Path
) -> None:
    manifest = read_manifest(int8)
    assert manifest.quantization == "int8-dynamic" and manifest.dtype == "float32"
    assert manifest.inputs == read_manifest(fp32).inputs
    assert manifest.parity["thresholds"]["min_answer_match"] == 0  # the override is recorded
    found = ops(int8)
    # the transformer MatMuls and the lm_head, dynamic int8 (the head's DynamicQuantizeMatMul
    # beats an 8-bit MatMulNBits 2.5x at 32 decode rows); the embedding reads its own table
    assert found.count("MatMulInteger") == 4 * 2 + 1
    assert found.count("MatMulNBits") == 0 and found.count("GatherBlockQuantized") == 1
    assert manifest.graph["tied_embedding"] is False
    assert manifest.graph["kv_cache"] == "float32"  # an int8 cache is opt-in (--kv-cache)
    names = {init.name for init in onnx.load(str(int8 / "model.onnx")).graph.initializer}
    assert "transformer.wte.weight" not in names  # no fp32 copy of the table left
    assert (int8 / "model.onnx").stat().st_size < 0.4 * (fp32 / "model.onnx").stat().st_size


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("missing checkpoint", "no such checkpoint directory"),
        ("not a checkpoint", "no config.json"),
        ("bad tokenizer", "not a tokenizers file"),
        ("existing out dir", "already exists"),
        ("bad env precision", "KVSERVE_PRECISION"),
        ("precision not for target", "built for --target cuda"),
        ("missing data", "no such data file"),
        ("no held-out rows", "no held-out rows"),
        ("bad env threshold", "--max-ppl-delta"),
        ("bad confidence.json", "confidence.json: threshold must be between 0 and 1, got 7.0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    case: str,
    says: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, out, extra = fake_checkpoint(tmp_path / "ckpt"), tmp_path / "out", []
    if case == "missing checkpoint":
        source = tmp_path / "nope"
    elif case == "not a checkpoint":
        (source / "config.json").unlink()
    elif case == "bad tokenizer":
        (source / "tokenizer.json").write_text("{}")
    elif case == "existing out dir":
        out.mkdir()
        (out / "model.onnx").write_text("old")
    elif case == "bad env precision":
        monkeypatch.setenv("KVSERVE_PRECISION", "fp8")
    elif case == "precision not for target":
        extra = ["--precision", "fp16"]
    elif case == "missing data":
        extra = ["--data", str(tmp_path / "nope.jsonl")]
    elif case == "bad confidence.json":
        (source / CONFIDENCE_FILE).write_text(json.dumps({**CONFIDENCE, "threshold": 7}))
    elif case == "no held-out rows":
        (tmp_path / "train.jsonl").write_text('{"question": "q", "answer": "a"}\n')
        extra = ["--data", str(tmp_path / "train.jsonl")]
    else:
        monkeypatch.setenv("KVSERVE_MAX_PPL_DELTA", "a lot")
    assert exit_code([str(source), str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kvserve-export: error: ") and err.count("\n") == 1
    assert says in err


CONFIDENCE = {  # a checkpoint's confidence.json (training/confidence.py writes it)
    "a": 51.8,
    "b": 1.47,
    "threshold": 0.718,
    "n": 94,
    "met_target": True,
    "kind": "logistic",
    "feature": "mean_logprob",
    "fitted_on": "validation",
}


@pytest.mark.slow
def test_the_checkpoints_calibration_is_copied_into_the_manifest(
    fp32: Path, random_checkpoint: Path, tmp_path: Path
) -> None:
    assert read_manifest(fp32).confidence is None  # a checkpoint without confidence.json
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(random_checkpoint, checkpoint)
    (checkpoint / CONFIDENCE_FILE).write_text(json.dumps(CONFIDENCE))
    out = export(checkpoint, tmp_path / "artifact", *FUSED)
    manifest = read_manifest(out)
    assert manifest.confidence is not None and manifest.confidence.to_dict() == CONFIDENCE
    assert {p.name for p in out.iterdir()} == ARTIFACT_FILES  # in the manifest, not a file


def exit_code(argv: list[str]) -> int:
    """cli.main's return value, or the code argparse exits with on a bad option."""
    try:
        return cli.main(argv)
    except SystemExit as e:
        return int(e.code or 0)


def test_env_vars_set_option_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVSERVE_PRECISION", "int8")
    monkeypatch.setenv("KVSERVE_FORCE", "1")
    monkeypatch.setenv("KVSERVE_GATE_SAMPLES", "7")
    monkeypatch.setenv("KVSERVE_MAX_PPL_DELTA", "0.05")
    args = cli.build_parser().parse_args(["ckpt", "out"])
    assert (args.precision, args.target, args.force) == ("int8", "cpu", True)
    options = cli.options_from(args)
    assert options.gate.samples == 7
    assert options.thresholds.max_ppl_delta == 0.05
    assert options.thresholds.min_answer_match == 0.90  # the int8 default, not overridden


def test_help_explains_precisions_targets_and_the_gate(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for word in ("fp32", "fp16", "int8", "int4", "[cpu, cuda]", "--max-ppl-delta", "bench"):
        assert word in out
    assert "KVSERVE_PRECISION" in out
