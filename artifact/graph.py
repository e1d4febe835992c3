"""The serving graphs' calling conventions: what export builds, the server binds.

One place for the names and dtypes, so the graph builder (export/gqa_graph.py), the cut
(export/cut.py), the export's signature check and the server's runners cannot drift apart.

"gqa-slots-v1": one graph, attention fused in it (ONNX Runtime's GroupQueryAttention).

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


# "paged-v1": the dense math only, as num_layers + 1 pieces cut at each attention; kvserve's
# own kernel runs attention over its paged KV cache between them. T is the flattened token
# count of a whole step (many sequences, no batch axis, no padding); C the hidden size.
#   piece 0:            input_ids [T] int64, position_ids [T] int64
#                       -> hidden_out [T, C] (the residual stream after the embeddings),
#                          qkv [T, 3C] (layer 0's ln_1 + c_attn, packed q|k|v)
#   piece k, 0 < k < L: attn [T, C] (layer k-1's attention output, heads concatenated),
#                       hidden [T, C] -> hidden_out [T, C] (after layer k-1's c_proj,
#                          residual, MLP, residual), qkv [T, 3C] (layer k's)
#   piece L:            attn [T, C], hidden [T, C], logit_index [S] int64 (rows of T whose
#                       logits are wanted) -> logits [S, V] float32. Any rows: each sampling
#                       sequence's last token when generating, every position of a prompt
#                       being scored (prompt_logprobs, echo); the quality gate checks both
# The residual stream's input and output need two names (an ONNX graph cannot take and give
# one name): a piece's `hidden_out` is the next piece's `hidden`.
PAGED_INTERFACE = "paged-v1"
INPUT_IDS, POSITION_IDS, LOGIT_INDEX = "input_ids", "position_ids", "logit_index"
HIDDEN, HIDDEN_OUT, QKV, ATTN = "hidden", "hidden_out", "qkv", "attn"
TOKEN_INPUTS = {INPUT_IDS: "int64", POSITION_IDS: "int64", LOGIT_INDEX: "int64"}
# int8 KV cache scales, one file: float32 [num_layers, 2 (key, value), heads * head_dim];
# the cache holds round_half_even(x / scale) clipped to [-127, 127] and reads x = q * scale
KV_SCALES_FILE = "kv_scales.npy"
# weights two pieces read (the token table: piece 0's embedding, piece L's lm_head), stored
# once as ONNX external data both pieces point at; offsets aligned for mmap
SHARED_WEIGHTS_FILE = "dense_shared.data"


def piece_file(index: int) -> str:
    """dense_00.onnx, dense_01.onnx, ... (piece `index` of num_layers + 1)."""
    return f"dense_{index:02d}.onnx"


def piece_files(num_layers: int) -> list[str]:
    return [piece_file(k) for k in range(num_layers + 1)]


def piece_inputs(index: int, num_layers: int) -> list[str]:
    if index == 0:
        return [INPUT_IDS, POSITION_IDS]
    if index == num_layers:
        return [ATTN, HIDDEN, LOGIT_INDEX]
    return [ATTN, HIDDEN]


def piece_outputs(index: int, num_layers: int) -> list[str]:
    return [LOGITS] if index == num_layers else [HIDDEN_OUT, QKV]
