"""fp32 graph -> the target's precision, with ONNX Runtime's own tools: int8 (CPU), fp16 (CUDA).

- Transformer MatMuls: `quantize_dynamic` (QOperator, int8 weights per output channel,
  activations quantized on the fly; ORT fuses them into DynamicQuantizeMatMul): it prefills
  faster than MatMulNBits 8-bit and decodes about as fast (docs/export.md).
- lm_head: dynamic int8 as well (per output channel): at 32 decode rows ONNX Runtime runs
  it 2.5x faster than an 8-bit MatMulNBits (docs/export.md). The token embedding reads an
  8-bit table of its own (GatherBlockQuantized, export/tie.py): no fp32 table is stored.
No calibration data is needed; QDQ (static) quantization would need it and prefills slower.

fp16 is mixed precision as ORT's GPT-2 helper keeps it: weights, activations and the KV cache
in fp16 (the cache is the server's memory bill), `logits` returned as float32 so sampling sees
the same type on every target. Layer norms stay fp16 nodes: ORT's CUDA LayerNormalization and
SkipLayerNormalization kernels accumulate in fp32 already, and the quality gate measures the
result against PyTorch fp32 either way.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from artifact import LOGITS
from export import ExportFailed
from export.onnx_export import TWO_GB, save_onnx, weight_bytes
from export.recipes import HEAD_INT8
from export.tie import lm_head, untie_lm_head
from export.weight_only import quantize_tied_head, quiet_quantizer


def quantize_int8(src: Path, dst: Path) -> Path:
    """Write the int8 version of `src` to `dst`; `dst.parent` also holds a scratch file."""
    model = onnx.load(str(src))
    untie_lm_head(model)
    head_weight = _initializer(model, lm_head(model).input[1])  # [C, V] float
    model = quantize_tied_head(model, HEAD_INT8)
    _float_head(model, head_weight)
    tied = save_onnx(model, dst.with_name("tied_head.onnx"))
    _dynamic(tied, dst, external=weight_bytes(model) > TWO_GB)  # over-cautious, still valid
    return dst


def _initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    copy = onnx.TensorProto()
    copy.CopyFrom(next(init for init in model.graph.initializer if init.name == name))
    return copy


def _float_head(model: onnx.ModelProto, weight: onnx.TensorProto) -> None:
    """The lm_head back to a float MatMul (`quantize_dynamic` then makes it int8 per channel:
    at 32 decode rows ONNX Runtime's DynamicQuantizeMatMul runs it 2.5x faster than the 8-bit
    MatMulNBits); the embedding keeps reading the MatMulNBits table, now its own."""
    head = lm_head(model)
    weight.name = f"{weight.name}_dynamic"
    model.graph.initializer.append(weight)
    matmul = onnx.helper.make_node(
        "MatMul", [head.input[0], weight.name], list(head.output), name=head.name
    )
    nodes = model.graph.node
    index = list(nodes).index(head)
    nodes.remove(head)
    nodes.insert(index, matmul)


def _dynamic(src: Path, dst: Path, external: bool) -> None:
    with quiet_quantizer():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        try:
            quantize_dynamic(
                src,
                dst,
                weight_type=QuantType.QInt8,  # s8 weights x u8 activations: the VNNI kernel
                per_channel=True,
                use_external_data_format=external,
                op_types_to_quantize=["MatMul"],  # MatMulNBits (the head) is not a MatMul
                # shape inference cannot type com.microsoft ops' outputs (FastGelu, attention)
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        except Exception as e:  # onnxruntime raises assorted types; one line for the user
            raise ExportFailed(f"int8 quantization of {src} failed: {type(e).__name__}: {e}") from e


def convert_fp16(src: Path, dst: Path) -> Path:
    """Write the fp16 version of `src` to `dst`."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        model = convert_float_to_float16(
            onnx.load(str(src)), keep_io_types=[LOGITS], disable_shape_infer=True
        )
    except Exception as e:  # the converter raises assorted types; one line for the user
        raise ExportFailed(f"fp16 conversion failed: {type(e).__name__}: {e}") from e
    return save_onnx(model, dst)
