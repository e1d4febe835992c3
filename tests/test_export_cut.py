"""The graph cut at attention (paged-v1): `kvserve-export --attention kernel` writes the dense
pieces under the contract's names, the manifest lists and hashes them, and the pieces with a
numpy attention between them give the fused graph's logits, for every CPU recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from artifact import (
    FORMAT_VERSION,
    KV_SCALES_FILE,
    PAGED_INTERFACE,
    SHARED_WEIGHTS_FILE,
    Architecture,
    ManifestError,
    piece_files,
    piece_inputs,
    piece_outputs,
    read_manifest,
    write_manifest,
)
from export import cli, quality
from export.config import ExportOptions
from export.cut import cut_at_attention
from export.recipes import CPU_INT4, DEFAULT_ATTENTION
from server.dense import DenseModel
from server.runner import OnnxRunner, RunnerConfig
from tests.support.export import GATE, LOOSE
from tests.support.paged import NumpyKV, NumpyPagedRunner, attention

LAYERS, HEADS, HIDDEN, VOCAB = 2, 2, 64, 97
ARCH = Architecture(LAYERS, HEADS, HIDDEN // HEADS, HIDDEN, VOCAB, 128)
ONE_THREAD = RunnerConfig("cpu", 1, spin=False)
TOKEN_TYPES = {"input_ids", "position_ids", "logit_index"}


def numpy_paged_runner(model_dir, interface, architecture, config):
    """The gate's runner here: the pieces around the numpy reference attention (the export
    is under test, not the kernel)."""
    assert interface == PAGED_INTERFACE
    return NumpyPagedRunner(model_dir, architecture, config)


@pytest.fixture(scope="module")
def kernel_artifact(random_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kernel") / "artifact"
    args = ["--attention", "kernel", "--kv-cache", "int8", *GATE, *LOOSE]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(quality, "open_runner", numpy_paged_runner)
        assert cli.main([str(random_checkpoint), str(out), *args]) == 0
    return out


def test_kernel_export_writes_the_pieces_and_the_manifest_lists_and_hashes_them(
    kernel_artifact: Path,
) -> None:
    pieces = piece_files(LAYERS)
    names = {*pieces, SHARED_WEIGHTS_FILE, KV_SCALES_FILE, "tokenizer.json"}
    assert {p.name for p in kernel_artifact.iterdir()} == names | {"manifest.json"}
    manifest = read_manifest(kernel_artifact)  # checks every listed file's sha256
    assert set(manifest.files) == names
    assert (manifest.interface, manifest.format_version) == (PAGED_INTERFACE, FORMAT_VERSION)
    assert manifest.pieces == pieces and manifest.model_file == ""
    assert (manifest.kv_cache, manifest.kv_scales_file) == ("int8", KV_SCALES_FILE)
    (table,) = manifest.shared_weights  # the token table: embedding and lm_head
    assert (table.name, table.pieces, table.file) == (
        "transformer.wte.weight",
        (0, LAYERS),
        SHARED_WEIGHTS_FILE,
    )
    assert manifest.graph["bytes_saved_by_sharing"] == table.nbytes
    scales = np.load(kernel_artifact / KV_SCALES_FILE)
    assert scales.shape == (LAYERS, 2, HIDDEN) and scales.dtype == np.float32
    assert (scales > 0).all()
    dense = DenseModel.from_manifest(kernel_artifact, manifest, ONE_THREAD)
    sizes = (dense.num_layers, dense.hidden_size, dense.vocab_size)
    assert sizes == (LAYERS, HIDDEN, manifest.architecture.vocab_size)


def test_pieces_take_and_give_the_contract_names_and_types(kernel_artifact: Path) -> None:
    for k, name in enumerate(piece_files(LAYERS)):
        graph = onnx.load(str(kernel_artifact / name), load_external_data=False).graph
        assert [i.name for i in graph.input] == piece_inputs(k, LAYERS)
        assert [o.name for o in graph.output] == piece_outputs(k, LAYERS)
        for value in [*graph.input, *graph.output]:
            tensor = value.type.tensor_type
            want = onnx.TensorProto.INT64 if value.name in TOKEN_TYPES else onnx.TensorProto.FLOAT
            assert tensor.elem_type == want, value.name
            rank = 1 if value.name in TOKEN_TYPES else 2  # no batch axis
            assert len(tensor.shape.dim) == rank, value.name
        assert not any(n.op_type == "GroupQueryAttention" for n in graph.node)


# -------------------------------------------------------------------- logits, per recipe


def fused_graph(tmp: Path, recipe: str) -> Path:
    """The fused serving graph of a random tiny GPT-2 under one CPU recipe."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from export.gqa_graph import build_gpt2_graph
    from export.kv_scales import calibrate
    from export.onnx_export import save_onnx

    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=LAYERS, n_head=HEADS, n_embd=HIDDEN, n_positions=128, vocab_size=VOCAB
    )
    model = GPT2LMHeadModel(config).eval()
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    covering = [[(7 * i + j) % VOCAB for j in range(24)] for i in range(32)]
    scales = calibrate(model, covering) if recipe == "int8-kv" else None
    tmp.mkdir(parents=True, exist_ok=True)
    path = save_onnx(build_gpt2_graph(state, config, scales), tmp / "fp32.onnx")
    if recipe == "int8":
        from export.quantize import quantize_int8

        return quantize_int8(path, tmp / "model.onnx")
    if recipe == "int4":
        from export.weight_only import quantize_weight_only

        return quantize_weight_only(path, tmp / "model.onnx", CPU_INT4)
    return path


