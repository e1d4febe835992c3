"""Weight-only int8/int4 (com.microsoft MatMulNBits) with ONNX Runtime's MatMulNBitsQuantizer.

MatMulNBits keeps activations in float and stores weights as 8- or 4-bit blocks (128 or 32
values share a scale). It is the int path the CUDA provider runs fast (fp16 activations),
and on CPU (`accuracy_level=4`: activations go to int8 for VNNI) int4 halves the int8 size.
The lm_head is quantized symmetrically and shared with the embedding (export/tie.py), so the
token table is stored once, quantized.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from export import ExportFailed
from export.onnx_export import save_onnx
from export.progress import quiet_loggers
from export.recipes import NBits
from export.tie import lm_head, name_nodes, retie_embedding, tie_block_size, untie_lm_head


def quantize_weight_only(src: Path, dst: Path, spec: NBits) -> Path:
    """Every MatMul of `src` -> MatMulNBits (`spec`), lm_head tied to the embedding."""
    model = quantize_tied_head(onnx.load(str(src)), spec)
    model = nbits(model, spec, exclude={lm_head(model).name})
    return save_onnx(model, dst)


def quantize_tied_head(model: onnx.ModelProto, spec: NBits) -> onnx.ModelProto:
    """lm_head -> symmetric MatMulNBits whose table the embedding Gather reads too.

    When no block tiles the hidden size the head is still quantized, the embedding stays."""
    untie_lm_head(model)
    name_nodes(model)
    head = lm_head(model)
    weights = {init.name: init for init in model.graph.initializer}
    hidden = weights[head.input[1]].dims[0] if head.input[1] in weights else 0  # [C, V]
    block = tie_block_size(hidden, spec.block_size)
    head_spec = NBits(spec.bits, block or spec.block_size, spec.accuracy_level, symmetric=True)
    model = nbits(model, head_spec, only={head.name})
    if block is not None:
        retie_embedding(model)
    return model


def nbits(
    model: onnx.ModelProto,
    spec: NBits,
    only: set[str] | None = None,
    exclude: set[str] = frozenset(),
) -> onnx.ModelProto:
    """MatMuls (all, or just the nodes named in `only`, minus `exclude`) -> MatMulNBits."""
    matmuls = {n.name for n in model.graph.node if n.op_type == "MatMul"}
    skip = (matmuls - only if only is not None else set()) | set(exclude)
    with quiet_quantizer():  # importing the quantizer sets up root logging at INFO
        from onnxruntime.quantization import QuantFormat

        try:
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
        except ImportError as e:  # it needs onnx-ir, a [train] extra of kvserve
            raise ExportFailed(
                f"MatMulNBits quantization needs {e.name}: pip install onnx-ir"
            ) from e

        quantizer = MatMulNBitsQuantizer(
            model,
            bits=spec.bits,
            block_size=spec.block_size,
            is_symmetric=spec.symmetric,
            accuracy_level=spec.accuracy_level or None,
            nodes_to_exclude=sorted(skip),
            quant_format=QuantFormat.QOperator,
            op_types_to_quantize=("MatMul",),
        )
        try:
            quantizer.process()
        except Exception as e:  # onnxruntime raises assorted types; one line for the user
            raise ExportFailed(f"{spec.bits}-bit weight quantization failed: {e}") from e
    return quantizer.model.model


def quiet_quantizer():
    """ORT's quantizers log every node at INFO and a pre-processing hint on the root logger."""
    return quiet_loggers("", "onnxruntime.quantization")
