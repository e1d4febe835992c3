"""GPT-2 as an ONNX graph built for serving: fused GroupQueryAttention over a shared KV buffer.

Hand-written because no exporter emits this shape, and it is what makes decoding fast here.
optimum's export concatenates past and new keys/values (and transposes keys) in every layer
at every step: with a few dozen sequences of a few hundred tokens that copying is most of a
decode step on CPU (docs/export.md). Here each layer is one com.microsoft
GroupQueryAttention node (kv heads = heads, so it is plain multi-head attention) whose past
and present are the same buffer `[B, H, capacity, D]`: the new token's key/value are written
in place at each row's own length (`seqlens_k`), nothing is copied. Rows need no common
length, so the server keeps one slot per sequence instead of a left-padded batch.

Also here: logits only at each row's last real position (`last_index`), not for the whole
prompt; the token embedding is stored once and reused by the lm_head (Gemm transB).
With `kv_scales` (export/kv_scales.py) the cache is int8: GroupQueryAttention quantizes
each new key/value per channel as it writes it, and past/present are int8 tensors.
The inputs, outputs and cache layout are the contract in artifact/graph.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from artifact.graph import CACHE_LAYOUT, CONTROL_INPUTS, CONTROL_SHAPES, LOGITS, layer_names
from export.kv_scales import KVScales, calibrate


def gqa_model(checkpoint: Path, kv_calibration: list[list[int]] | None = None) -> onnx.ModelProto:
    """The serving graph of a GPT-2 checkpoint dir.

    With `kv_calibration` (token id sequences) the KV cache is int8, scaled from them."""
    import torch
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(checkpoint, dtype=torch.float32).eval()
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    scales = calibrate(model, kv_calibration) if kv_calibration is not None else None
    return build_gpt2_graph(state, model.config, scales)


OPSET = 17
INT8_CACHE = {"k_quant_type": "PER_CHANNEL", "v_quant_type": "PER_CHANNEL", "kv_cache_bit_width": 8}


def build_gpt2_graph(
    state: dict[str, np.ndarray], config, kv_scales: KVScales | None = None
) -> onnx.ModelProto:
    """`state`: GPT2LMHeadModel's state dict as numpy fp32; `config`: its GPT2Config;
    `kv_scales`: int8 KV cache with these per-channel scales (None: fp32 cache)."""
    heads, hidden, layers = config.n_head, config.n_embd, config.n_layer
    head_dim = hidden // heads
    g = _Graph(state)
    tokens = g.node("Gather", [g.w("transformer.wte.weight"), "input_ids"])
    h = g.node("Add", [tokens, g.node("Gather", [g.w("transformer.wpe.weight"), "position_ids"])])
    for i in range(layers):
        p = f"transformer.h.{i}."
        x = g.layer_norm(h, p + "ln_1", config.layer_norm_epsilon)
        qkv = g.linear(x, p + "attn.c_attn")  # [B, L, 3C] packed q|k|v
        (past_key, present_key), (past_value, present_value) = _cache_names(i)
        attn_inputs = [qkv, "", "", past_key, past_value, "seqlens_k", "total_sequence_length"]
        quant = {}
        if kv_scales is not None:  # inputs 12-13: k_scale, v_scale (7-11 unused)
            key_scale = g.const(f"kv_scale.{i}.key", kv_scales.keys[i])
            value_scale = g.const(f"kv_scale.{i}.value", kv_scales.values[i])
            attn_inputs += ["", "", "", "", "", key_scale, value_scale]
            quant = INT8_CACHE
        attn_outputs = [f"attn_{i}", present_key, present_value]
        attention = {"num_heads": heads, "kv_num_heads": heads, **quant}
        attn = g.contrib("GroupQueryAttention", attn_inputs, attn_outputs, **attention)[0]
        h = g.node("Add", [h, g.linear(attn, p + "attn.c_proj")])
        x = g.layer_norm(h, p + "ln_2", config.layer_norm_epsilon)
        m = g.contrib("FastGelu", [g.matmul(x, p + "mlp.c_fc"), g.w(p + "mlp.c_fc.bias")])
        h = g.node("Add", [h, g.linear(m, p + "mlp.c_proj")])
    h = g.layer_norm(h, "transformer.ln_f", config.layer_norm_epsilon)
    last = g.last_positions(h, hidden)  # [B, C]
    g.node("Gemm", [last, g.w("transformer.wte.weight")], outputs=[LOGITS], transB=1)

    f32 = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), CONTROL_SHAPES[name]
        )
        for name, dtype in CONTROL_INPUTS.items()
    ]
    outputs = [helper.make_tensor_value_info(LOGITS, f32, ["batch", config.vocab_size])]
    cache = TensorProto.INT8 if kv_scales is not None else f32
    dims = {"heads": heads, "head_dim": head_dim}
    shape = [dims.get(axis, axis) for axis in CACHE_LAYOUT]  # [batch, H, capacity, D]
    for i in range(layers):
        for past, present in _cache_names(i):
            inputs.append(helper.make_tensor_value_info(past, cache, shape))
            outputs.append(helper.make_tensor_value_info(present, cache, shape))
    graph = helper.make_graph(g.nodes, "gpt2_gqa_slots", inputs, outputs, g.initializers)
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def _cache_names(layer: int) -> list[tuple[str, str]]:
    """[(past, present) of the key, (past, present) of the value] of one layer."""
    return [layer_names(layer, kind) for kind in ("key", "value")]


class _Graph:
    """Collects nodes and initializers; names every intermediate tensor uniquely."""

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        self.state = state
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._have: set[str] = set()
        self._count = 0

    def w(self, name: str) -> str:
        if name not in self._have:
            array = np.ascontiguousarray(self.state[name], dtype=np.float32)
            self.initializers.append(numpy_helper.from_array(array, name))
            self._have.add(name)
        return name

    def const(self, name: str, value) -> str:
        if name not in self._have:
            self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
            self._have.add(name)
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str] | None = None, **attrs):
        """Add an ONNX op; its output name (or names, when `outputs` lists several)."""
        return self._add(op, inputs, outputs, "", attrs)

    def contrib(self, op: str, inputs: list[str], outputs: list[str] | None = None, **attrs):
        """Add an ONNX Runtime com.microsoft op (fused attention, gelu)."""
        return self._add(op, inputs, outputs, "com.microsoft", attrs)

    def _add(self, op, inputs, outputs, domain, attrs) -> str | list[str]:
        if outputs is None:
            self._count += 1
            outputs = [f"{op.lower()}_{self._count}"]
        self.nodes.append(helper.make_node(op, inputs, outputs, domain=domain, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def layer_norm(self, x: str, prefix: str, eps: float) -> str:
        weight, bias = self.w(prefix + ".weight"), self.w(prefix + ".bias")
        return self.node("LayerNormalization", [x, weight, bias], axis=-1, epsilon=eps)

    def matmul(self, x: str, prefix: str) -> str:
        return self.node("MatMul", [x, self.w(prefix + ".weight")])  # GPT-2 Conv1D: [in, out]

    def linear(self, x: str, prefix: str) -> str:
        return self.node("Add", [self.matmul(x, prefix), self.w(prefix + ".bias")])

    def last_positions(self, h: str, hidden: int) -> str:
        """h[b, last_index[b], :] for every row.  # [B, L, C] -> [B, C]"""
        shape = self.node("Shape", ["input_ids"])
        batch = self.node("Gather", [shape, self.const("zero_i64", np.int64(0))])
        length = self.node("Gather", [shape, self.const("one_i64", np.int64(1))])
        zero, one = self.const("zero_i64", np.int64(0)), self.const("one_i64", np.int64(1))
        rows = self.node("Range", [zero, batch, one])
        flat = self.node("Add", [self.node("Mul", [rows, length]), "last_index"])
        flat_h = self.node("Reshape", [h, self.const("rows_by_hidden", np.array([-1, hidden]))])
        return self.node("Gather", [flat_h, flat], axis=0)
