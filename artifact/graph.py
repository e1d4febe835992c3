"""The serving graph's calling convention ("gqa-slots-v1"): what export builds, the server binds.

One place for the names and dtypes, so the graph builder (export/gqa_graph.py), the export's
signature check and the server's runner cannot drift apart.

Inputs:  input_ids [B, L] int64, position_ids [B, L] int64, last_index [B] int64 (each row's
         last real position), seqlens_k [B] int32 (row length after this call - 1),
         total_sequence_length [] int32, past_key_values.N.key / .value (the KV cache)
Outputs: logits [B, V] float32 at each row's last position, present.N.key / .value
Cache:   per layer and kind, one buffer [rows, heads, capacity, head_dim]; past and present
         are bound to the same memory and the graph writes each new key/value in place at the
         row's own length, so rows need no common length.
"""

from __future__ import annotations

GRAPH_INTERFACE = "gqa-slots-v1"
LOGITS = "logits"
# name -> numpy dtype name, in the order the graph declares them
CONTROL_INPUTS = {
    "input_ids": "int64",
    "position_ids": "int64",
    "last_index": "int64",
    "seqlens_k": "int32",
    "total_sequence_length": "int32",
}
CONTROL_SHAPES = {
    "input_ids": ("batch", "length"),
    "position_ids": ("batch", "length"),
    "last_index": ("batch",),
    "seqlens_k": ("batch",),
    "total_sequence_length": (),
}
CACHE_LAYOUT = ("batch", "heads", "capacity", "head_dim")
KINDS = ("key", "value")
# ONNX Runtime's type string of a cache input -> numpy dtype name (int8: the graph quantizes)
CACHE_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8"}


def layer_names(layer: int, kind: str) -> tuple[str, str]:
    """(past input, present output) of one layer's key or value cache."""
    return f"past_key_values.{layer}.{kind}", f"present.{layer}.{kind}"


def graph_inputs(num_layers: int) -> list[str]:
    past = [layer_names(i, kind)[0] for i in range(num_layers) for kind in KINDS]
    return [*CONTROL_INPUTS, *past]


def graph_outputs(num_layers: int) -> list[str]:
    present = [layer_names(i, kind)[1] for i in range(num_layers) for kind in KINDS]
    return [LOGITS, *present]
