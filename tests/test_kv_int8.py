"""int8 KV cache: calibration, the graph that quantizes its own cache, the runner over it;
and the runner over cache buffers that ONNX Runtime allocated (the CUDA path's memory code)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from artifact import Architecture
from export.config import ExportOptions
from export.heldout import load_calibration
from export.kv_scales import INT8_MAX, MARGIN, calibrate
from server.memory import CudaMemory
from server.runner import OnnxRunner, RunnerConfig
from tests.support.cudart import ALLOCATE, FakeCudart

SEQS = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]
ARCH = Architecture(
    num_layers=2, num_heads=2, head_dim=32, hidden_size=64, vocab_size=97, max_positions=128
)


@pytest.fixture(scope="module")
def model():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=128, vocab_size=97)
    return GPT2LMHeadModel(config).eval()


def test_scales_are_the_per_channel_absmax_of_real_positions_only(model) -> None:
    import torch

    scales = calibrate(model, SEQS, batch=2)  # batches padded to their longest row
    with torch.no_grad():
        alone = [model(input_ids=torch.tensor([s]), use_cache=True).past_key_values for s in SEQS]
    for layer in range(ARCH.num_layers):
        for got, kind in ((scales.keys[layer], "keys"), (scales.values[layer], "values")):
            seen = [
                getattr(p.layers[layer], kind).abs().amax(dim=(0, 2), keepdim=True) for p in alone
            ]
            expected = torch.stack(seen).amax(dim=0).numpy() * MARGIN / INT8_MAX
            assert got.shape == (1, ARCH.num_heads, 1, ARCH.head_dim) and got.dtype == np.float32
            np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_calibration_needs_sequences(model) -> None:
    with pytest.raises(ValueError, match="at least one"):
        calibrate(model, [])


def run_steps(path: Path, memory=None) -> tuple[np.dtype, list[np.ndarray]]:
    """Prefill three prompts, decode three steps, drop row 1, decode again."""
    runner = OnnxRunner(path, ARCH, RunnerConfig("cpu", 1, spin=False))
    runner.memory = memory or runner.memory
    cache = runner.new_cache(max_rows=4)
    logits = [runner.prefill(cache, [[5, 6, 7, 8], [9], [10, 11]])]
    for step in range(3):
        logits.append(runner.decode_step(cache, np.array([20, 30, 40]) + step))
    assert cache.keep([0, 2]) == [0, 2]
    logits.append(runner.decode_step(cache, np.array([50, 60])))
    return cache.layers[0][0].dtype, logits


@pytest.fixture(scope="module")
def graphs(model, tmp_path_factory) -> dict[str, Path]:
    from export.gqa_graph import build_gpt2_graph

    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    # calibration text covers the vocabulary, as real training rows do
    covering = [[(7 * i + j) % ARCH.vocab_size for j in range(24)] for i in range(32)]
    paths = {}
    for name, scales in (("fp32", None), ("int8", calibrate(model, covering))):
        paths[name] = tmp_path_factory.mktemp("graphs") / f"{name}.onnx"
        onnx.save(build_gpt2_graph(state, model.config, scales), str(paths[name]))
    return paths


def test_int8_cache_graph_tracks_the_fp32_graph(graphs: dict[str, Path]) -> None:
    dtype32, ref = run_steps(graphs["fp32"])
    dtype8, got = run_steps(graphs["int8"])
    assert (dtype32, dtype8) == (np.float32, np.int8)  # the runner takes the graph's cache type
    for a, b in zip(ref, got, strict=True):
        assert a.shape == b.shape
        spread = float(a.max() - a.min())
        assert np.abs(a - b).max() <= 0.02 * spread  # quantization noise, not a different model
        assert (a.argmax(-1) == b.argmax(-1)).mean() >= 0.5


@pytest.mark.parametrize("graph", ["fp32", "int8"])
def test_buffers_onnx_runtime_allocated_give_the_same_logits(graphs, graph: str) -> None:
    """CudaMemory's code (OrtValue buffers, strided copies by address) with host allocations
    and a libcudart stand-in: bit-identical to numpy buffers, row moves included."""
    fake = FakeCudart()
    _, host = run_steps(graphs[graph])
    _, device = run_steps(graphs[graph], CudaMemory(ALLOCATE, cudart=fake, device="cpu"))
    for a, b in zip(host, device, strict=True):
        np.testing.assert_array_equal(a, b)
    assert fake.copies > 0  # the cache grew or moved a row through cudaMemcpy2D


def test_calibration_rows_are_training_rows(tmp_path: Path) -> None:
    rows = [{"question": f"q{i}", "answer": f"a{i}", "split": "train"} for i in range(5)]
    rows += [{"question": "held", "answer": "out", "split": "heldout"}]
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    assert [s.question for s in load_calibration(data)] == [f"q{i}" for i in range(5)]
    assert [s.question for s in load_calibration(data, limit=2)] == ["q0", "q2"]
    data.write_text(json.dumps(rows[-1]))  # only held-out rows: calibrate on those
    assert [s.question for s in load_calibration(data)] == ["held"]


def test_kv_cache_option_picks_the_cache_and_refuses_cuda() -> None:
    def options(**kw) -> ExportOptions:
        return ExportOptions(Path("ckpt"), Path("out"), **kw)

    assert options(precision="int8").recipe.kv_cache == "float"  # opt-in, as in vLLM
    assert options(precision="int8", kv_cache="int8").recipe.kv_cache == "int8"
    assert options(kv_cache="int8").recipe.kv_cache == "int8"  # fp32 weights, int8 cache
    assert options(kv_cache="int8").thresholds == options(precision="int8").thresholds
    assert options().thresholds.max_logit_diff == 1e-3  # fp32 with a float cache: exact
    assert options(precision="fp16", target="cuda").recipe.kv_cache == "float"
    assert "--target cpu" in options(precision="fp16", target="cuda", kv_cache="int8").problem()
    assert "unknown KV cache" in options(kv_cache="int4").problem()
