"""GPT-2's lm_head is its token embedding: keep that table stored once through quantization.

The fp32 graph (export/gqa_graph.py) already shares `transformer.wte.weight` between the
embedding Gather and the lm_head Gemm (transB). ONNX Runtime's quantizers cannot quantize a
table with two consumers, so quantizing goes:
1. `untie_lm_head`: the Gemm becomes `MatMul(h, wte^T)`, a weight of its own that ORT's
   MatMulNBitsQuantizer turns into an int8/int4 MatMulNBits (fast, per 128-wide block).
2. `retie_embedding`: the embedding Gather becomes a com.microsoft GatherBlockQuantized that
   reads that very MatMulNBits weight: MatMulNBits stores B as `[N=vocab, K/block, block]`
   bytes, which is exactly a row-per-token table quantized along the hidden axis, so both
   ops share one initializer and the fp32 table is dropped. No ORT tool does this rewiring,
   hence this hand-written (small) graph edit.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from artifact import LOGITS

LM_HEAD_WEIGHT = "lm_head.weight"
TOKEN_TABLE = "transformer.wte.weight"


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every unnamed node a unique name (ORT's quantizers select nodes by name)."""
    for index, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{index}"


def lm_head(model: onnx.ModelProto) -> onnx.NodeProto:
    """The node computing the logits (looking through the Cast an fp16 graph ends with)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    node = producers[LOGITS]
    while node.op_type == "Cast" and node.input[0] in producers:
        node = producers[node.input[0]]
    return node


def tie_block_size(hidden: int, preferred: int) -> int | None:
    """The largest power-of-two block <= preferred that tiles `hidden` (None: no such block).

    A shared table needs whole blocks: MatMulNBits pads K to a block multiple, and the
    embedding rows GatherBlockQuantized reads back must be exactly `hidden` wide."""
    block = preferred
    while block >= 16 and hidden % block:
        block //= 2
    return block if block >= 16 else None


def untie_lm_head(model: onnx.ModelProto) -> bool:
    """`Gemm(h, wte, transB=1)` -> `MatMul(h, lm_head.weight)` with its own `[C, V]` copy.

    True if the graph changed. The copy is temporary: quantizing it and `retie_embedding`
    leave one quantized table in the end.
    """
    graph, head = model.graph, lm_head(model)
    weights = {init.name: init for init in graph.initializer}
    trans_b = any(a.name == "transB" and a.i == 1 for a in head.attribute)
    if head.op_type != "Gemm" or head.input[1] not in weights or not trans_b or len(head.input) > 2:
        return False
    wte = numpy_helper.to_array(weights[head.input[1]])  # [V, C]
    if wte.ndim != 2:
        return False
    graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(wte.T), LM_HEAD_WEIGHT))
    matmul = helper.make_node(
        "MatMul", [head.input[0], LM_HEAD_WEIGHT], list(head.output), name=head.name
    )
    index = list(graph.node).index(head)
    graph.node.remove(head)
    graph.node.insert(index, matmul)
    return True


def retie_embedding(model: onnx.ModelProto) -> bool:
    """Embedding `Gather(wte, ids)` -> GatherBlockQuantized over the lm_head's MatMulNBits B.

    Needs a symmetric MatMulNBits head (no zero points: both ops then default to 2^(bits-1)).
    True if the graph changed (and the fp32 table is gone).
    """
    graph, head = model.graph, lm_head(model)
    gather = next(
        (n for n in graph.node if n.op_type == "Gather" and n.input[0] == TOKEN_TABLE), None
    )
    if head.op_type != "MatMulNBits" or gather is None or len(head.input) > 3:
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in head.attribute}
    if attrs["K"] % attrs["block_size"]:
        return False  # padded blocks: rows would come back wider than the hidden size
    weights = {init.name: init for init in graph.initializer}
    vocab, blocks, _ = weights[head.input[1]].dims  # [V, K / block, block * bits / 8]
    scales = numpy_helper.to_array(weights[head.input[2]]).reshape(vocab, blocks, 1)
    scales_name = head.input[2] + "_per_row"  # GatherBlockQuantized wants data's rank
    graph.initializer.append(numpy_helper.from_array(scales, scales_name))
    shape_name = TOKEN_TABLE + "_row_shape"
    graph.initializer.append(numpy_helper.from_array(np.array([0, 0, attrs["K"]]), shape_name))
    blocks_out = gather.output[0] + "_blocks"  # [B, L, K / block, block]
    nodes = [
        helper.make_node(
            "GatherBlockQuantized",
            [head.input[1], gather.input[1], scales_name],
            [blocks_out],
            name=gather.name + "_q",
            domain="com.microsoft",
            bits=attrs["bits"],
            block_size=attrs["block_size"],
            gather_axis=0,
            quantize_axis=2,
        ),
        helper.make_node(
            "Reshape", [blocks_out, shape_name], [gather.output[0]], name=gather.name + "_rows"
        ),  # [B, L, C]
    ]
    index = list(graph.node).index(gather)
    graph.node.remove(gather)
    for node in reversed(nodes):
        graph.node.insert(index, node)
    graph.initializer.remove(weights[TOKEN_TABLE])
    return True