PROMPTS = {  # dynamic int8 scales activations per tensor: only equal rows pad to nothing
    "ragged": [[5, 6, 7, 8, 9], [10], [11, 12, 13]],
    "equal": [[5, 6, 7], [10, 11, 12], [20, 21, 22]],
}


def run_both(tmp_path: Path, recipe: str, prompts: str, int8_lows: tuple[int, ...]) -> dict:
    """Per int8 clip, [(fused, pieces) logits] of a prefill of three prompts and three
    decode steps."""
    model = fused_graph(tmp_path, recipe)
    cut = cut_at_attention(model, tmp_path / "pieces", LAYERS)
    assert cut.kv_cache == ("int8" if recipe == "int8-kv" else "float32")
    fused = OnnxRunner(model, ARCH, ONE_THREAD)
    fused_cache = fused.new_cache(max_rows=3)
    want = [fused.prefill(fused_cache, PROMPTS[prompts])]
    for step in range(3):
        want.append(fused.decode_step(fused_cache, np.array([30, 40, 50]) + step))
    pairs = {}
    for low in int8_lows:
        pieces = NumpyPagedRunner(tmp_path / "pieces", ARCH, ONE_THREAD)
        pieces.int8_low = low
        cache = pieces.new_cache(max_rows=3)
        got = [pieces.prefill(cache, PROMPTS[prompts])]
        for step in range(3):
            got.append(pieces.decode_step(cache, np.array([30, 40, 50]) + step))
        pairs[low] = list(zip(want, got, strict=True))
    return pairs


@pytest.mark.parametrize(
    ("recipe", "prompts"),
    [("fp32", "ragged"), ("int8-kv", "ragged"), ("int8", "equal"), ("int4", "equal")],
)
def test_pieces_with_numpy_attention_give_the_fused_graphs_logits(
    tmp_path: Path, recipe: str, prompts: str
) -> None:
    """int8 KV: the kernel clips the cache to [-127, 127], ONNX Runtime to [-128, 127]; one
    value past calibration's margin rounds to -128 there (one step: ~2e-4 in logits here).
    With ONNX Runtime's clip the pieces give its logits exactly."""
    runs = run_both(tmp_path, recipe, prompts, int8_lows=(-128, -127))
    for fused, pieces in runs[-128]:
        assert fused.shape == pieces.shape == (3, VOCAB)
        np.testing.assert_allclose(pieces, fused, rtol=0, atol=1e-4)
    for fused, pieces in runs[-127]:
        np.testing.assert_allclose(
            pieces, fused, rtol=0, atol=1e-3 if recipe == "int8-kv" else 1e-4
        )


