"""Facts about the exported graph that the manifest records: what is fused, what is stored.

- `logits`: "last" when the graph computes the lm_head only at each row's last position
  (`[B, V]`), "all" for every position (`[B, T, V]`).
- `fused_ops`: com.microsoft contrib ops stored in the graph (attention, gelu, quantized
  matmuls); ORT adds its own runtime fusions (SkipLayerNormalization, ...) at session start.
- `kv_cache`: the cache's element type (float32, float16, or int8: quantized by the graph).
- `tied_embedding`: the token table is stored once and read by both the embedding and the
  lm_head; `weight_bytes` vs `unique_param_bytes` (fp32 bytes of the checkpoint's unique
  parameters) shows nothing is stored twice.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx

from artifact import Architecture
from export.onnx_export import model_files

CONTRIB = "com.microsoft"


def describe_graph(model: Path, arch: Architecture) -> dict:
    proto = onnx.load(str(model), load_external_data=False)
    logits = next(o for o in proto.graph.output if o.name == "logits")
    rank = len(logits.type.tensor_type.shape.dim)
    weight_bytes = sum(p.stat().st_size for p in model_files(model))
    return {
        "logits": "last" if rank == 2 else "all",
        "fused_ops": dict(
            sorted(Counter(n.op_type for n in proto.graph.node if n.domain == CONTRIB).items())
        ),
        "tied_embedding": _tied(proto.graph),
        "kv_cache": _cache_dtype(proto.graph),
        "weight_bytes": weight_bytes,
        "unique_param_bytes": 4 * unique_params(arch),
    }


def unique_params(arch: Architecture) -> int:
    """GPT-2's parameter count, lm_head tied: embeddings + layers + the final layer norm."""
    c = arch.hidden_size
    per_layer = 12 * c * c + 13 * c  # qkv 3c^2+3c, proj c^2+c, fc 4c^2+4c, fc_proj 4c^2+c, 2 LN
    return (arch.vocab_size + arch.max_positions) * c + arch.num_layers * per_layer + 2 * c


def _cache_dtype(graph: onnx.GraphProto) -> str:
    past = next(v for v in graph.input if v.name.startswith("past_key_values."))
    return onnx.helper.tensor_dtype_to_np_dtype(past.type.tensor_type.elem_type).name


def _tied(graph: onnx.GraphProto) -> bool:
    """Does one initializer feed both an embedding lookup and the logits' matmul?"""
    gathers = {n.input[0] for n in graph.node if n.op_type in ("Gather", "GatherBlockQuantized")}
    producers = {out: n for n in graph.node for out in n.output}
    head = producers["logits"]
    while head.op_type == "Cast" and head.input[0] in producers:
        head = producers[head.input[0]]
    return len(head.input) > 1 and head.input[1] in gathers
