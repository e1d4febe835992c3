"""fp32 ONNX graph -> int8 weights with ONNX Runtime's dynamic quantization (CPU target).

Dynamic quantization stores MatMul/Gemm/Gather weights as int8 (per output channel) and
quantizes activations on the fly, so it needs no calibration data. It suits the CPU provider,
whose MatMulInteger kernels make it faster; the CUDA provider has no fast path for these ops.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from export.errors import ExportFailed
from export.onnx_export import model_files

LM_HEAD_WEIGHT = "lm_head.weight"


def quantize_int8(src: Path, dst: Path) -> Path:
    """Write the int8 version of `src` to `dst` (keeping external data if `src` used it)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    external = len(model_files(src)) > 1  # a > 2 GB model stays in external data
    untied = dst.with_name("untied.onnx")
    model = onnx.load(str(src))
    if untie_lm_head(model):
        onnx.save(
            model, str(untied), save_as_external_data=external, location=untied.name + ".data"
        )
        src = untied
    # quantize_dynamic logs a "consider pre-processing" hint on the root logger; that
    # pre-processing matters for static quantization, not for weight-only dynamic.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            src,
            dst,
            weight_type=QuantType.QInt8,
            per_channel=True,
            use_external_data_format=external,
        )
    except Exception as e:  # onnxruntime raises assorted types; one line for the user
        raise ExportFailed(f"int8 quantization of {src} failed: {type(e).__name__}: {e}") from e
    finally:
        root.setLevel(level)
    return dst


def untie_lm_head(model: onnx.ModelProto) -> bool:
    """Give lm_head its own weight instead of `Transpose(wte)`; True if the graph changed.

    optimum ties lm_head to the embedding through a Transpose node. quantize_dynamic turns
    that into a per-tensor DequantizeLinear of the whole vocab matrix on every run and an fp32
    MatMul: for GPT-2 small the int8 decode step was no faster than fp32. A constant weight
    becomes a per-channel MatMulInteger instead (2x faster decode, +vocab x hidden int8 bytes).
    """
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    head = producers.get("logits")
    transpose = producers.get(head.input[1]) if head is not None else None
    weights = {init.name: init for init in graph.initializer}
    if (
        head is None
        or head.op_type != "MatMul"
        or transpose is None
        or transpose.op_type != "Transpose"
        or transpose.input[0] not in weights
    ):
        return False
    wte = numpy_helper.to_array(weights[transpose.input[0]])  # [V, C]
    if wte.ndim != 2:
        return False
    graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(wte.T), LM_HEAD_WEIGHT))
    head.input[1] = LM_HEAD_WEIGHT  # [C, V]
    if not any(transpose.output[0] in node.input for node in graph.node):
        graph.node.remove(transpose)
    return True