def test_one_flattened_step_mixes_prefill_and_decode_rows(tmp_path: Path) -> None:
    """A decode row and a prefill chunk in one step give what they give apart (fp32)."""
    cut = cut_at_attention(fused_graph(tmp_path, "fp32"), tmp_path / "pieces", LAYERS)
    runner = NumpyPagedRunner(tmp_path / "pieces", ARCH, ONE_THREAD)
    apart, together = runner.new_cache(2), runner.new_cache(2)
    for cache in (apart, together):
        runner.prefill(cache, [[5, 6, 7]])
    decode = runner.step(apart, [(0, [8])])
    apart.add_row(HEADS, HIDDEN // HEADS)
    prefill = runner.step(apart, [(1, [9, 10, 11, 12])])
    together.add_row(HEADS, HIDDEN // HEADS)
    mixed = runner.step(together, [(0, [8]), (1, [9, 10, 11, 12])])
    np.testing.assert_allclose(mixed, np.concatenate([decode, prefill]), rtol=0, atol=1e-5)
    assert len(cut.pieces) == LAYERS + 1


def test_dense_model_buffers_are_reused_and_views_chain_without_copies(tmp_path: Path) -> None:
    cut = cut_at_attention(fused_graph(tmp_path, "fp32"), tmp_path / "pieces", LAYERS)
    dense = DenseModel(tmp_path / "pieces", cut.pieces, ONE_THREAD)
    hidden, qkv = dense.embed(np.arange(4), np.arange(4))
    assert hidden.shape == (4, HIDDEN) and qkv.shape == (4, 3 * HIDDEN)
    attn = dense.attn_buffer(4)
    attention(qkv, [(0, slice(0, 4))], _cache(), 0, HEADS, None, attn)
    again = dense.attn_buffer(4)
    assert again.ctypes.data == attn.ctypes.data  # the kernel writes where the next piece reads
    with pytest.raises(ValueError, match="layer pieces are 1..1"):
        dense.layer(LAYERS, attn, hidden)
    logits = dense.head(attn, hidden, np.array([3, 1]))
    assert logits.shape == (2, VOCAB) and np.isfinite(logits).all()


def _cache() -> NumpyKV:
    cache = NumpyKV(LAYERS)
    cache.add_row(HEADS, HIDDEN // HEADS)
    return cache


# -------------------------------------------------------------------- manifest versions


def _fused_artifact(directory: Path, version: str | None) -> Path:
    """A version-1-shaped (fused) artifact dir, written then given another version."""
    from artifact import Manifest, PromptTemplate

    (directory / "model.onnx").write_bytes(b"graph")
    (directory / "tokenizer.json").write_text("{}")
    manifest = Manifest(
        model_name="old",
        architecture=ARCH,
        inputs=["input_ids"],
        outputs=["logits"],
        dtype="float32",
        quantization="none",
        validated_providers=["CPUExecutionProvider"],
        prompt_template=PromptTemplate(),
        eos_token_id=0,
        pad_token_id=0,
        interface="gqa-slots-v1",
    )
    path = write_manifest(directory, manifest)
    data = json.loads(path.read_text())
    for added in ("pieces", "kv_cache", "kv_scales_file", "shared_weights"):
        del data[added]  # a format-1 manifest never had them
    data["format_version"] = version
    path.write_text(json.dumps(data))
    return directory


def test_a_version_1_manifest_is_read_as_the_fused_interface(tmp_path: Path) -> None:
    manifest = read_manifest(_fused_artifact(tmp_path, "1"))
    assert (manifest.format_version, manifest.interface) == ("1", "gqa-slots-v1")
    assert manifest.pieces == [] and manifest.required_files() == ["model.onnx", "tokenizer.json"]


@pytest.mark.parametrize(
    ("version", "fix"), [("0", "re-export"), ("x", "re-export"), ("4", "upgrade this server")]
)
def test_an_unknown_version_is_refused_in_one_line_saying_what_to_do(
    tmp_path: Path, version: str, fix: str
) -> None:
    _fused_artifact(tmp_path, version)
    with pytest.raises(ManifestError) as refused:
        read_manifest(tmp_path)
    message = str(refused.value)
    assert "\n" not in message
    assert f"unknown format_version '{version}'" in message and fix in message


def test_a_paged_artifact_is_refused_without_its_pieces_as_written(
    kernel_artifact: Path, tmp_path: Path
) -> None:
    import shutil

    first, last = piece_files(LAYERS)[1], piece_files(LAYERS)[-1]
    changed = Path(shutil.copytree(kernel_artifact, tmp_path / "changed"))
    (changed / first).write_bytes(b"changed")
    with pytest.raises(ManifestError, match=f"{first}: sha256 does not match"):
        read_manifest(changed)
    missing = Path(shutil.copytree(kernel_artifact, tmp_path / "missing"))
    (missing / last).unlink()
    with pytest.raises(ManifestError, match=f"{last}: missing"):
        read_manifest(missing)


# -------------------------------------------------------------------- the option


def test_attention_option_defaults_per_target_and_refuses_kernel_on_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def options(**kw) -> ExportOptions:
        return ExportOptions(Path("ckpt"), Path("out"), **kw)

    assert options().recipe.attention == DEFAULT_ATTENTION["cpu"]
    assert options(precision="fp16", target="cuda").recipe.attention == "fused"
    assert options(attention="kernel").recipe.attention == "kernel"
    refused = options(precision="fp16", target="cuda", attention="kernel").problem()
    assert refused is not None and "--attention kernel" in refused and "\n" not in refused
    assert "unknown attention" in options(attention="both").problem()
    monkeypatch.setenv("KVSERVE_ATTENTION", "kernel")
    args = cli.build_parser().parse_args(["ckpt", "out"])
    assert cli.options_from(args).recipe.attention == "kernel"
